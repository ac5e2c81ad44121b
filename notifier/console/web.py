"""What every console page shares: the Jinja2 environment, the session and CSRF checks,
form parsing, and the route class that turns failures into Danish pages.

Pages are rendered on the server. A request without a live session gets no data: a GET is
sent to /login, a POST is refused with 403 and changes nothing. Every state-changing form
carries the session's CSRF token in the field `csrf`; a POST whose token is missing or wrong
is refused with 403 before anything is read or changed.
"""

from __future__ import annotations

import contextlib
import hmac
import logging
import time
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import parse_qs, quote
from zoneinfo import ZoneInfo

import jinja2
import redis
from fastapi import Depends, Request, Response
from fastapi.responses import HTMLResponse, RedirectResponse
from fastapi.routing import APIRoute

from notifier.api.auth import context
from notifier.api.context import ApiContext
from notifier.console import labels
from notifier.domain.conference import Conference
from notifier.errors import ConfigError
from notifier.mail import danish
from notifier.store.sessions import Session, Sessions

log = logging.getLogger("notifier.console")

HERE = Path(__file__).resolve().parent
SESSION_COOKIE = "notifier_session"
LOGIN_COOKIE = "notifier_login"  # the login form's CSRF token (double submit: no session yet)
SESSION_SECONDS = 8 * 3600  # a working day; then log in again
MAX_FORM_BYTES = 64 * 1024
COPENHAGEN = ZoneInfo("Europe/Copenhagen")


class PageError(Exception):
    """Answer with a Danish error page instead of the page asked for."""

    def __init__(self, status: int, title: str, text: str) -> None:
        super().__init__(title)
        self.status, self.title, self.text = status, title, text


def _environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(HERE / "templates"),
        autoescape=True,
        trim_blocks=True,
        lstrip_blocks=True,
        undefined=jinja2.StrictUndefined,
    )
    env.filters["when"] = when
    env.filters["number"] = danish.number
    env.filters["long_date"] = danish.long_date
    env.filters["url"] = lambda value: quote(str(value), safe="")
    env.filters["reason"] = labels.reason_name
    env.filters["suppression"] = labels.danish_reason
    return env


def when(epoch_or_iso: float | str | datetime | None) -> str:
    """A time as organisers read it: "5.12.2026 kl. 13.35.07" in Copenhagen time."""
    if epoch_or_iso is None or epoch_or_iso == "":
        return "–"
    if isinstance(epoch_or_iso, datetime):
        at = epoch_or_iso
    elif isinstance(epoch_or_iso, str):
        try:
            at = datetime.fromisoformat(epoch_or_iso)
        except ValueError:
            return epoch_or_iso
    else:
        at = datetime.fromtimestamp(epoch_or_iso, UTC)
    local = (at if at.tzinfo else at.replace(tzinfo=UTC)).astimezone(COPENHAGEN)
    return f"{local.day}.{local.month}.{local.year} kl. {local:%H.%M.%S}"


ENV = _environment()


def sessions(ctx: ApiContext) -> Sessions:
    return Sessions(ctx.client, SESSION_SECONDS)


def is_https(request: Request) -> bool:
    return request.url.scheme == "https"


def client_address(request: Request) -> str:
    return request.client.host if request.client else "unknown"


def render(
    request: Request,
    template: str,
    values: Mapping[str, Any] | None = None,
    *,
    session: Session | None = None,
    status: int = 200,
) -> HTMLResponse:
    page = ENV.get_template(template).render(
        request=request,
        session=session,
        csrf=session.csrf if session else "",
        path=request.url.path,
        **(values or {}),
    )
    return HTMLResponse(page, status_code=status, headers={"Cache-Control": "no-store"})


def redirect(url: str) -> RedirectResponse:
    """After a POST: the browser GETs `url` (303), so a reload never posts again."""
    return RedirectResponse(url, status_code=303, headers={"Cache-Control": "no-store"})


@dataclass(frozen=True)
class Viewer:
    """The signed-in organiser of a request."""

    session: Session
    ctx: ApiContext


class NeedsLogin(Exception):
    """No live session: GET goes to /login, anything else is refused."""


def viewer(request: Request) -> Viewer:
    ctx = context(request)
    found = sessions(ctx).get(request.cookies.get(SESSION_COOKIE, ""))
    if found is None:
        raise NeedsLogin()
    return Viewer(found, ctx)


SignedIn = Annotated[Viewer, Depends(viewer)]


async def form(request: Request) -> dict[str, str]:
    """An application/x-www-form-urlencoded body (the only kind the console's forms send),
    one value per field."""
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind != "application/x-www-form-urlencoded":
        raise PageError(415, "Forkert formular", "Formularen blev sendt i et ukendt format.")
    body = await request.body()
    if len(body) > MAX_FORM_BYTES:
        raise PageError(413, "For stor formular", "Formularen er for stor.")
    fields = parse_qs(body.decode("utf-8", errors="replace"), keep_blank_values=True)
    return {name: values[-1] for name, values in fields.items()}


def check_csrf(session: Session, fields: Mapping[str, str]) -> None:
    if not hmac.compare_digest(fields.get("csrf", "").encode(), session.csrf.encode()):
        raise PageError(
            403,
            "Formularen er udløbet",
            "Siden var for gammel eller kom et andet sted fra. Gå tilbage, genindlæs og prøv igen.",
        )


async def posted(request: Request, who: Viewer) -> dict[str, str]:
    """The form of a state-changing POST, after its CSRF token is checked."""
    fields = await form(request)
    check_csrf(who.session, fields)
    return fields


def conference_of(ctx: ApiContext, slug: str) -> Conference:
    try:
        return ctx.conferences.get(slug)
    except ConfigError:
        raise PageError(
            404, "Ukendt konference", f"Der er ingen konference ved navn {slug}."
        ) from None


def now() -> float:
    return time.time()


def _error_page(request: Request, exc: PageError) -> Response:
    found = None
    with contextlib.suppress(redis.RedisError):  # the error page itself must not fail
        found = sessions(context(request)).get(request.cookies.get(SESSION_COOKIE, ""))
    values = {"title": exc.title, "text": exc.text}
    return render(request, "error.html", values, session=found, status=exc.status)


class ConsoleRoute(APIRoute):
    """Console routes: PageError becomes a Danish page, a missing session a redirect to
    /login (GET) or 403 (anything else), and Redis down a 503 page. Unexpected errors are
    logged by type only (a traceback may quote a Redis command, and with it personal data)."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def guarded(request: Request) -> Response:
            try:
                return await handler(request)
            except NeedsLogin:
                if request.method in ("GET", "HEAD"):
                    return redirect(f"/login?next={quote(request.url.path, safe='/')}")
                return _error_page(request, PageError(403, "Ikke logget ind", LOGGED_OUT))
            except PageError as exc:
                return _error_page(request, exc)
            except redis.RedisError as exc:
                log.warning("%s %s: Redis: %s", request.method, request.url.path, _name(exc))
                return _error_page(request, UNAVAILABLE)
            except Exception as exc:  # the page must not show a traceback
                log.error("%s %s failed: %s", request.method, request.url.path, _name(exc))
                return _error_page(request, FAILED)

        return guarded


def _name(exc: BaseException) -> str:
    return type(exc).__name__


LOGGED_OUT = "Du er ikke logget ind, eller din session er udløbet. Log ind og prøv igen."
UNAVAILABLE = PageError(
    503, "Tjenesten svarer ikke", "Databasen (Redis) kan ikke nås lige nu. Prøv igen om lidt."
)
FAILED = PageError(500, "Der skete en fejl", "Siden kunne ikke vises. Fejlen er logget.")
