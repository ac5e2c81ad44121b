"""POST /v1/conferences/{slug}/updates: `notifier update` as a request, and
GET .../updates/{event} to follow an update until a worker has planned its batch.

The forecast is announce.forecast, the one `notifier update` prints; the event is the same
`conference.updated` with a new id each time (the worker maps the same facts to the same
batch, so a repeated request plans nothing twice).
"""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from typing import Literal
from uuid import uuid4

from fastapi import APIRouter, Request, Response
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel

from notifier.announce import NOTHING_CHANGED, Forecast, forecast, seats_of
from notifier.api import body, openapi
from notifier.api.auth import Context, Organiser
from notifier.api.conferences import (
    CONFLICT,
    PROBLEMS,
    UpdatesRequest,
    batch_url,
    conference,
    refuse_past,
)
from notifier.api.context import ApiContext
from notifier.api.problems import Problem, SafeRoute
from notifier.domain.conference import Conference
from notifier.loading import CHECK_SECONDS
from notifier.store import keys
from notifier.store.codec import text
from notifier.store.deadletter import DeadLetters

router = APIRouter(prefix="/v1/conferences/{slug}", tags=["organisers"], route_class=SafeRoute)

#: How long POST waits for a worker to record the update's batch before it answers with a
#: status URL instead.
UPDATE_WAIT = 2.0
POLL = 0.05


class ChangeLine(BaseModel):
    label: str
    before: str
    after: str


class ChangeGroup(BaseModel):
    recipients: int
    changes: list[ChangeLine]


class UpdatePlan(BaseModel):
    """What an update would send now (dry run), or that nothing changed."""

    changed: bool
    cancelled: bool
    recipients: int
    groups: list[ChangeGroup]
    not_sent: dict[str, int]
    detail: str | None = None


class UpdateStatus(BaseModel):
    event: str
    state: Literal["waiting", "planned", "dead-letter"]
    status_url: str
    batch: str | None = None
    url: str | None = None
    reason: str | None = None


def update_plan(fc: Forecast) -> UpdatePlan:
    groups = [
        ChangeGroup(
            recipients=g.count,
            changes=[ChangeLine(label=x.label, before=x.before, after=x.after) for x in g.lines],
        )
        for g in fc.groups
    ]
    n = len(fc.recipients)
    return UpdatePlan(
        changed=n > 0,
        cancelled=fc.cancelled,
        recipients=n,
        groups=groups,
        not_sent=fc.not_sent,
        detail=None if n else NOTHING_CHANGED,
    )


def publish_update(ctx: ApiContext, conf: Conference, event_id: str | None = None) -> str:
    """Publish a `conference.updated` event; returns its id. With `event_id` (the console's
    confirmation form carries one), an id published before is not published again."""
    if event_id is not None and any(ctx.seen([event_id])):
        return event_id
    # The workers look at an edited file again at most CHECK_SECONDS later; one that still
    # had the old version would announce it (as in `notifier update`).
    path = ctx.settings.conferences_dir / f"{conf.slug}.toml"
    try:
        age = time.time() - path.stat().st_mtime
    except OSError:
        age = CHECK_SECONDS
    if 0 <= age < CHECK_SECONDS:
        time.sleep(CHECK_SECONDS - age + 0.1)
    event_id = event_id or f"update:{conf.slug}:{uuid4()}"
    event = {
        "id": event_id,
        "type": "conference.updated",
        "occurred_at": datetime.now(UTC).isoformat(),
        "conference": conf.slug,
    }
    ctx.publisher.publish([event])
    ctx.mark_accepted([event_id])
    return event_id


def update_status(ctx: ApiContext, slug: str, event_id: str) -> UpdateStatus | None:
    """Where the update is; None when nothing is known of it."""
    status_url = f"/v1/conferences/{slug}/updates/{event_id}"
    raw = ctx.client.get(keys.event(event_id))
    if raw is not None:
        batch = str(json.loads(text(raw))["batch"])
        batch_id = batch.removeprefix(f"{slug}:")
        return UpdateStatus(
            event=event_id,
            state="planned",
            status_url=status_url,
            batch=batch,
            url=batch_url(slug, batch_id),
        )
    if not ctx.client.exists(keys.accepted(event_id)):
        return None
    for letter in DeadLetters(ctx.client).list():
        if letter.event_id == event_id:
            return UpdateStatus(
                event=event_id, state="dead-letter", status_url=status_url, reason=letter.reason
            )
    return UpdateStatus(event=event_id, state="waiting", status_url=status_url)


def announce_update(
    ctx: ApiContext, conf: Conference, dry: bool, event_id: str | None = None
) -> UpdatePlan | UpdateStatus:
    """The forecast (dry, or nothing changed), else publish and wait up to UPDATE_WAIT for a
    worker to plan the batch; `event_id` as in publish_update."""
    plan = update_plan(forecast(seats_of(ctx.client, conf), conf))
    if dry or not plan.changed:
        return plan
    event_id = publish_update(ctx, conf, event_id)
    deadline = time.monotonic() + UPDATE_WAIT
    while True:
        found = update_status(ctx, conf.slug, event_id)
        assert found is not None  # accepted just now
        if found.state != "waiting" or time.monotonic() >= deadline:
            return found
        time.sleep(POLL)


@router.post(
    "/updates",
    status_code=202,
    response_model=UpdatePlan | UpdateStatus,
    responses={
        **PROBLEMS,
        **CONFLICT,
        200: {"model": UpdatePlan, "description": "dry_run, or nothing changed"},
    },
    openapi_extra=openapi.model_body(UpdatesRequest),
    summary="Announce what the conference file says now",
)
async def post_update(
    slug: str, request: Request, response: Response, ctx: Context, _: Organiser
) -> UpdatePlan | UpdateStatus:
    """As `notifier update`: every current attendee whose invite carries other facts gets
    an update (or, with cancelled = true, a cancellation). 200 with the forecast for a dry
    run or when nothing changed; else 202 with the batch's URL once a worker planned it
    (within about two seconds), or with the update's status URL to follow."""
    req = await body.read_model(request, UpdatesRequest)
    conf = conference(ctx, slug)
    refuse_past(conf, req.allow_past, "updates")
    found = await run_in_threadpool(announce_update, ctx, conf, req.dry_run)
    if isinstance(found, UpdatePlan):
        response.status_code = 200
    return found


@router.get(
    "/updates/{event}",
    response_model=UpdateStatus,
    response_model_exclude_none=True,
    responses=PROBLEMS,
    summary="Where an update is",
)
def get_update(slug: str, event: str, ctx: Context, _: Organiser) -> UpdateStatus:
    """`waiting` for a worker, `planned` with the batch's URL, or `dead-letter` with why."""
    conference(ctx, slug)
    found = update_status(ctx, slug, event)
    if found is None:
        raise Problem(404, "unknown-update", "Unknown update", f"No update {event!r} of {slug}")
    return found
