"""RFC 9457 problem details: every error of the API is `application/problem+json`.

A problem has `type` (a URN naming the kind of problem; `about:blank` for plain HTTP errors
such as an unknown path), `title` (the same for every problem of that type), `status`,
`detail` (this occurrence) and, for invalid input, `errors`: one {"field", "reason"} per bad
field, dotted paths as notifier.domain.events names them. Nothing of a request body or a
token is echoed in `detail`, and nothing of either is logged.
"""

from __future__ import annotations

import logging
import traceback
from collections.abc import Callable, Coroutine, Mapping, Sequence
from typing import Any

import redis
from fastapi import FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from pydantic import BaseModel, ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from notifier.errors import BrokerUnavailable, InvalidEvent, NotifierError, StoreUnavailable
from notifier.store.health import condition_of, describe

log = logging.getLogger("notifier.api")

MEDIA_TYPE = "application/problem+json"
# A tag URI (RFC 4151): stable, owned, and never taken for a Redis key.
URN = "tag:kl.dk,2026:notifier/problem/"
#: Seconds a client waits before it tries again after a 503.
RETRY_AFTER = 5


class FieldError(BaseModel):
    field: str
    reason: str


class ProblemBody(BaseModel):
    """The problem+json body (for the OpenAPI document)."""

    type: str
    title: str
    status: int
    detail: str
    errors: list[FieldError] | None = None


class Problem(Exception):
    """Raised by a route: answered as problem+json."""

    def __init__(
        self,
        status: int,
        kind: str,
        title: str,
        detail: str,
        *,
        errors: Sequence[tuple[str, str]] = (),
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.kind = kind
        self.title = title
        self.detail = detail
        self.errors = tuple(errors)
        self.headers = dict(headers or {})

    def body(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "type": self.kind if self.kind == "about:blank" else URN + self.kind,
            "title": self.title,
            "status": self.status,
            "detail": self.detail,
        }
        if self.errors:
            out["errors"] = [{"field": f, "reason": r} for f, r in self.errors]
        return out

    def response(self) -> JSONResponse:
        return JSONResponse(
            self.body(), status_code=self.status, media_type=MEDIA_TYPE, headers=self.headers
        )


def invalid(errors: Sequence[tuple[str, str]], what: str = "event") -> Problem:
    names = ", ".join(dict.fromkeys(f for f, _ in errors))
    return Problem(
        422,
        f"invalid-{what}",
        f"Invalid {what}",
        f"The {what} does not validate: {names}",
        errors=errors,
    )


def unauthorized(detail: str) -> Problem:
    return Problem(
        401,
        "unauthorized",
        "Missing or invalid token",
        detail,
        headers={"WWW-Authenticate": 'Bearer realm="notifier"'},
    )


def unavailable(detail: str) -> Problem:
    return Problem(
        503,
        "unavailable",
        "Service unavailable",
        detail,
        headers={"Retry-After": str(RETRY_AFTER)},
    )


def model_errors(exc: ValidationError | RequestValidationError) -> list[tuple[str, str]]:
    """pydantic's errors as (dotted field, reason), without the input values."""
    out = []
    for err in exc.errors():
        loc = [str(p) for p in err.get("loc", ()) if p not in ("body", "path", "query")]
        reason = str(err.get("msg", "invalid")).removeprefix("Value error, ")
        if err.get("type") == "extra_forbidden":
            reason = "unknown field"
        out.append((".".join(loc) or "body", reason))
    return out


def install(app: FastAPI) -> None:
    """Answer every error as a problem, including FastAPI's and Starlette's own."""

    async def on_problem(_: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, Problem)
        return exc.response()

    async def on_http(_: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, StarletteHTTPException)
        detail = exc.detail if isinstance(exc.detail, str) else "HTTP error"
        kind = Problem(exc.status_code, "about:blank", detail, detail, headers=exc.headers)
        return kind.response()

    async def on_validation(_: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        return invalid(model_errors(exc), "request").response()

    async def on_invalid_event(_: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, InvalidEvent)
        return invalid(exc.errors).response()

    async def on_store(_: Request, exc: Exception) -> JSONResponse:
        return unavailable(_why(exc)).response()

    app.add_exception_handler(Problem, on_problem)
    app.add_exception_handler(StarletteHTTPException, on_http)
    app.add_exception_handler(RequestValidationError, on_validation)
    app.add_exception_handler(InvalidEvent, on_invalid_event)
    app.add_exception_handler(StoreUnavailable, on_store)
    app.add_exception_handler(BrokerUnavailable, on_store)


class SafeRoute(APIRoute):
    """A route whose unexpected errors become a 500 problem, logged by type only (Starlette
    would log the traceback, whose last line may quote a Redis command and with it personal
    data). redis-py's errors are translated here, at the edge: the store is down (503)."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def safe(request: Request) -> Response:
            try:
                return await handler(request)
            except HANDLED:
                raise
            except redis.RedisError as exc:
                log.warning("%s %s: Redis: %s", request.method, request.url.path, _name(exc))
                return unavailable(_why(exc)).response()
            except Exception as exc:
                log_failure(request.method, request.url.path, exc)
                return internal().response()

        return safe


def internal() -> Problem:
    return Problem(500, "internal", "Internal error", "The request failed; it was logged")


def log_failure(method: str, path: str, exc: BaseException) -> None:
    """An unexpected error, logged with its traceback: the frames and the error's type, not
    its message (which may quote a Redis command or a value of the request, and with it
    personal data). Nothing of the request's body is logged."""
    frames = "".join(traceback.format_tb(exc.__traceback__))
    log.error(
        "%s %s failed: %s\nTraceback (most recent call last):\n%s%s",
        method,
        path,
        _name(exc),
        frames,
        _name(exc),
    )


def _name(exc: BaseException) -> str:
    return type(exc).__name__


HANDLED = (Problem, StarletteHTTPException, RequestValidationError, NotifierError)


def _why(exc: BaseException) -> str:
    """What a 503 tells the client: which server, and whether it is full, read-only or
    cannot be reached (redis-py's error, or the one a StoreUnavailable was raised from)."""
    if isinstance(exc, BrokerUnavailable):
        return "The broker cannot be reached; try again"
    cause = exc if isinstance(exc, redis.RedisError) else exc.__cause__
    condition = condition_of(cause) if cause is not None else "unreachable"
    return f"{describe(condition)}; try again"
