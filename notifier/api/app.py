"""The ASGI app (`create_app`) and `notifier serve` (`serve`).

No CORS middleware: browsers on other origins get no access (the API is for servers and the
organisers' own tools). Interactive docs at /docs, the document at /openapi.json.

Hook for more routers: `create_app(settings, routers=[...])` includes them, and so does every
module named in OPTIONAL_ROUTERS that exists (each exposes `router`, an APIRouter); that is
how the console joins. `GET /metrics` (notifier/api/metrics.py) is installed with its
collector and the request figures (notifier/api/traffic.py). A router reaches the shared
state through `request.app.state.api` (an ApiContext: settings, Redis client, conferences,
publisher).
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
import os
import signal
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from typing import Any

from fastapi import APIRouter, FastAPI

from notifier import logs
from notifier.api import conferences, events, health, metrics, openapi, problems, updates
from notifier.api.context import ApiContext
from notifier.api.headers import SecurityHeaders
from notifier.api.traffic import TrafficMiddleware
from notifier.settings import Settings, load_settings

# The console sits above the API (it uses the API's context and views), so the API finds it
# by name, like the metrics router.
OPTIONAL_ROUTERS = ("notifier.console",)
#: Seconds uvicorn gives running requests after SIGTERM/SIGINT before it closes them.
GRACEFUL_SECONDS = 30
#: An idle keep-alive connection is closed after this many seconds.
KEEP_ALIVE_SECONDS = 5
#: Connections beyond this many at once are answered 503 by uvicorn at once.
MAX_CONNECTIONS = 1000


def _optional_routers() -> list[APIRouter]:
    found = []
    for name in OPTIONAL_ROUTERS:
        if importlib.util.find_spec(name) is not None:
            router = importlib.import_module(name).router
            assert isinstance(router, APIRouter)
            found.append(router)
    return found


def create_app(settings: Settings, *, routers: Iterable[APIRouter] = ()) -> FastAPI:
    """The API for these settings; the Redis client and the publisher are made at start-up
    and closed at shutdown (the app's lifespan). `notifier serve` runs this app."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        ctx = ApiContext.create(settings)
        app.state.api = ctx
        try:
            yield
        finally:
            await ctx.aclose()
            ctx.close()
            close_metrics()

    app = FastAPI(
        title="notifier",
        version="1",
        description="Registration events in, Danish conference mail out. Tokens: "
        "`notifier tokens create NAME --scope ingest|organiser`; send "
        "`Authorization: Bearer TOKEN`. Errors are RFC 9457 application/problem+json.",
        lifespan=lifespan,
    )
    problems.install(app)
    for router in (events.router, conferences.router, updates.router, health.router):
        app.include_router(router)
    close_metrics, traffic = metrics.install(app, settings)
    for router in [*routers, *_optional_routers()]:
        app.include_router(router)
    openapi.install(app)
    app.add_middleware(TrafficMiddleware, traffic=traffic)
    app.add_middleware(SecurityHeaders)
    return app


class PathOnly(logging.Filter):
    """uvicorn's access log with paths only: a query string is cut off (a client might put a
    token or an address there). Headers are never in that log."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if isinstance(args, tuple) and len(args) == 5 and isinstance(args[2], str):
            record.args = (args[0], args[1], args[2].split("?", 1)[0], args[3], args[4])
        return True


def _install_logging(settings: Settings) -> None:
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logs.install(logging.getLogger(name), settings.log_format)
    access = logging.getLogger("uvicorn.access")
    if not any(isinstance(f, PathOnly) for f in access.filters):
        access.addFilter(PathOnly())


def _options() -> dict[str, Any]:
    return {
        "server_header": False,
        "proxy_headers": True,  # X-Forwarded-For/-Proto from a TLS proxy on forwarded_allow_ips
        "timeout_keep_alive": KEEP_ALIVE_SECONDS,
        "timeout_graceful_shutdown": GRACEFUL_SECONDS,
        "limit_concurrency": MAX_CONNECTIONS,
    }


def uvicorn_config(settings: Settings, host: str, port: int, **extra: Any) -> Any:
    """The uvicorn.Config `serve` runs (also for tests, which run it in a thread)."""
    import uvicorn

    config = uvicorn.Config(create_app(settings), host=host, port=port, **_options(), **extra)
    _install_logging(settings)
    return config


def from_environment() -> FastAPI:
    """The app of one process of `serve(..., workers=N)`: uvicorn starts each by importing
    this factory by name, so each reads the settings from the environment and sets up its own
    logging (the filters do not cross into a new process)."""
    settings = load_settings(os.environ)
    _install_logging(settings)
    return create_app(settings)


def serve(settings: Settings, host: str, port: int, workers: int = 1) -> None:
    """Run the API until SIGTERM or SIGINT (uvicorn's graceful shutdown: no new connections,
    running requests finish for up to GRACEFUL_SECONDS).

    `workers` > 1 runs that many server processes on one socket (uvicorn's supervisor): one
    Python process uses one core, whatever its thread pool. Every request's state is in Redis,
    so any process may answer any request.
    """
    import uvicorn

    logging.basicConfig(level=logging.INFO)  # our own lines (notifier.api), scrubbed below
    logs.install(logging.getLogger(), settings.log_format)
    # uvicorn raises the signal again once it has shut down, to the handler it found; this
    # one makes that a normal exit (status 0) rather than death by SIGTERM.
    signal.signal(signal.SIGTERM, _exit_quietly)
    if workers > 1:
        _install_logging(settings)
        uvicorn.run(
            f"{__name__}:from_environment",
            factory=True,
            host=host,
            port=port,
            workers=workers,
            **_options(),
        )
        return
    uvicorn.Server(uvicorn_config(settings, host, port)).run()


def _exit_quietly(signum: int, frame: Any) -> None:
    raise SystemExit(0)
