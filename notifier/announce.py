"""`notifier update CONFERENCE`: announce what a conference file says now.

The command reads the seats, tells the organiser who would get an update (or a cancellation
of the conference) and what changed for them, then publishes one `conference.updated` event
and follows the batch a worker plans for it. What it prints is a forecast: the worker decides
again, per message, when it sends (notifier.domain.itip), with the same rule
(`would_update`), so a seat that changed meanwhile is judged as it is then.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from uuid import uuid4

import click
import redis

from notifier import ops
from notifier.domain.conference import Conference
from notifier.domain.itip import before, prepare, would_update
from notifier.domain.notice import Kind, Notice
from notifier.domain.plan import Seat
from notifier.loading import CHECK_SECONDS, renderer
from notifier.mail.changes import Line, describe
from notifier.mail.compose import compose
from notifier.settings import Settings
from notifier.store import keys
from notifier.store.batches import Batches
from notifier.store.codec import text
from notifier.store.deadletter import DeadLetters
from notifier.store.outbox import Outbox
from notifier.store.roster import Roster

console = ops.console
NOTHING_CHANGED = (
    "Nothing changed: every current attendee's invite already carries what the conference "
    "file says. Nothing was sent."
)
CANCELLED_SEAT = "registration cancelled"
# How often the wait for the worker's batch looks for a dead letter of the event too (a
# full read of the dead letters, so not on every poll).
DEAD_LETTER_EVERY = 1.0


@dataclass(frozen=True, slots=True)
class Group:
    """Recipients whose invites carry the same facts now, and what changes for them."""

    count: int
    lines: tuple[Line, ...]
    recorded: bool  # False: no invite of theirs is recorded (only a cancellation reaches them)


@dataclass(frozen=True, slots=True)
class Forecast:
    recipients: tuple[Seat, ...]
    groups: tuple[Group, ...]  # largest first
    not_sent: dict[str, int]  # why a seat gets nothing -> how many
    cancelled: bool  # the conference is cancelled: recipients get METHOD:CANCEL


def forecast(seats: Iterable[Seat], conf: Conference) -> Forecast:
    """Who would get an update announced now, grouped by what their invites carry."""
    recipients: list[Seat] = []
    carried: Counter[str | None] = Counter()
    not_sent: Counter[str] = Counter()
    for seat in seats:
        if seat.status != "active":
            not_sent[CANCELLED_SEAT] += 1
        elif would_update(seat, conf):
            recipients.append(seat)
            carried[before(seat, conf)] += 1
        else:
            not_sent[prepare(_probe(seat, conf), seat, conf).reason] += 1
    groups = tuple(
        Group(count, describe(facts, conf.invite_facts), facts is not None)
        for facts, count in carried.most_common()
    )
    return Forecast(tuple(recipients), groups, dict(not_sent), conf.cancelled)


def _probe(seat: Seat, conf: Conference) -> Notice:
    # The batch's notice as the worker plans it; prepare turns it into a conference
    # cancellation when the file says cancelled = true.
    return Notice("dry-run", Kind.UPDATE, conf.slug, seat.registration, seat.attendee)


def show(fc: Forecast, conf: Conference) -> None:
    """The forecast in the console: English around, the change lines in Danish as the mail
    shows them."""
    say = _say
    n = len(fc.recipients)
    if fc.cancelled:
        say(
            f"{conf.title} is cancelled (cancelled = true in its file): every current attendee "
            f"whose invite does not say so yet gets a cancellation of the conference "
            f"(METHOD:CANCEL): {n} recipient(s)."
        )
    else:
        say(f"Changes in {conf.title}, grouped by what the attendees' invites carry now:")
    for group in fc.groups:
        head = f"  {group.count} deltager(e): "
        lines = [f"{line.label}: {line.before} → {line.after}" for line in group.lines]
        if not lines:
            lines = ["(the invite is sent again)" if group.recorded else "(no invite recorded yet)"]
        say(head + lines[0])
        for line in lines[1:]:
            say(" " * len(head) + line)
    if not fc.cancelled:
        say(f"{n} recipient(s) get an update (METHOD:REQUEST, same UID, higher SEQUENCE).")
    for reason, count in sorted(fc.not_sent.items()):
        say(f"  not sent to {count}: {reason}")


def _say(line: str) -> None:
    # The texts come from the conference file: no rich markup, no reflowing of the lines.
    console.print(line, markup=False, highlight=False, soft_wrap=True)


def seats_of(client: redis.Redis, conf: Conference) -> list[Seat]:
    outbox = Outbox(client)
    pages = Batches(client, outbox, Roster(client, outbox)).pages(conf.slug)
    return [seat for page in pages for seat in page]


def write_sample(
    settings: Settings, conf: Conference, seat: Seat, now: datetime, out: Path
) -> None:
    """The first recipient's mail, prepared and composed as the worker would."""
    notice = prepare(_probe(seat, conf), seat, conf).notice
    assert notice is not None  # the seat is a recipient
    msg = compose(notice, conf, renderer(settings.templates_dir), now=now)
    out.write_bytes(msg.data)
    _say(f"Sample mail ({notice.kind.value}, to registration {seat.registration}): {out}")


