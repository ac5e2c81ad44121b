"""One registration: who holds the seat and how it changed hands, every message with its
state and the relay's replies, and each mail composed again from its stored notice.

The mail is composed again (the stored notice, the conference file and templates as they
are now, dated at the message's creation), not kept as sent: the page says so, since the
text, the recipient of a reminder or the invite's SEQUENCE may differ from what went out.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import HTMLResponse

from notifier.api.context import ApiContext
from notifier.api.registrations import MessageView, RegistrationView, registration_view
from notifier.console.data import KIND_NAMES, STATE_NAMES
from notifier.console.previews import MailParts, compose_mail, mail_html, parts
from notifier.console.web import ConsoleRoute, PageError, SignedIn, conference_of, render
from notifier.domain.conference import Conference
from notifier.store.outbox import Outbox

router = APIRouter(route_class=ConsoleRoute, include_in_schema=False)

FACT_NAMES = {
    "created": "Tilmeldt",
    "substituted": "Overdraget",
    "cancelled": "Afmeldt",
    "snapshot": "Tilstand (ældre data uden historik)",
}
SEAT_STATUS = {"active": "Aktiv", "cancelled": "Afmeldt"}
NAMES = {
    "kinds": KIND_NAMES,
    "states": STATE_NAMES,
    "facts": FACT_NAMES,
    "seat_status": SEAT_STATUS,
}


def _view(ctx: ApiContext, conf: Conference, registration: str) -> RegistrationView:
    view = registration_view(ctx.client, conf.slug, registration)
    if view is None:
        raise PageError(
            404,
            "Ukendt tilmelding",
            f"{conf.title} har ingen tilmelding med id {registration}.",
        )
    return view


@router.get("/conferences/{slug}/registrations/{registration}", response_class=HTMLResponse)
def registration(slug: str, registration: str, request: Request, who: SignedIn) -> Response:
    conf = conference_of(who.ctx, slug)
    view = _view(who.ctx, conf, registration)
    values = {"title": f"Tilmelding {registration}", "conf": conf, "view": view, **NAMES}
    return render(request, "registration.html", values, session=who.session)


def _message(view: RegistrationView, key: str) -> MessageView:
    """The message `key` of this registration; any other key is unknown here."""
    for message in view.messages:
        if message.key == key:
            return message
    raise PageError(404, "Ukendt mail", f"Tilmelding {view.registration} har ingen mail {key}.")


def _recomposed(ctx: ApiContext, conf: Conference, message: MessageView) -> MailParts:
    record = Outbox(ctx.client).get(message.key)
    if record is None:  # purged between the two reads
        raise PageError(404, "Ukendt mail", f"Mailen {message.key} findes ikke længere.")
    created = datetime.fromisoformat(message.created_at) if message.created_at else None
    return parts(compose_mail(ctx, conf, record.notice, created or datetime.now(UTC)))


MESSAGE = "/conferences/{slug}/registrations/{registration}/messages/{key}"


@router.get(MESSAGE, response_class=HTMLResponse)
def message(slug: str, registration: str, key: str, request: Request, who: SignedIn) -> Response:
    conf = conference_of(who.ctx, slug)
    view = _view(who.ctx, conf, registration)
    found = _message(view, key)
    values: dict[str, Any] = {
        "title": f"{KIND_NAMES.get(found.kind, found.kind)} til {registration}",
        "conf": conf,
        "view": view,
        "message": found,
        "mail": _recomposed(who.ctx, conf, found),
        **NAMES,
    }
    return render(request, "registration_message.html", values, session=who.session)


@router.get(MESSAGE + "/mail.html", response_class=HTMLResponse)
def message_html(slug: str, registration: str, key: str, who: SignedIn) -> Response:
    conf = conference_of(who.ctx, slug)
    found = _message(_view(who.ctx, conf, registration), key)
    return mail_html(_recomposed(who.ctx, conf, found).html)
