"""The overview (/), a conference (/conferences/{slug}) and a batch's progress."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import HTMLResponse, JSONResponse

from notifier.console import data
from notifier.console.web import ConsoleRoute, SignedIn, Viewer, conference_of, now, render
from notifier.store.bouncelog import RECENT_SIGNAL_DAYS, BounceLog
from notifier.store.eventlog import recent

router = APIRouter(route_class=ConsoleRoute, include_in_schema=False)

NAMES = {"states": data.STATE_NAMES, "kinds": data.KIND_NAMES}
OUTCOMES = {"applied": "Behandlet", "duplicate": "Dublet", "dead_letter": "Afvist (dead letter)"}


def signals(who: Viewer) -> dict[str, Any]:
    """Bounce reports of the last days that said our side has a problem (a blocklist,
    authentication, policy...): the notice on the overview and every conference's page."""
    found = BounceLog(who.ctx.client).recent_signals(now(), RECENT_SIGNAL_DAYS)
    return {"signals": found, "signal_days": RECENT_SIGNAL_DAYS}


@router.get("/", response_class=HTMLResponse)
def overview(request: Request, who: SignedIn) -> Response:
    confs = [who.ctx.conferences.get(slug) for slug in who.ctx.conferences.slugs()]
    summaries = [data.summary(who.ctx.client, conf) for conf in confs]
    values = {"title": "Konferencer", "summaries": summaries, **signals(who), **NAMES}
    return render(request, "overview.html", values, session=who.session)


@router.get("/conferences/{slug}", response_class=HTMLResponse)
def conference(slug: str, request: Request, who: SignedIn) -> Response:
    conf = conference_of(who.ctx, slug)
    client = who.ctx.client
    values: dict[str, Any] = {
        "title": conf.title,
        "summary": data.summary(client, conf),
        "batches": data.batches(client, slug),
        "events": recent(client, slug),
        "attention": data.attention(client, slug),
        "outcomes": OUTCOMES,
        **signals(who),
        **NAMES,
    }
    return render(request, "conference.html", values, session=who.session)


@router.get("/conferences/{slug}/batches/{batch_id}", response_class=HTMLResponse)
def batch(slug: str, batch_id: str, request: Request, who: SignedIn) -> Response:
    conf = conference_of(who.ctx, slug)
    row = data.batch(who.ctx.client, slug, batch_id)
    values = {"title": f"Udsendelse {batch_id}", "conf": conf, "batch_id": batch_id, "row": row}
    values["pace"] = data.pace_text(who.ctx.client, who.ctx.settings.rate_limit, row)
    return render(request, "batch.html", {**values, **NAMES}, session=who.session)


@router.get("/conferences/{slug}/batches/{batch_id}/progress")
def progress(slug: str, batch_id: str, who: SignedIn) -> Response:
    """The batch's progress for the page's script (polled while the batch runs)."""
    row = data.batch(who.ctx.client, slug, batch_id)
    if row is None:
        body: dict[str, Any] = {"state": "requested", "total": None, "finished": 0}
        body.update(done=False, counts={}, so_far=0)
    else:
        body = {
            "state": row.info.state,
            "total": row.total,
            "so_far": row.so_far,
            "finished": row.finished,
            "done": row.done,
            "counts": row.counts,
        }
    body["pace"] = data.pace_text(who.ctx.client, who.ctx.settings.rate_limit, row)
    return JSONResponse(body, headers={"Cache-Control": "no-store"})
