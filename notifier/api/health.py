"""GET /v1/health (no token): whether Redis and the broker answer a PING, for load balancers
and supervisors. 200 when both do, 503 otherwise; the body says which is down."""

from __future__ import annotations

from typing import Literal

import redis
from fastapi import APIRouter, Response
from pydantic import BaseModel

from notifier.api.auth import Context
from notifier.api.problems import RETRY_AFTER, SafeRoute

router = APIRouter(prefix="/v1", tags=["health"], route_class=SafeRoute)
#: A health check must answer quickly even when a server is unreachable (not refusing).
PING_SECONDS = 1.0

State = Literal["ok", "down"]


class Health(BaseModel):
    redis: State
    broker: State


def _ping(url: str) -> State:
    client = redis.Redis.from_url(
        url, socket_connect_timeout=PING_SECONDS, socket_timeout=PING_SECONDS
    )
    try:
        return "ok" if client.ping() else "down"
    except (redis.RedisError, OSError):
        return "down"
    finally:
        client.close()


@router.get(
    "/health",
    response_model=Health,
    responses={503: {"model": Health, "description": "Redis or the broker is down"}},
    summary="Whether Redis and the broker can be reached",
)
def health(ctx: Context, response: Response) -> Health:
    found = Health(redis=_ping(ctx.settings.redis_url), broker=_ping(ctx.settings.broker_url))
    if "down" in (found.redis, found.broker):
        response.status_code = 503
        response.headers["Retry-After"] = str(RETRY_AFTER)
    return found
