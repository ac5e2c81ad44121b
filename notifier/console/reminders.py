"""Starting a reminder batch: the form, then what it will do (recipients and a sample: the
dry run), then the confirmed start, which goes to the batch's page.

POST /conferences/{slug}/reminders with `step=preview` is the dry run (nothing is sent);
with `step=send` it publishes the same `reminder.requested` event as `notifier remind` and
the API (id `remind:<conference>:<batch>`), so a batch id is never sent twice, however
often the form is posted.
"""

from __future__ import annotations

from datetime import UTC, datetime

from fastapi import APIRouter, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse
from pydantic import TypeAdapter, ValidationError

from notifier.api.conferences import (
    DEFAULT_BATCH,
    RemindersRequest,
    reminder_dry_run,
    request_reminders,
)
from notifier.console.web import (
    ConsoleRoute,
    PageError,
    SignedIn,
    conference_of,
    posted,
    redirect,
    render,
)
from notifier.domain.conference import Conference
from notifier.domain.events import BatchId

router = APIRouter(route_class=ConsoleRoute, include_in_schema=False)

BATCH_ID = TypeAdapter(BatchId)


def _refusal(conf: Conference, allow_past: bool) -> str:
    """Why no reminder may be sent now, or ""."""
    if conf.cancelled:
        return "Konferencen er aflyst. Der sendes ingen påmindelser."
    if conf.has_passed(datetime.now(UTC)) and not allow_past:
        return (
            f"Konferencen blev holdt {conf.date.day}.{conf.date.month}.{conf.date.year}. "
            "Sæt kryds i »Send også, selv om konferencen er overstået«, "
            "hvis du vil sende alligevel."
        )
    return ""


@router.get("/conferences/{slug}/reminders", response_class=HTMLResponse)
def reminder_form(slug: str, request: Request, who: SignedIn) -> Response:
    conf = conference_of(who.ctx, slug)
    values = {
        "title": "Send påmindelse",
        "conf": conf,
        "batch_id": DEFAULT_BATCH,
        "allow_past": False,
        "error": "",
        "refusal": _refusal(conf, True) if conf.cancelled else "",
    }
    return render(request, "reminder_form.html", values, session=who.session)


def _batch_id(value: str) -> str:
    try:
        return BATCH_ID.validate_python(value.strip() or DEFAULT_BATCH)
    except ValidationError:
        raise PageError(
            422,
            "Ugyldigt udsendelses-id",
            "Udsendelsens id må kun indeholde bogstaver (a-z), tal og . _ : - og højst 100 tegn.",
        ) from None


@router.post("/conferences/{slug}/reminders", response_class=HTMLResponse)
async def reminders(slug: str, request: Request, who: SignedIn) -> Response:
    fields = await posted(request, who)
    conf = conference_of(who.ctx, slug)
    batch_id = _batch_id(fields.get("batch", ""))
    allow_past = fields.get("allow_past") in ("1", "on", "true")
    refusal = _refusal(conf, allow_past)
    values = {"title": "Send påmindelse", "conf": conf, "batch_id": batch_id}
    values |= {"allow_past": allow_past, "refusal": refusal, "error": ""}
    if refusal:
        return render(request, "reminder_form.html", values, session=who.session, status=409)
    if fields.get("step") == "send":
        req = RemindersRequest(batch=batch_id, allow_past=allow_past)
        link = await run_in_threadpool(request_reminders, who.ctx, conf, req)
        return redirect(f"/conferences/{conf.slug}/batches/{link.batch.split(':', 1)[1]}")
    dry = await run_in_threadpool(reminder_dry_run, who.ctx, conf)
    values |= {"recipients": dry.recipients, "not_sent": sum(dry.not_sent.values())}
    return render(request, "reminder_confirm.html", values, session=who.session)
