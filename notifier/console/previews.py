"""Mail previews: every kind of mail composed with sample data, as the attendee would see it
(subject, HTML, plain text, and the invite as a calendar reads it), and a test send of one
to the organiser's own address.

Also the helpers the registration page uses to show a sent mail composed again: the parts
of a composed mail (`parts`) and the framable HTML document (`mail_html`).

The mail's HTML is shown in `<iframe sandbox="">` from `.../mail.html`, the one document of
the console that may be framed: its own Content-Security-Policy allows the mail's inline
styles and nothing else (no scripts, no requests), only our own pages may frame it, and it
is sandboxed even when opened directly.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime
from email import message_from_bytes, policy
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse
from icalendar import Calendar

from notifier.api.context import ApiContext
from notifier.console.data import KIND_NAMES
from notifier.console.web import ConsoleRoute, PageError, SignedIn, conference_of, posted, render
from notifier.domain.conference import Conference
from notifier.domain.notice import Kind, Notice
from notifier.domain.recipients import check_address
from notifier.loading import renderer
from notifier.mail import danish
from notifier.mail.compose import Composed, compose
from notifier.mail.samples import SAMPLE_NOW, sample_notice
from notifier.smtp import Mailer, Sent

router = APIRouter(route_class=ConsoleRoute, include_in_schema=False)

#: The headers of the framable mail document (the middleware keeps a route's own CSP).
FRAME_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'unsafe-inline'; img-src data:; "
        "frame-ancestors 'self'; sandbox"
    ),
    "X-Frame-Options": "SAMEORIGIN",
    "Cache-Control": "no-store",
}
METHOD_NAMES = {"REQUEST": "Invitation", "CANCEL": "Aflysning"}


@dataclass(frozen=True)
class Invite:
    """A calendar invite as a calendar shows it, in Danish."""

    method: str
    summary: str
    day: str
    time: str
    place: str
    sequence: int


@dataclass(frozen=True)
class MailParts:
    subject: str
    html: str
    text: str
    invite: Invite | None


def parts(msg: Composed) -> MailParts:
    """What a reader sees of a composed mail: read back from its bytes, as a client would."""
    parsed = message_from_bytes(msg.data, policy=policy.default)
    html = parsed.get_body(preferencelist=("html",))
    plain = parsed.get_body(preferencelist=("plain",))
    calendar = next((p for p in parsed.walk() if p.get_content_type() == "text/calendar"), None)
    return MailParts(
        subject=msg.subject,
        html=str(html.get_content()) if html else "",
        text=str(plain.get_content()) if plain else "",
        invite=invite_of(str(calendar.get_content())) if calendar else None,
    )


def invite_of(ics: str) -> Invite | None:
    """The first VEVENT of an iCalendar text, as a calendar would list it."""
    cal = Calendar.from_ical(ics)
    event = next(iter(cal.walk("VEVENT")), None)
    if event is None:
        return None
    method = str(cal.get("METHOD", ""))
    start, end = event.decoded("DTSTART"), event.decoded("DTEND", None)
    return Invite(
        method=METHOD_NAMES.get(method, method),
        summary=str(event.get("SUMMARY", "")),
        day=danish.long_date(start),
        time=_time_of(start, end),
        place=str(event.get("LOCATION", "")),
        sequence=int(event.get("SEQUENCE", 0)),
    )


def _time_of(start: date, end: date | None) -> str:
    # An all-day event has dates, not datetimes (RFC 5545 VALUE=DATE).
    if not isinstance(start, datetime):
        return "Hele dagen"
    if isinstance(end, datetime):
        return danish.clock_range(start, end.astimezone(start.tzinfo))
    return danish.clock(start)


def mail_html(html: str) -> HTMLResponse:
    return HTMLResponse(html, headers=FRAME_HEADERS)


def compose_mail(ctx: ApiContext, conf: Conference, notice: Notice, now: datetime) -> Composed:
    return compose(notice, conf, renderer(ctx.settings.templates_dir), now=now)


def kind_of(value: str) -> Kind:
    try:
        return Kind(value)
    except ValueError:
        raise PageError(404, "Ukendt mail", f"Der er ingen slags mail ved navn {value}.") from None


def _sample(ctx: ApiContext, conf: Conference, kind: Kind) -> Composed:
    return compose_mail(ctx, conf, sample_notice(kind, conf), SAMPLE_NOW)


@router.get("/conferences/{slug}/previews", response_class=HTMLResponse)
def previews(slug: str, request: Request, who: SignedIn) -> Response:
    conf = conference_of(who.ctx, slug)
    values = {"title": "Se mails", "conf": conf, "kinds": [(k.value, KIND_NAMES[k]) for k in Kind]}
    return render(request, "previews.html", values, session=who.session)


def _preview_values(ctx: ApiContext, conf: Conference, kind: Kind) -> dict[str, Any]:
    return {
        "title": f"{KIND_NAMES[kind]} (eksempel)",
        "conf": conf,
        "kind": kind.value,
        "kind_name": KIND_NAMES[kind],
        "mail": parts(_sample(ctx, conf, kind)),
        "to": str(conf.organiser.email),
        "result": None,
        "error": "",
    }


@router.get("/conferences/{slug}/previews/{kind}", response_class=HTMLResponse)
def preview(slug: str, kind: str, request: Request, who: SignedIn) -> Response:
    conf = conference_of(who.ctx, slug)
    values = _preview_values(who.ctx, conf, kind_of(kind))
    return render(request, "preview.html", values, session=who.session)


@router.get("/conferences/{slug}/previews/{kind}/mail.html", response_class=HTMLResponse)
def preview_html(slug: str, kind: str, who: SignedIn) -> Response:
    conf = conference_of(who.ctx, slug)
    return mail_html(parts(_sample(who.ctx, conf, kind_of(kind))).html)


@dataclass(frozen=True)
class TestResult:
    sent: bool
    to: str
    reply: str


def send_test(ctx: ApiContext, conf: Conference, kind: Kind, to: str) -> TestResult:
    """The sample mail of `kind`, addressed to `to`, sent once through the configured relay
    (the worker's SMTP client, so TLS and login are the same as for real mail)."""
    notice = sample_notice(kind, conf)
    # A key of its own: a second test must not carry the first one's Message-ID (mail
    # providers drop a message whose Message-ID they have seen).
    notice = replace(
        notice,
        key=f"test:{kind.value}:{secrets.token_hex(8)}",
        recipient=replace(notice.recipient, email=to),
    )
    # Dated now, not SAMPLE_NOW: the test mail should be on top of the inbox.
    msg = compose_mail(ctx, conf, notice, datetime.now(UTC))
    mailer = Mailer(ctx.settings)
    try:
        [outcome] = mailer.send_all([msg])
    finally:
        mailer.close()
    if isinstance(outcome, Sent):
        return TestResult(True, to, outcome.reply)
    return TestResult(False, to, str(outcome))


@router.post("/conferences/{slug}/previews/{kind}/test", response_class=HTMLResponse)
async def test_send(slug: str, kind: str, request: Request, who: SignedIn) -> Response:
    fields = await posted(request, who)
    conf = conference_of(who.ctx, slug)
    mail_kind = kind_of(kind)
    values = await run_in_threadpool(_preview_values, who.ctx, conf, mail_kind)
    to = fields.get("to", "").strip()
    values["to"] = to
    try:
        address = check_address(to)
    except ValueError:
        values["error"] = f"»{to}« er ikke en gyldig e-mailadresse."
        return render(request, "preview.html", values, session=who.session, status=422)
    result = await run_in_threadpool(send_test, who.ctx, conf, mail_kind, address)
    values["result"] = result
    status = 200 if result.sent else 502
    return render(request, "preview.html", values, session=who.session, status=status)
