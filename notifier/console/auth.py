"""GET/POST /login and POST /logout.

Logging in takes an organiser token (from `notifier tokens create NAME --scope organiser`)
in the form field `token` and starts a session in Redis; the browser gets only the
session's random id, in an HttpOnly, SameSite=Strict cookie (Secure over HTTPS). An ingest
token is refused. After LOGIN_ATTEMPTS failed logins from one address in LOGIN_WINDOW
seconds, further attempts are refused (429) until the window ends, whether or not the token
is right, so that guessing cannot go on at speed.
"""

from __future__ import annotations

import hmac
import secrets
from typing import Annotated

from fastapi import APIRouter, Query, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse

from notifier.api.auth import context
from notifier.console.web import (
    LOGIN_COOKIE,
    SESSION_COOKIE,
    SESSION_SECONDS,
    ConsoleRoute,
    PageError,
    check_csrf,
    client_address,
    form,
    is_https,
    now,
    redirect,
    render,
    sessions,
    viewer,
)
from notifier.store.sessions import LoginFailures
from notifier.store.tokens import Tokens

router = APIRouter(route_class=ConsoleRoute, include_in_schema=False)

LOGIN_ATTEMPTS = 10
LOGIN_WINDOW = 15 * 60


def _safe_next(target: str | None) -> str:
    """Only a path of this site: never another host (an open redirect)."""
    if target and target.startswith("/") and not target.startswith("//") and "\\" not in target:
        return target
    return "/"


def _login_page(request: Request, next_url: str, error: str = "", status: int = 200) -> Response:
    token = secrets.token_urlsafe(32)
    page = render(
        request,
        "login.html",
        {"login_csrf": token, "next": next_url, "error": error, "title": "Log ind"},
        status=status,
    )
    page.set_cookie(
        LOGIN_COOKIE,
        token,
        max_age=3600,
        httponly=True,
        samesite="strict",
        secure=is_https(request),
        path="/login",
    )
    return page


@router.get("/login", response_class=HTMLResponse)
def login_form(request: Request, next: Annotated[str | None, Query()] = None) -> Response:
    return _login_page(request, _safe_next(next))


REFUSED = (
    "Log ind med en arrangør-nøgle (token). "
    "Nøglen er ukendt, tilbagekaldt eller ikke en arrangør-nøgle."
)


def _check_login(request: Request, token: str) -> tuple[str | None, int]:
    """The session id for a good organiser token, or None and the status to answer with."""
    ctx = context(request)
    failures = LoginFailures(ctx.client, LOGIN_WINDOW)
    address = client_address(request)
    if failures.count(address) >= LOGIN_ATTEMPTS:
        return None, 429
    info = Tokens(ctx.client).check(token) if token else None
    if info is None or info.scope != "organiser":
        failures.add(address)
        return None, 401
    return sessions(ctx).start(token, info, now()), 200


@router.post("/login", response_class=HTMLResponse)
async def login(request: Request) -> Response:
    fields = await form(request)
    expected = request.cookies.get(LOGIN_COOKIE, "")
    if not expected or not hmac.compare_digest(fields.get("csrf", "").encode(), expected.encode()):
        raise PageError(403, "Formularen er udløbet", "Genindlæs siden og log ind igen.")
    next_url = _safe_next(fields.get("next"))
    session_id, status = await run_in_threadpool(
        _check_login, request, fields.get("token", "").strip()
    )
    if session_id is None:
        if status == 429:
            ctx = context(request)
            wait = LoginFailures(ctx.client, LOGIN_WINDOW).retry_after(client_address(request))
            text = f"For mange forsøg. Vent {wait // 60 + 1} minutter, og prøv igen."
            page = _login_page(request, next_url, text, 429)
            page.headers["Retry-After"] = str(wait)
            return page
        return _login_page(request, next_url, REFUSED, 401)
    done = redirect(next_url)
    done.set_cookie(
        SESSION_COOKIE,
        session_id,
        max_age=SESSION_SECONDS,
        httponly=True,
        samesite="strict",
        secure=is_https(request),
        path="/",
    )
    done.delete_cookie(LOGIN_COOKIE, path="/login")
    return done


@router.post("/logout", response_class=HTMLResponse)
async def logout(request: Request) -> Response:
    """Ends the session (its CSRF token is required: another site must not log you out)."""
    who = await run_in_threadpool(viewer, request)
    fields = await form(request)
    check_csrf(who.session, fields)
    await run_in_threadpool(sessions(who.ctx).end, request.cookies.get(SESSION_COOKIE, ""))
    done = redirect("/login")
    done.delete_cookie(SESSION_COOKIE, path="/", httponly=True, samesite="strict")
    return done
