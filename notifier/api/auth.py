"""Bearer tokens (`Authorization: Bearer TOKEN`) and their scopes.

`ingest` may post events; `organiser` may do everything (post events, read registrations and
batches, request reminders and updates). Reading a registration is organiser only: it shows
names and addresses, which a leaked ingest token (kept in a registration system's
configuration) should not open up.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Annotated, Any

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from notifier.api.context import ApiContext
from notifier.api.problems import Problem, unauthorized
from notifier.store.tokens import Scope, TokenInfo, check_async


def context(request: Request) -> ApiContext:
    ctx = request.app.state.api
    assert isinstance(ctx, ApiContext)
    return ctx


async def _context(request: Request) -> ApiContext:
    # Async so that FastAPI calls it on the event loop: a sync dependency costs a hop to its
    # thread pool on every request (measured: 7 % of a single-event POST's CPU).
    return context(request)


Context = Annotated[ApiContext, Depends(_context)]


# Also what the OpenAPI document names as the security scheme; missing or malformed headers
# are answered by `require` as a problem (FastAPI's own answer would be a plain 403).
BEARER = HTTPBearer(auto_error=False, description="A token from `notifier tokens create`")
Credentials = Annotated[HTTPAuthorizationCredentials | None, Depends(BEARER)]


def require(*scopes: Scope) -> Callable[[Request, Credentials], Coroutine[Any, Any, TokenInfo]]:
    """A dependency: the request's live token, which must have one of `scopes`."""

    # Async, on the server's event loop: a thread-pool hop per request cost more than the
    # lookup (one HGET).
    async def check(request: Request, credentials: Credentials) -> TokenInfo:
        if credentials is None or not credentials.credentials.strip():
            raise unauthorized("Send Authorization: Bearer TOKEN")
        found = await check_async(context(request).aclient, credentials.credentials.strip())
        if found is None:
            raise unauthorized("The token is unknown or revoked")
        if found.scope not in scopes:
            raise Problem(
                403,
                "forbidden",
                "Token scope not allowed",
                f"This needs a token of scope {' or '.join(scopes)}; this one is {found.scope}",
            )
        return found

    return check


Ingest = Annotated[TokenInfo, Depends(require("ingest", "organiser"))]
Organiser = Annotated[TokenInfo, Depends(require("organiser"))]
