"""GET /metrics: Prometheus text, read from Redis at scrape time (notifier.metrics).

No token. The figures are aggregates without names or addresses (states, batch keys, event
types, reply classes), and Prometheus scrapes are simplest without one. Still, they tell an
outsider how busy the service is: serve it on loopback (`notifier serve` binds 127.0.0.1 by
default), or let the TLS-terminating proxy in front refuse /metrics from outside (nginx:
`location = /metrics { allow 10.0.0.0/8; deny all; ... }`).

Wiring: `install(app, settings)` registers the collector and the request figures
(notifier.api.traffic) for the app and includes `router`; call the closer it returns when
the app shuts down. create_app does this, so `notifier serve` and the console serve it.
"""

from __future__ import annotations

from collections.abc import Callable

import redis
from fastapi import APIRouter, FastAPI, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.registry import CollectorRegistry

from notifier.api.problems import SafeRoute
from notifier.api.traffic import Traffic
from notifier.metrics import StoreCollector
from notifier.settings import Settings
from notifier.tasks import QUEUE

__all__ = ["install", "router"]

# A scrape must answer even when Redis hangs: Prometheus's default scrape timeout is 10 s.
CONNECT_TIMEOUT = 2.0
READ_TIMEOUT = 4.0
STATE = "notifier_metrics"  # the attribute of app.state that holds the registry

router = APIRouter(route_class=SafeRoute)


def registry_for(settings: Settings) -> tuple[CollectorRegistry, list[redis.Redis]]:
    """A registry holding only notifier's collector (no process or Python figures: they
    would describe whichever API process answered, not the service), and its clients."""
    store = _client(settings.redis_url)
    broker = store if settings.broker_url == settings.redis_url else _client(settings.broker_url)
    registry = CollectorRegistry(auto_describe=False)
    registry.register(StoreCollector(store, broker, QUEUE, settings.rate_limit))
    return registry, [store] if broker is store else [store, broker]


def _client(url: str) -> redis.Redis:
    return redis.Redis.from_url(
        url, socket_connect_timeout=CONNECT_TIMEOUT, socket_timeout=READ_TIMEOUT
    )


def install(app: FastAPI, settings: Settings) -> tuple[Callable[[], None], Traffic]:
    """Serve /metrics on `app` for the Redis and broker of `settings`; returns what closes
    the collector's clients (for the app's lifespan, on shutdown) and the request figures
    (for notifier.api.traffic's middleware)."""
    registry, clients = registry_for(settings)
    traffic = Traffic(registry)
    setattr(app.state, STATE, registry)
    app.include_router(router)

    def close() -> None:
        for client in clients:
            client.close()

    return close, traffic


@router.get(
    "/metrics",
    summary="Prometheus metrics",
    response_class=Response,
    responses={200: {"content": {CONTENT_TYPE_LATEST: {}}}},
    tags=["operations"],
)
def metrics(request: Request) -> Response:
    # A plain def: FastAPI runs it in its thread pool, so the blocking Redis reads of a
    # scrape never stall the event loop that serves ingest.
    registry: CollectorRegistry = getattr(request.app.state, STATE)
    return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)
