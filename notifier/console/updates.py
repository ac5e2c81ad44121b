"""Announcing a conference change: what `notifier update` would say (the before → now lines
per group of recipients, and how many), then the confirmed announcement.

GET /conferences/{slug}/updates is the dry look (nothing is published). Its confirmation
form carries a fresh event id; POST with `step=send` publishes the same `conference.updated`
event as the CLI and the API (notifier.api.updates) with that id, so posting the form twice
publishes once. The batch id is only known once a worker planned the update: the POST waits
about two seconds for that (as the API does) and goes to the batch's page, else to the
update's own page (GET /conferences/{slug}/updates/{event}), which follows it.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote
from uuid import UUID, uuid4

from fastapi import APIRouter, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse

from notifier.announce import CANCELLED_SEAT, forecast, seats_of
from notifier.api.updates import UpdatePlan, announce_update, update_plan, update_status
from notifier.console.web import (
    ConsoleRoute,
    PageError,
    SignedIn,
    Viewer,
    conference_of,
    posted,
    redirect,
    render,
)
from notifier.domain import itip
from notifier.domain.conference import Conference

router = APIRouter(route_class=ConsoleRoute, include_in_schema=False)

TITLE = "Meddel ændring"
#: Why a seat gets nothing (announce.forecast's reasons), as organisers read it.
NOT_SENT = {
    CANCELLED_SEAT: "Afmeldt",
    itip.NOT_HELD: "Pladsen er overdraget til en anden",
    itip.CONFERENCE_CANCELLED: "Konferencen er aflyst, og de har allerede fået besked",
    itip.NO_INVITE_YET: "Har ikke fået invitationen endnu; den kommer med de nye oplysninger",
    itip.UP_TO_DATE: "Invitationen har allerede de nye oplysninger",
}
PAST = (
    "Konferencen er overstået. Sæt kryds i »Send også, selv om konferencen er overstået«, "
    "hvis du vil sende alligevel."
)


def _past(conf: Conference) -> bool:
    return conf.has_passed(datetime.now(UTC))


def _event_id(conf: Conference, value: str) -> str:
    """The confirmation form's event id, checked to be one this page made."""
    prefix = f"update:{conf.slug}:"
    try:
        valid = value.startswith(prefix) and str(UUID(value[len(prefix) :])) == value[len(prefix) :]
    except ValueError:
        valid = False
    if not valid:
        raise PageError(422, "Ugyldig formular", "Formularen mangler sit id. Genindlæs siden.")
    return value


def _page(request: Request, who: Viewer, conf: Conference, **extra: Any) -> Response:
    """The forecast and, when something changed, the confirmation form (a fresh event id)."""
    plan = update_plan(forecast(seats_of(who.ctx.client, conf), conf))
    not_sent = {NOT_SENT.get(reason, reason): n for reason, n in plan.not_sent.items()}
    values: dict[str, Any] = {
        "title": TITLE,
        "conf": conf,
        "plan": plan,
        "not_sent": not_sent,
        "past": _past(conf),
        "event_id": f"update:{conf.slug}:{uuid4()}",
        "error": "",
    }
    status = extra.pop("status", 200)
    return render(request, "update_form.html", values | extra, session=who.session, status=status)


@router.get("/conferences/{slug}/updates", response_class=HTMLResponse)
def update_form(slug: str, request: Request, who: SignedIn) -> Response:
    return _page(request, who, conference_of(who.ctx, slug))


@router.post("/conferences/{slug}/updates", response_class=HTMLResponse)
async def update(slug: str, request: Request, who: SignedIn) -> Response:
    fields = await posted(request, who)
    conf = conference_of(who.ctx, slug)
    if fields.get("step") != "send":
        return await run_in_threadpool(_page, request, who, conf)
    event_id = _event_id(conf, fields.get("event", ""))
    if _past(conf) and fields.get("allow_past") not in ("1", "on", "true"):
        return await run_in_threadpool(_page, request, who, conf, error=PAST, status=409)
    goto = await run_in_threadpool(_send, who, conf, event_id)
    if goto is None:  # nothing changed (any more): nothing was published
        return await run_in_threadpool(_page, request, who, conf, status=409)
    return redirect(goto)


def _send(who: Viewer, conf: Conference, event_id: str) -> str | None:
    """Publish the update (once per event id); where to go next, None if nothing changed."""
    found = announce_update(who.ctx, conf, False, event_id)
    if isinstance(found, UpdatePlan):
        # Nothing to announce now; but if this form's event went out before (a second post
        # after a worker sent it), show that one.
        return _status_url(conf, event_id) if any(who.ctx.seen([event_id])) else None
    if found.state == "planned" and found.batch:
        return _batch_url(conf, found.batch)
    return _status_url(conf, event_id)


def _batch_url(conf: Conference, batch_key: str) -> str:
    return f"/conferences/{conf.slug}/batches/{quote(batch_key.split(':', 1)[1], safe='')}"


def _status_url(conf: Conference, event_id: str) -> str:
    return f"/conferences/{conf.slug}/updates/{quote(event_id, safe='')}"


@router.get("/conferences/{slug}/updates/{event}", response_class=HTMLResponse)
def update_progress(slug: str, event: str, request: Request, who: SignedIn) -> Response:
    """Where a sent update is: planned (go to its batch), waiting for a worker, or refused
    (a dead letter)."""
    conf = conference_of(who.ctx, slug)
    found = update_status(who.ctx, conf.slug, event)
    if found is None:
        raise PageError(404, "Ukendt ændring", "Der er ingen meddelt ændring med det id.")
    if found.state == "planned" and found.batch:
        return redirect(_batch_url(conf, found.batch))
    values = {"title": "Ændringen er sendt", "conf": conf, "status": found}
    return render(request, "update_status.html", values, session=who.session)
