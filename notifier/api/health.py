"""GET /v1/health (no token): whether Redis and the broker take writes, for load balancers
and supervisors. 200 when both do, 503 otherwise; the body says which is not and why.

A PING is not enough: Redis answers it while it refuses every write (full under maxmemory,
or a read-only replica), and then no event can be accepted. So each is probed with a real
write (notifier.store.health.probe: a SET with a short TTL).
"""

from __future__ import annotations

import redis
from fastapi import APIRouter, Response
from pydantic import BaseModel

from notifier.api.auth import Context
from notifier.api.problems import RETRY_AFTER, SafeRoute
from notifier.store.health import Condition, describe, probe

router = APIRouter(prefix="/v1", tags=["health"], route_class=SafeRoute)
#: A health check must answer quickly even when a server is unreachable (not refusing).
PING_SECONDS = 1.0


class Health(BaseModel):
    redis: Condition
    broker: Condition
    detail: str | None = None


def _probe(url: str) -> Condition:
    client = redis.Redis.from_url(
        url, socket_connect_timeout=PING_SECONDS, socket_timeout=PING_SECONDS
    )
    try:
        return probe(client)
    finally:
        client.close()


def _detail(found: Health) -> str | None:
    parts = [describe(found.redis)] if found.redis != "ok" else []
    if found.broker != "ok":
        parts.append(describe(found.broker, "The broker (Redis)"))
    return "; ".join(parts) or None


@router.get(
    "/health",
    response_model=Health,
    response_model_exclude_none=True,
    responses={503: {"model": Health, "description": "Redis or the broker refuses writes"}},
    summary="Whether Redis and the broker take writes",
)
def health(ctx: Context, response: Response) -> Health:
    """`ok`, or why not: `full` (out of memory), `read-only`, `unreachable`, `failing`."""
    store = _probe(ctx.settings.redis_url)
    same = ctx.settings.broker_url == ctx.settings.redis_url
    found = Health(redis=store, broker=store if same else _probe(ctx.settings.broker_url))
    found.detail = _detail(found)
    if found.detail is not None:
        response.status_code = 503
        response.headers["Retry-After"] = str(RETRY_AFTER)
    return found
