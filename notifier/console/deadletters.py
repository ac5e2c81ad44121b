"""Dead letters (/dead-letters): the events a worker refused, with their errors and payload,
and "Send igen", which publishes a letter's event again as `notifier dead-letters --replay`
does (DeadLetters.replay: the letter leaves once the broker holds its event).

After a replay the page waits a moment (REPLAY_WAIT) for a worker's verdict, so that the
notice can say whether the event went through or was refused again; the notice is a flag in
the URL (`?done=...`), never the event's content.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import redis
from fastapi import APIRouter, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse

from notifier.api.context import ApiContext
from notifier.console.web import ConsoleRoute, SignedIn, posted, redirect, render
from notifier.store import keys
from notifier.store.deadletter import DeadLetter, DeadLetters, Replay

router = APIRouter(route_class=ConsoleRoute, include_in_schema=False)

#: How long a replay waits for a worker to apply the event or refuse it again.
REPLAY_WAIT = 2.0
POLL = 0.1
NOTICES = {
    "applied": ("ok", "Hændelsen er sendt igen og er nu behandlet."),
    "again": ("error", "Hændelsen er sendt igen, men blev afvist igen. Den står på listen."),
    "replayed": (
        "ok",
        "Hændelsen er sendt igen. En worker har ikke behandlet den endnu; bliver den afvist "
        "igen, kommer den tilbage på listen.",
    ),
    "all": ("ok", "Alle hændelser er sendt igen. Dem, der afvises igen, kommer tilbage her."),
    "missing": ("error", "Den afviste hændelse findes ikke længere (måske sendt igen)."),
    "purged": ("error", "Hændelsens indhold er slettet ved oprydning; den kan ikke sendes igen."),
    "not-event": ("error", "Indholdet er ikke en hændelse (et JSON-objekt); intet er sendt."),
    "broker": ("error", "Køen kunne ikke nås; intet er sendt. Prøv igen om lidt."),
}


@dataclass(frozen=True)
class Row:
    letter: DeadLetter
    errors: list[tuple[str, str]]
    payload: str  # pretty-printed JSON ("" when purged)


def errors_of(letter: DeadLetter) -> list[tuple[str, str]]:
    """The (field, message) pairs of a letter's reason, which DeadLetters.put joined as
    "field: message; field: message"; the whole reason if it does not split that way."""
    rest, pairs = letter.reason, []
    for i, name in enumerate(letter.fields):
        if not rest.startswith(f"{name}: "):
            return [("", letter.reason)]
        rest = rest[len(name) + 2 :]
        following = f"; {letter.fields[i + 1]}: " if i + 1 < len(letter.fields) else None
        cut = rest.find(following) if following else len(rest)
        if cut < 0:
            return [("", letter.reason)]
        pairs.append((name, rest[:cut]))
        rest = rest[cut + 2 :]
    return pairs or [("", letter.reason)]


def _row(letter: DeadLetter) -> Row:
    shown = ""
    if letter.purged_at is None:
        shown = json.dumps(letter.payload, indent=2, ensure_ascii=False, default=str)
    return Row(letter, errors_of(letter), shown)


@router.get("/dead-letters", response_class=HTMLResponse)
def dead_letters(request: Request, who: SignedIn, done: str = "") -> Response:
    rows = [_row(d) for d in reversed(DeadLetters(who.ctx.client).list())]  # newest first
    notice = NOTICES.get(done)
    values: dict[str, Any] = {"title": "Afviste hændelser", "rows": rows, "notice": notice}
    return render(request, "deadletters.html", values, session=who.session)


def _send(ctx: ApiContext) -> Callable[[dict[str, Any]], None]:
    # The same publisher as the API's events: a `notifier.ingest` task on the queue.
    return lambda event: ctx.publisher.publish([event])


def _outcome(report: Replay) -> str:
    if report.not_tried:
        return "broker"
    if report.purged:
        return "purged"
    if report.not_events:
        return "not-event"
    return "replayed"


def replay_one(ctx: ApiContext, dl_id: str) -> str:
    """Replay one letter; the notice's flag."""
    dead = DeadLetters(ctx.client)
    letter = dead.get(dl_id)
    if letter is None:
        return "missing"
    others = {d.raw for d in dead.list() if d.event_id == letter.event_id and d.id != dl_id}
    outcome = _outcome(dead.replay([letter], _send(ctx)))
    if outcome != "replayed" or not letter.event_id:
        return outcome
    return _verdict(ctx.client, dead, letter.event_id, others)


def _verdict(client: redis.Redis, dead: DeadLetters, event_id: str, others: set[str]) -> str:
    """Wait up to REPLAY_WAIT for a worker: applied (its event marker), refused again (a
    dead letter of the event that was not there before), or still waiting."""
    deadline = time.monotonic() + REPLAY_WAIT
    while time.monotonic() < deadline:
        if client.exists(keys.event(event_id)):
            return "applied"
        if any(d.event_id == event_id and d.raw not in others for d in dead.list()):
            return "again"
        time.sleep(POLL)
    return "replayed"


@router.post("/dead-letters/{dl_id}/replay", response_class=HTMLResponse)
async def replay(dl_id: str, request: Request, who: SignedIn) -> Response:
    await posted(request, who)
    outcome = await run_in_threadpool(replay_one, who.ctx, dl_id)
    return redirect(f"/dead-letters?done={outcome}")


@router.post("/dead-letters/replay", response_class=HTMLResponse)
async def replay_all(request: Request, who: SignedIn) -> Response:
    """ "Send alle igen": every letter, as `notifier dead-letters --replay-all`."""
    await posted(request, who)

    def run() -> Replay:
        dead = DeadLetters(who.ctx.client)
        return dead.replay(dead.list(), _send(who.ctx))

    report = await run_in_threadpool(run)
    outcome = "broker" if report.not_tried else "all"
    return redirect(f"/dead-letters?done={outcome}")
