"""The latest events of each conference, for the organisers' console: what arrived, when,
and what became of it (applied, duplicate, dead letter). Capped, so it never grows with the
conference; an entry holds ids, types and times, never a name or an address."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass

import redis

from notifier.store import keys

#: Entries kept per conference.
KEEP = 200


@dataclass(frozen=True, slots=True)
class RecentEvent:
    event_id: str
    type: str
    outcome: str  # applied | duplicate | dead_letter
    registration: str  # "" for events about the whole conference
    at: float  # epoch seconds, when the worker handled it


def push(pipe: redis.client.Pipeline, conference: str, entry: RecentEvent) -> None:
    """Add `entry` in the caller's pipeline (beside the event counter: one round trip)."""
    key = keys.recent_events(conference)
    pipe.lpush(key, json.dumps(asdict(entry)))
    pipe.ltrim(key, 0, KEEP - 1)


def recent(client: redis.Redis, conference: str, limit: int = 50) -> list[RecentEvent]:
    """Newest first."""
    raw = client.lrange(keys.recent_events(conference), 0, limit - 1)
    return [RecentEvent(**json.loads(item)) for item in raw]