def update_command(
    settings: Settings,
    conference: str,
    dry: bool,
    allow_past: bool,
    timeout: float,
    out: Path,
    *,
    as_json: bool = False,
) -> None:
    """With as_json, the forecast and the summary are one JSON document on stdout
    (forecast_document, then the batch's status); notes go to stderr."""
    with ops.json_output(as_json):
        conf = ops.load_conference(settings, conference)
        now = datetime.now(UTC)
        ops.refuse_if_past(conf, now, allow_past, what="updates")
        client = ops.redis_client(settings)
        fc = forecast(seats_of(client, conf), conf)
        doc = forecast_document(fc, conf, dry)
        if not as_json:
            show(fc, conf)
        if not fc.recipients or dry:
            _stop_early(settings, conf, fc, now, out, doc if as_json else None)
            return
        started = time.monotonic()
        event_id = publish_update(settings, conf, now)
        _say(f"Published {event_id}; waiting for a worker to plan the update batch.")
        key = wait_for_batch(client, event_id, timeout)
        _say(f"A worker took it as batch {key}: `notifier status --batch {key}`")
        _check_announced(client, conf)
        left = max(timeout - (time.monotonic() - started), 1.0)
        ops.summarise(client, key, left, as_json, forecast=doc | {"event": event_id})


def _stop_early(
    settings: Settings,
    conf: Conference,
    fc: Forecast,
    now: datetime,
    out: Path,
    doc: dict[str, Any] | None,
) -> None:
    """Nothing changed, or a dry run: say so (and write the sample mail); `doc`: --json's."""
    sample = None
    if not fc.recipients:
        _say(NOTHING_CHANGED)
    else:
        _say("Dry run: nothing was published or sent.")
        write_sample(settings, conf, fc.recipients[0], now, out)
        sample = str(out)
    if doc is not None:
        ops.emit(doc | {"sample": sample})


def forecast_document(fc: Forecast, conf: Conference, dry: bool) -> dict[str, Any]:
    """The forecast as JSON: what `show` prints, as data (the change lines in Danish)."""
    return {
        "conference": conf.slug,
        "dry_run": dry,
        "changed": bool(fc.recipients),
        "cancelled": fc.cancelled,
        "recipients": len(fc.recipients),
        "groups": [
            {
                "count": g.count,
                "recorded": g.recorded,
                "changes": [
                    {
                        "aspect": line.aspect,
                        "label": line.label,
                        "before": line.before,
                        "after": line.after,
                    }
                    for line in g.lines
                ],
            }
            for g in fc.groups
        ],
        "not_sent": fc.not_sent,
    }


def publish_update(settings: Settings, conf: Conference, now: datetime) -> str:
    """Publish one `conference.updated` event, once the workers can have read the file as
    it is here; returns its id. A new id every time: the worker maps the same facts to the
    same batch, so publishing twice plans nothing twice."""
    _let_workers_read(settings, conf)
    event_id = f"update:{conf.slug}:{uuid4()}"
    event = {
        "id": event_id,
        "type": "conference.updated",
        "occurred_at": now.isoformat(),
        "conference": conf.slug,
    }
    ops.publish_events(settings, [event])
    return event_id


def _let_workers_read(settings: Settings, conf: Conference) -> None:
    """Wait until the workers have read a file edited moments ago: they look at it again at
    most CHECK_SECONDS later, and one that still had the old version would announce it."""
    path = settings.conferences_dir / f"{conf.slug}.toml"
    try:
        age = time.time() - path.stat().st_mtime
    except OSError:
        return
    if 0 <= age < CHECK_SECONDS:
        time.sleep(CHECK_SECONDS - age + 0.1)


def wait_for_batch(client: redis.Redis, event_id: str, timeout: float) -> str:
    """The batch key the worker recorded for the event (its event marker); stops with the
    reason if the event became a dead letter. Rides out a Redis restart like `follow`."""
    deadline = time.monotonic() + timeout
    outage = ops.Outage("", ops.RECONNECT_SECONDS)
    next_dead_check = time.monotonic() + DEAD_LETTER_EVERY
    while True:
        try:
            raw = client.get(keys.event(event_id))
            if raw is None and time.monotonic() >= next_dead_check:
                next_dead_check = time.monotonic() + DEAD_LETTER_EVERY
                _refuse_if_dead(client, event_id)
        except ops.REDIS_DOWN as exc:
            outage.lost(exc)
        else:
            outage.back()
            if raw is not None:
                return str(json.loads(text(raw))["batch"])
        if time.monotonic() > deadline:
            raise click.ClickException(
                f"no worker planned the update within {timeout:.0f} s. The event stays on the "
                "queue and is planned when a worker runs: `notifier status`"
            )
        time.sleep(ops.POLL_SECONDS)


def _refuse_if_dead(client: redis.Redis, event_id: str) -> None:
    for letter in DeadLetters(client).list():
        if letter.event_id == event_id:
            raise click.ClickException(
                f"the worker could not process the update ({letter.reason}); it is kept as "
                f"dead letter {letter.id}: `notifier dead-letters`"
            )


def _check_announced(client: redis.Redis, conf: Conference) -> None:
    """Warn when the workers announced other facts than the file read here (another copy of
    the file on the workers' machines, or an edit made while this command ran)."""
    announced = client.hget(keys.updates(conf.slug), "facts")
    if announced is not None and text(announced) != conf.invite_facts.text("REQUEST"):
        console.print(
            "[yellow]Warning:[/] the workers announced other facts than the conference file "
            "read here states. The batch follows what the workers read; check that they use "
            "the same file, then run `notifier update` again.",
            highlight=False,
        )
