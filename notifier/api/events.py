"""POST /v1/events and /v1/events/batch: events over HTTP, onto the same queue.

Nothing is half-accepted. When the broker is the store's Redis (the default), one script
pushes each new event's task onto the queue and marks its id accepted (keys.accepted, with a
TTL) in one step (notifier.store.acceptance); an id that is marked, or whose event the
worker has applied (its event marker), answers "duplicate" and is not queued again, even
when two requests carry it at once. With a broker elsewhere, kombu publishes first and the
id is marked after, so "accepted" still means the broker holds it; there two requests with
the same id at the same moment may both publish, and the worker applies an id once. If
Redis or the broker fails, the client gets 503 with Retry-After and sends the same id again.
"""

from __future__ import annotations

import json
from typing import Any, Literal

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel

from notifier.api import body, openapi
from notifier.api.auth import Context, Ingest
from notifier.api.context import ApiContext
from notifier.api.problems import FieldError, ProblemBody, SafeRoute, invalid
from notifier.domain.events import parse_event
from notifier.errors import InvalidEvent
from notifier.store.stats import count_api_events

router = APIRouter(prefix="/v1", tags=["events"], route_class=SafeRoute)


class EventAccepted(BaseModel):
    id: str
    status: Literal["accepted", "duplicate"]


class ItemResult(BaseModel):
    index: int
    id: str | None
    status: Literal["accepted", "duplicate", "invalid"]
    errors: list[FieldError] | None = None


class BatchResult(BaseModel):
    accepted: int
    duplicate: int
    invalid: int
    results: list[ItemResult]


PROBLEMS: dict[int | str, dict[str, Any]] = {
    code: {"model": ProblemBody, "description": what}
    for code, what in (
        (401, "No token, or an unknown or revoked one"),
        (413, "The body is over the size limit"),
        (415, "Not application/json"),
        (422, "Invalid: `errors` names each bad field"),
        (503, "Redis or the broker cannot be reached: retry after Retry-After seconds"),
    )
}


def _accept(ctx: ApiContext, events: list[dict[str, Any]]) -> list[str]:
    """Publish the events not seen before, then mark them; each one's status, in order."""
    ids = [str(e["id"]) for e in events]
    seen = ctx.seen(ids)
    fresh: list[dict[str, Any]] = []
    taken: set[str] = set()
    status = ["duplicate"] * len(events)
    for i, (event, old) in enumerate(zip(events, seen, strict=True)):
        if not old and ids[i] not in taken:  # the same id twice in one batch: once
            taken.add(ids[i])
            fresh.append(event)
            status[i] = "accepted"
    if fresh:
        ctx.publisher.publish(fresh)
        marked = iter(ctx.mark_accepted([str(e["id"]) for e in fresh]))
        status = [s if s != "accepted" or next(marked) else "duplicate" for s in status]
    return status


@router.post(
    "/events",
    status_code=202,
    response_model=EventAccepted,
    responses=PROBLEMS,
    openapi_extra=openapi.request_body("Event"),
    summary="Submit one event",
)
async def post_event(request: Request, ctx: Context, _: Ingest) -> EventAccepted:
    """One event as in schema/events.schema.json. 202 once the broker holds it ("accepted"),
    or when its id was accepted or applied before ("duplicate")."""
    body.check_json(request)
    raw = await body.read(request, body.MAX_BODY)
    try:
        parse_event(raw, conferences=ctx.conferences)
    except InvalidEvent:
        await count_api_events(ctx.aclient, "refused")
        raise  # 422 naming each field
    event = json.loads(raw)
    [status] = await accept(ctx, [event])
    if status == "duplicate":
        await count_api_events(ctx.aclient, "duplicate")
    return EventAccepted(id=event["id"], status=status)


async def accept(ctx: ApiContext, events: list[dict[str, Any]]) -> list[str]:
    """Each event's status, "accepted" or "duplicate". When the broker is the store's Redis,
    one script queues and marks them (notifier.store.acceptance); otherwise kombu publishes
    them and a second step marks them."""
    if ctx.acceptance is None:
        return await run_in_threadpool(_accept, ctx, events)
    tasks = [(str(e["id"]), ctx.messages.ingest(e)) for e in events]
    done = await ctx.acceptance.accept(tasks)
    return ["accepted" if ok else "duplicate" for ok in done]


def _validate(items: list[Any], ctx: ApiContext) -> tuple[list[ItemResult | None], list[int]]:
    """Per item: a result if it is invalid, else None; and the indexes of the valid ones."""
    results: list[ItemResult | None] = []
    valid: list[int] = []
    for index, item in enumerate(items):
        try:
            if not isinstance(item, dict):  # JSON text of an event: encoded twice
                raise InvalidEvent([("event", _not_an_object(item))])
            parse_event(item, conferences=ctx.conferences)
        except InvalidEvent as exc:
            item_id = item.get("id") if isinstance(item, dict) else None
            errors = [FieldError(field=f, reason=r) for f, r in exc.errors]
            results.append(
                ItemResult(
                    index=index,
                    id=item_id if isinstance(item_id, str) else None,
                    status="invalid",
                    errors=errors,
                )
            )
            continue
        results.append(None)
        valid.append(index)
    return results, valid


_KINDS = {str: "a string", list: "a list", bool: "a boolean", int: "a number", float: "a number"}


def _not_an_object(item: Any) -> str:
    kind = "null" if item is None else _KINDS.get(type(item), "not an object")
    hint = " (an event encoded as JSON twice?)" if isinstance(item, str) else ""
    return f"must be a JSON object, this is {kind}{hint}"


async def _batch(ctx: ApiContext, items: list[Any]) -> BatchResult:
    results, valid = await run_in_threadpool(_validate, items, ctx)
    statuses = await accept(ctx, [items[i] for i in valid]) if valid else []
    for index, status in zip(valid, statuses, strict=True):
        results[index] = ItemResult(index=index, id=items[index]["id"], status=status)
    done = [r for r in results if r is not None]
    count = {s: sum(r.status == s for r in done) for s in ("accepted", "duplicate", "invalid")}
    await count_api_events(ctx.aclient, "refused", count["invalid"])
    await count_api_events(ctx.aclient, "duplicate", count["duplicate"])
    return BatchResult(results=done, **count)


@router.post(
    "/events/batch",
    response_model=BatchResult,
    responses=PROBLEMS,
    openapi_extra=openapi.batch_body(body.MAX_BATCH),
    summary="Submit up to 1,000 events",
)
async def post_batch(request: Request, ctx: Context, _: Ingest) -> BatchResult:
    """`{"events": [...]}`, at most 1,000. 200 with a result per item, in order: accepted,
    duplicate, or invalid with its errors; invalid items do not stop the others. The valid
    ones are published over one connection; 503 if the broker fails (send the whole batch
    again: what was published is then a duplicate)."""
    data = await body.read_json(request, body.MAX_BATCH_BODY)
    items = data.get("events") if isinstance(data, dict) else None
    if not isinstance(items, list) or set(data) != {"events"}:
        raise invalid([("events", "send an object with one field, events: a list")], "batch")
    if len(items) > body.MAX_BATCH:
        raise invalid([("events", f"at most {body.MAX_BATCH} events per batch")], "batch")
    return await _batch(ctx, items)
