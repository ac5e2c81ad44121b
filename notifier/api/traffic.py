"""What the API answers: requests by route and status class, and how long they took.

A pure ASGI middleware (no task or body copy per request, as for the security headers). The
route label is the route's template (`/v1/conferences/{slug}/batches/{batch}`), never the
raw path, which may carry a registration id or anything a client sends; a path no route
matched is `unmatched`. Statuses are counted by class (2xx, 4xx, 5xx).

The figures are the answering process's own (prometheus_client in memory, from its start),
unlike the store's figures that every process reads from Redis.

It is also the last line of defence: an exception no route turned into an answer is logged
with its traceback (problems.log_failure: no message, no body) and answered as a 500
problem, unless the response had already started.
"""

from __future__ import annotations

import time

from prometheus_client import Counter, Histogram
from prometheus_client.registry import CollectorRegistry
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from notifier.api.problems import internal, log_failure

__all__ = ["Traffic", "TrafficMiddleware"]

UNMATCHED = "unmatched"
#: Seconds; the API's answers range from a fraction of a millisecond to an update's wait.
BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class Traffic:
    """The request figures, registered in `registry` (the app's, served at /metrics)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.requests = Counter(
            "notifier_api_requests",
            "HTTP requests answered, by method, route template and status class.",
            ["method", "route", "status"],
            registry=registry,
        )
        self.latency = Histogram(
            "notifier_api_request_duration_seconds",
            "Time from a request's arrival to the end of its answer, by method and route template.",
            ["method", "route"],
            registry=registry,
            buckets=BUCKETS,
        )

    def observe(self, method: str, route: str, status: int, seconds: float) -> None:
        self.requests.labels(method, route, f"{status // 100}xx").inc()
        self.latency.labels(method, route).observe(seconds)


def route_of(scope: Scope) -> str:
    route = scope.get("route")
    path = getattr(route, "path", None)
    return path if isinstance(path, str) else UNMATCHED


class TrafficMiddleware:
    def __init__(self, app: ASGIApp, traffic: Traffic) -> None:
        self.app = app
        self.traffic = traffic

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500

        async def send_noting_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
                started.append(True)
            await send(message)

        started: list[bool] = []
        try:
            await self.app(scope, receive, send_noting_status)
        except Exception as exc:
            log_failure(scope.get("method", "?"), scope.get("path", "?"), exc)
            if started:
                raise
            status = 500
            await internal().response()(scope, receive, send)
        finally:
            method = str(scope.get("method", "?"))
            self.traffic.observe(method, route_of(scope), status, time.perf_counter() - start)
