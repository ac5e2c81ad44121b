"""Organiser endpoints under /v1/conferences/{slug}: a registration's seat and messages,
reminder batches, conference updates, and a batch's progress. Organiser tokens only.

They do what `notifier remind` and `notifier update` do, as requests: a reminder is the same
`reminder.requested` event (id `remind:<conference>:<batch>`, so the command and the API
never send a batch twice), an update the same `conference.updated` event.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Literal

from fastapi import APIRouter, Request, Response
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, ConfigDict, Field

from notifier.announce import seats_of
from notifier.api import body, openapi
from notifier.api.auth import Context, Organiser
from notifier.api.context import ApiContext
from notifier.api.problems import Problem, ProblemBody, SafeRoute
from notifier.api.registrations import RegistrationView, registration_view
from notifier.domain.conference import Conference
from notifier.domain.events import BatchId
from notifier.errors import ConfigError, UnknownBatch
from notifier.store import keys
from notifier.store.batches import batch_key
from notifier.store.gate import pacing
from notifier.store.outbox import STATES
from notifier.store.status import Status, bounce_reasons, eta, status

router = APIRouter(prefix="/v1/conferences/{slug}", tags=["organisers"], route_class=SafeRoute)

DEFAULT_BATCH = "reminder"  # as `notifier remind`

PROBLEMS: dict[int | str, dict[str, Any]] = {
    code: {"model": ProblemBody, "description": what}
    for code, what in (
        (401, "No token, or an unknown or revoked one"),
        (403, "An ingest token"),
        (404, "No such conference (or registration, batch)"),
        (422, "Invalid path or body: `errors` names each bad field"),
        (503, "Redis or the broker cannot be reached: retry after Retry-After seconds"),
    )
}
CONFLICT: dict[int | str, dict[str, Any]] = {
    409: {
        "model": ProblemBody,
        "description": "A past conference without allow_past, or a cancelled one (reminders)",
    },
    422: {"model": ProblemBody, "description": "Invalid body: `errors` names each bad field"},
}


class _Body(BaseModel):
    # Strict: "no" is not false and "yes" is not true; a wrong type is a 422 naming the
    # field, and nothing is started.
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class RemindersRequest(_Body):
    batch: BatchId = DEFAULT_BATCH
    allow_past: bool = False
    dry_run: bool = False


class UpdatesRequest(_Body):
    allow_past: bool = False
    dry_run: bool = False


class BatchLink(BaseModel):
    batch: str  # the batch key, conference:batch-id
    url: str


class PacingView(BaseModel):
    cap: float | None
    learned_rate: float | None
    paused_until: float | None  # epoch seconds, while every sender is paused


class BatchProgress(BaseModel):
    batch: str
    conference: str
    id: str
    kind: str
    state: Literal["requested", "planning", "planned"]
    total: int | None = Field(
        description="The batch's size once it is planned; null while it is requested or "
        "being planned (the counts then hold the messages created so far)."
    )
    finished: int
    done: bool
    counts: dict[str, int]
    # The bounced messages of the batch by the report's reason (notifier.bounces.reason),
    # most first; "" for one bounced before reasons were recorded. {} when none bounced.
    bounce_reasons: dict[str, int] = {}
    # The pacing every worker goes by (messages/s; the explicit cap, the rate learned from
    # the relay's throttling replies) and when the batch is expected to be done.
    pacing: PacingView | None = None
    eta_seconds: float | None = None


class DryRun(BaseModel):
    dry_run: Literal[True] = True
    recipients: int
    not_sent: dict[str, int]


def conference(ctx: ApiContext, slug: str) -> Conference:
    try:
        return ctx.conferences.get(slug)
    except ConfigError:
        raise Problem(
            404, "unknown-conference", "Unknown conference", f"No conference named {slug!r}"
        ) from None


def refuse_past(conf: Conference, allow_past: bool, what: str) -> None:
    if conf.has_passed(datetime.now(UTC)) and not allow_past:
        raise Problem(
            409,
            "conference-past",
            "The conference has taken place",
            f"{conf.slug} took place on {conf.date.isoformat()}: {what} for a past conference "
            "are refused; send allow_past: true to send anyway",
        )


def batch_url(slug: str, batch_id: str) -> str:
    return f"/v1/conferences/{slug}/batches/{batch_id}"


@router.get(
    "/registrations/{registration}",
    response_model=RegistrationView,
    responses=PROBLEMS,
    summary="A registration's seat and messages",
)
def get_registration(slug: str, registration: str, ctx: Context, _: Organiser) -> RegistrationView:
    """Who holds the seat, its status and history, and every message created for it since
    the registration index exists (messages created before it are not listed)."""
    conference(ctx, slug)
    found = registration_view(ctx.client, slug, registration)
    if found is None:
        raise Problem(
            404,
            "unknown-registration",
            "Unknown registration",
            f"No seat or message for registration {registration!r} of {slug}",
        )
    return found


def reminder_dry_run(ctx: ApiContext, conf: Conference) -> DryRun:
    now = datetime.now(UTC)
    seats = seats_of(ctx.client, conf)
    active = [s for s in seats if s.status == "active" and (s.registered_at or s.as_of) <= now]
    return DryRun(recipients=len(active), not_sent={"cancelled or newer": len(seats) - len(active)})


def request_reminders(ctx: ApiContext, conf: Conference, req: RemindersRequest) -> BatchLink:
    key = batch_key(conf.slug, req.batch)
    event_id = f"remind:{key}"
    event = {
        "id": event_id,
        "type": "reminder.requested",
        "occurred_at": datetime.now(UTC).isoformat(),
        "conference": conf.slug,
        "batch": {"id": req.batch},
    }
    if not any(ctx.seen([event_id])):
        ctx.publisher.publish([event])
        ctx.mark_accepted([event_id])
    return BatchLink(batch=key, url=batch_url(conf.slug, req.batch))


@router.post(
    "/reminders",
    status_code=202,
    response_model=BatchLink | DryRun,
    responses={**PROBLEMS, **CONFLICT, 200: {"model": DryRun, "description": "dry_run"}},
    openapi_extra=openapi.model_body(RemindersRequest),
    summary="Send a reminder to every current attendee",
)
async def post_reminders(
    slug: str, request: Request, response: Response, ctx: Context, _: Organiser
) -> BatchLink | DryRun:
    """As `notifier remind`: a batch id (default `reminder`; the same id again sends nothing
    new), `allow_past` for a conference that has taken place, `dry_run` to count the
    recipients (200). A cancelled conference is refused (409)."""
    req = await body.read_model(request, RemindersRequest)
    conf = conference(ctx, slug)
    if conf.cancelled:
        raise Problem(
            409,
            "conference-cancelled",
            "The conference is cancelled",
            f"{conf.slug} is cancelled (cancelled = true in its file): no reminders are sent",
        )
    refuse_past(conf, req.allow_past, "reminders")
    if req.dry_run:
        response.status_code = 200
        return await run_in_threadpool(reminder_dry_run, ctx, conf)
    return await run_in_threadpool(request_reminders, ctx, conf, req)


def _progress(ctx: ApiContext, slug: str, batch_id: str) -> BatchProgress:
    key = batch_key(slug, batch_id)
    try:
        st = status(ctx.client, key, failures=False)
    except UnknownBatch:
        if not ctx.client.exists(keys.accepted(f"remind:{key}")):
            raise Problem(
                404, "unknown-batch", "Unknown batch", f"No batch {batch_id!r} of {slug}"
            ) from None
        # Requested here, not yet opened by a worker.
        zero = dict.fromkeys(STATES, 0)
        return BatchProgress(
            batch=key,
            conference=slug,
            id=batch_id,
            kind="reminder",
            state="requested",
            total=None,
            finished=0,
            done=False,
            counts=zero,
        )
    info = st.batch
    assert info is not None
    planned = info.state == "planned"
    return BatchProgress(
        batch=key,
        conference=slug,
        id=batch_id,
        kind=info.kind.value,
        state="planned" if planned else "planning",
        total=info.total if planned else None,
        finished=st.finished,
        done=st.done,
        counts=st.counts,
        bounce_reasons=bounce_reasons(ctx.client, key) if st.counts["bounced"] else {},
        **_pacing(ctx, st),
    )


def _pacing(ctx: ApiContext, st: Status) -> dict[str, Any]:
    pace = pacing(ctx.client, ctx.settings.rate_limit)
    until = pace.paused_until if pace.pause_left else None
    view = PacingView(cap=pace.cap, learned_rate=pace.learned, paused_until=until)
    return {"pacing": view, "eta_seconds": None if st.done else eta(st, pace)}


@router.get(
    "/batches/{batch}",
    response_model=BatchProgress,
    responses=PROBLEMS,
    summary="A batch's progress",
)
def get_batch(slug: str, batch: str, ctx: Context, _: Organiser) -> BatchProgress:
    """Counts per delivery state, the batch's size and whether every message is settled.
    `requested`: accepted here, not yet opened by a worker; `planning`: a worker is creating
    its messages (`total` is null until it is planned)."""
    conference(ctx, slug)
    return _progress(ctx, slug, batch)
