"""Which Redis errors are a refusal that ends by itself, not a verdict on the command."""

from __future__ import annotations

import redis

#: Refusals that end by themselves on the same connection: memory is freed, the disk (MISCONF)
#: takes snapshots again. ExecAbortError is how redis-py may report a MULTI refused for these.
REFUSED = (redis.exceptions.OutOfMemoryError, redis.exceptions.ExecAbortError)
#: Refused by a demoted primary: only a new connection can reach the new one.
READ_ONLY = redis.exceptions.ReadOnlyError
#: The connection was lost or timed out: Redis restarts, or the network is down.
LOST = (redis.ConnectionError, redis.TimeoutError)


def refused(exc: BaseException) -> bool:
    """True for an error Redis answers while it takes no writes for now (full, read-only,
    cannot persist): the same write may succeed later."""
    if not isinstance(exc, redis.ResponseError):
        return False
    return isinstance(exc, (*REFUSED, READ_ONLY)) or "MISCONF" in str(exc)[:200]
