"""Whether a Redis takes writes, and what a Redis error means for a client.

A PING answers while Redis refuses every write (out of memory under `maxmemory` with
`noeviction`, or a read-only replica), so the probe writes: a SET of keys.HEALTH_PROBE with
a short TTL. Errors are told apart by redis-py's classes: OutOfMemoryError ("full"),
ReadOnlyError ("read-only"), a connection or timeout error ("unreachable"); any other reply
error is "failing".
"""

from __future__ import annotations

from typing import Literal

import redis

from notifier.store import keys

__all__ = ["PROBE_SECONDS", "Condition", "condition_of", "describe", "probe"]

Condition = Literal["ok", "full", "read-only", "unreachable", "failing"]
#: The probe key expires by itself: a health check leaves nothing behind.
PROBE_SECONDS = 10

_WHAT: dict[str, str] = {
    "full": "is full (out of memory) and refuses writes",
    "read-only": "is read-only (a replica) and refuses writes",
    "unreachable": "cannot be reached",
    "failing": "answers with errors",
}


def condition_of(exc: BaseException) -> Condition:
    """The condition a Redis error (or an OSError from its socket) tells of."""
    if isinstance(exc, redis.exceptions.OutOfMemoryError):
        return "full"
    if isinstance(exc, redis.exceptions.ReadOnlyError):
        return "read-only"
    if isinstance(exc, redis.ConnectionError | redis.TimeoutError | OSError):
        return "unreachable"
    return "failing"


def describe(condition: Condition, what: str = "The store (Redis)") -> str:
    """A sentence for a client: "The store (Redis) is full (out of memory) and ..."."""
    return f"{what} {_WHAT.get(condition, 'is fine')}"


def probe(client: redis.Redis) -> Condition:
    """Write the probe key (with a TTL): "ok" when Redis took it, else why not."""
    try:
        client.set(keys.HEALTH_PROBE, "1", ex=PROBE_SECONDS)
    except (redis.RedisError, OSError) as exc:
        return condition_of(exc)
    return "ok"
