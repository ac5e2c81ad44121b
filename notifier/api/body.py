"""Request bodies: JSON only (415 otherwise), bounded in size (413) and in time (408).

Limits: one event is at most MAX_EVENT_BYTES (16 KiB) once parsed, so a body of 1 MiB
(MAX_BODY) leaves room for any formatting; a batch holds at most MAX_BATCH events of at most
16 KiB each, so its limit is 1,000 x 16 KiB plus 64 KiB for the envelope and separators
(MAX_BATCH_BODY, about 15.7 MiB). The limit is checked against Content-Length before anything
is read, and again while the body streams in (chunked bodies have no length).
"""

from __future__ import annotations

import json
from typing import Any, TypeVar

import anyio
from fastapi import Request
from pydantic import BaseModel, ValidationError

from notifier.api.problems import Problem, invalid, model_errors
from notifier.domain.events import MAX_EVENT_BYTES

MAX_BODY = 1024 * 1024
MAX_BATCH = 1000
MAX_BATCH_BODY = MAX_BATCH * MAX_EVENT_BYTES + 64 * 1024
#: A client has this long to send its body (a slow sender holds a connection and memory).
BODY_SECONDS = 30.0

M = TypeVar("M", bound=BaseModel)


def _too_large(limit: int) -> Problem:
    return Problem(413, "too-large", "Content too large", f"The body is larger than {limit} bytes")


def check_json(request: Request) -> None:
    """415 unless the body is declared as application/json (any parameters, e.g. charset)."""
    media = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if media != "application/json":
        raise Problem(
            415,
            "unsupported-media-type",
            "Unsupported media type",
            "Send the body as Content-Type: application/json",
        )


async def read(request: Request, limit: int) -> bytes:
    """The body, at most `limit` bytes; 413 beyond that, 408 if it takes too long."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise _too_large(limit)
    chunks: list[bytes] = []
    size = 0
    try:
        with anyio.fail_after(BODY_SECONDS):
            async for chunk in request.stream():
                size += len(chunk)
                if size > limit:
                    raise _too_large(limit)
                chunks.append(chunk)
    except TimeoutError:
        raise Problem(
            408, "timeout", "Request timeout", f"The body did not arrive in {BODY_SECONDS:.0f} s"
        ) from None
    return b"".join(chunks)


async def read_json(request: Request, limit: int, *, empty: Any = None) -> Any:
    """The body as JSON; `empty` (when not None) stands for an absent body."""
    headers = request.headers
    no_body = headers.get("content-length") in (None, "0") and "transfer-encoding" not in headers
    if empty is not None and no_body:
        return empty
    check_json(request)
    raw = await read(request, limit)
    try:
        return json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise invalid([("body", f"not valid JSON: {exc}")], "request") from None


async def read_model(request: Request, model: type[M]) -> M:
    """A small JSON object body validated as `model` (422 naming each bad field)."""
    data = await read_json(request, MAX_BODY, empty={})
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise invalid(model_errors(exc), "request") from None
