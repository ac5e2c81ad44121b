"""Counters that only the metrics read: events by type and outcome, SMTP outcomes by class.

They live in Redis (keys.EVENT_STATS, keys.SMTP_STATS), not in a process, so that every
worker adds to the same figures and a restart loses none; /metrics reads them at scrape time
(notifier.metrics). They are statistics, not records: a count is added after the step it
counts, so a worker that dies between the two, or an event retried after a store error,
can make a figure one off. Labels never carry names or addresses: an event's type is one
of the known types or "invalid", and a reply only its class.
"""

from __future__ import annotations

import redis
import redis.asyncio

from notifier.domain.events import EVENT_TYPES
from notifier.store import eventlog, keys
from notifier.store.eventlog import RecentEvent

EVENT_OUTCOMES = ("applied", "duplicate", "dead_letter")
#: What the HTTP API answered for events it did not queue: refused (422), or a duplicate id.
API_OUTCOMES = ("refused", "duplicate")
REPLY_CLASSES = ("2xx", "4xx", "5xx", "unknown")
# The type label of an event whose type is missing or not one of ours: a sender's free text
# would be an unbounded label value (and could hold anything, an address too).
INVALID_TYPE = "invalid"


def event_type(value: object) -> str:
    """`value` as a type label: one of EVENT_TYPES, or INVALID_TYPE."""
    return value if isinstance(value, str) and value in EVENT_TYPES else INVALID_TYPE


def count_event(
    client: redis.Redis,
    event_type_label: str,
    outcome: str,
    recent: tuple[str, RecentEvent] | None = None,
) -> None:
    """Count one ingested event (`event_type_label` from event_type()); with `recent`
    (conference, entry), also add it to that conference's latest events, in the same round
    trip."""
    if outcome not in EVENT_OUTCOMES:
        raise ValueError(f"not an event outcome: {outcome}")
    with client.pipeline(transaction=False) as pipe:
        pipe.hincrby(keys.EVENT_STATS, f"{event_type_label}:{outcome}", 1)
        if recent is not None:
            eventlog.push(pipe, *recent)
        pipe.execute()


def reply_class(code: int | None) -> str:
    """The class of an SMTP reply code; "unknown" when there was none (no connection, or no
    reply to the final dot)."""
    if code is not None and 200 <= code < 600 and code // 100 in (2, 4, 5):
        return f"{code // 100}xx"
    return "unknown"


async def count_api_events(client: redis.asyncio.Redis, outcome: str, n: int = 1) -> None:
    """Count `n` events the HTTP API refused (422) or answered as duplicates. A statistic:
    when Redis refuses the write (full, read-only, gone) the count is lost, not the answer."""
    if outcome not in API_OUTCOMES:
        raise ValueError(f"not an API event outcome: {outcome}")
    if n <= 0:
        return
    try:
        await client.hincrby(keys.API_EVENT_STATS, outcome, n)
    except (redis.RedisError, OSError):
        return
