"""Organiser commands: remind (with a progress bar), status, dead-letters, purge; the parts
that `notifier update` (notifier.announce) shares with remind."""

from __future__ import annotations

import json
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import click
import redis
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table

from notifier.domain.conference import Conference
from notifier.domain.itip import prepare
from notifier.domain.notice import Kind, Notice
from notifier.errors import ConfigError, UnknownBatch
from notifier.loading import Conferences, renderer
from notifier.mail import danish
from notifier.mail.compose import compose
from notifier.settings import Settings
from notifier.store.batches import Batches, batch_key
from notifier.store.bouncelog import RECENT_SIGNAL_DAYS, BounceLog, Signal
from notifier.store.deadletter import DeadLetters, Replay
from notifier.store.gate import Pacing, pacing
from notifier.store.outbox import Outbox
from notifier.store.purge import PurgeRefused, purge
from notifier.store.roster import Roster
from notifier.store.status import Failure, Status, eta, status

console = Console()
DEFAULT_BATCH = "reminder"
WAITING = "waiting for a worker to plan the batch"
POLL_SECONDS = 0.2
# How long `remind` waits for Redis to answer again before it stops following (the workers go
# on with the batch either way). A restart from the AOF is over in seconds.
RECONNECT_SECONDS = 300.0
# A restarting Redis refuses connections, resets them, or answers LOADING (BusyLoadingError,
# a ConnectionError): all of them mean "ask again shortly".
REDIS_DOWN = (redis.ConnectionError, redis.TimeoutError)
# Publishing through a Redis restart: kombu retries with these pauses (about half a minute in
# all). A publish that landed before its error is repeated harmlessly: events are idempotent.
PUBLISH_RETRY = {"max_retries": 30, "interval_start": 0.2, "interval_step": 0.2, "interval_max": 1}
T = TypeVar("T")


def load_conference(settings: Settings, slug: str) -> Conference:
    known = Conferences(settings.conferences_dir)
    try:
        return known.get(slug)
    except ConfigError as exc:
        raise click.ClickException(f"{exc} (known: {', '.join(known.slugs()) or 'none'})") from None


def redis_client(settings: Settings, wait: float = 0.0) -> redis.Redis:
    """A client that has answered a PING; it is tried for up to `wait` s while Redis is down."""
    client = redis.Redis.from_url(settings.redis_url, socket_connect_timeout=5)
    _retrying(client.ping, wait, "cannot reach Redis at NOTIFIER_REDIS_URL")
    return client


def _retrying(call: Callable[[], T], wait: float, failure: str) -> T:
    """call(), tried again for up to `wait` seconds while Redis is down or restarting."""
    deadline = time.monotonic() + wait
    said = False
    while True:
        try:
            return call()
        except (redis.RedisError, OSError) as exc:
            if not isinstance(exc, REDIS_DOWN) or time.monotonic() >= deadline:
                raise click.ClickException(f"{failure}: {exc}") from None
            if not said:
                console.print(f"Redis does not answer; retrying for at most {wait:.0f} s")
                said = True
        time.sleep(POLL_SECONDS)


def refuse_if_past(
    conf: Conference, now: datetime, allow_past: bool, what: str = "reminders"
) -> None:
    if conf.has_passed(now) and not allow_past:
        raise click.ClickException(
            f"{conf.title} took place {danish.long_date(conf.date)} ({conf.date.isoformat()}); "
            f"{what} for a past conference are refused. Use --allow-past to send anyway."
        )


def refuse_if_cancelled(conf: Conference) -> None:
    if conf.cancelled:
        raise click.ClickException(
            f"{conf.title} ({conf.slug}) is cancelled (cancelled = true in its file): no "
            "reminders are sent. `notifier update` tells the attendees, if it has not yet."
        )


def dry_run(settings: Settings, conf: Conference, now: datetime, out: Path) -> dict[str, Any]:
    """Count the recipients and write one sample mail; what it found, for --json."""
    client = redis_client(settings)
    outbox = Outbox(client)
    roster = Roster(client, outbox)
    seats = [s for page in Batches(client, outbox, roster).pages(conf.slug) for s in page]
    active = [s for s in seats if s.status == "active" and (s.registered_at or s.as_of) <= now]
    console.print(
        f"Dry run: {len(active)} current attendee(s) of {conf.title} would get a "
        f"reminder ({len(seats) - len(active)} seat(s) cancelled or newer). "
        "Nothing was sent or published."
    )
    found: dict[str, Any] = {
        "recipients": len(active),
        "not_sent": len(seats) - len(active),
        "sample": None,
        "sample_registration": None,
    }
    if not active:
        return found
    seat = active[0]
    probe = Notice("dry-run", Kind.REMINDER, conf.slug, seat.registration, seat.attendee)
    notice = prepare(probe, seat, conf).notice
    assert notice is not None  # an active seat of a conference that is not cancelled
    msg = compose(notice, conf, renderer(settings.templates_dir), now=now)
    out.write_bytes(msg.data)
    console.print(f"Sample mail (to registration {seat.registration}): {out}")
    return found | {"sample": str(out), "sample_registration": seat.registration}


def _columns() -> tuple[ProgressColumn, ...]:
    return (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn(
            "sent {task.fields[sent]} · failed {task.fields[failed]} · "
            "skipped {task.fields[skipped]} · retrying {task.fields[retrying]} · "
            "unknown {task.fields[unknown]}"
        ),
        TimeElapsedColumn(),
    )


class Outage:
    """Since when Redis has not answered `remind`: shown on the bar, and bounded."""

    def __init__(self, key: str, limit: float) -> None:
        self.key = key
        self.limit = limit
        self.since: float | None = None

    def lost(self, exc: Exception) -> str:
        """The bar's description while reconnecting; gives up after `limit` seconds."""
        now = time.monotonic()
        if self.since is None:
            self.since = now
            console.print(
                f"Redis does not answer ({type(exc).__name__}): reconnecting for at most "
                f"{self.limit:.0f} s. The workers go on with the batch meanwhile.",
                highlight=False,
            )
        away = now - self.since
        if away > self.limit:
            where = f" --batch {self.key}" if self.key else ""  # no key: not known yet
            raise click.ClickException(
                f"Redis has not answered for {away:.0f} s; stopped following. The batch "
                f"goes on: `notifier status{where}`"
            )
        return f"reconnecting to Redis ({away:.0f} s of at most {self.limit:.0f} s)"

    def back(self) -> None:
        if self.since is not None:
            away = time.monotonic() - self.since
            console.print(f"Redis answers again after {away:.0f} s; following on.")
            self.since = None


def follow(
    client: redis.Redis,
    key: str,
    timeout: float,
    *,
    reconnect: float = RECONNECT_SECONDS,
    quiet: bool = False,
) -> Status:
    """Show a progress bar until every message of the batch is settled. When Redis stops
    answering (a restart), the bar says it is reconnecting, for at most `reconnect` s.
    quiet: follow without the bar (--json)."""
    deadline = time.monotonic() + timeout
    outage = Outage(key, reconnect)
    with Progress(*_columns(), console=console, transient=False, disable=quiet) as bar:
        task = bar.add_task(WAITING, total=None, sent=0, failed=0, skipped=0, retrying=0, unknown=0)
        while True:
            try:
                st = _batch_status(client, key)
            except REDIS_DOWN as exc:
                bar.update(task, description=outage.lost(exc))
            else:
                outage.back()
                if _show(bar, task, key, st):
                    assert st is not None
                    return st
            if time.monotonic() > deadline:
                raise click.ClickException(
                    f"gave up following after {timeout:.0f} s; the batch "
                    f"goes on: `notifier status --batch {key}`"
                )
            time.sleep(POLL_SECONDS)


def _show(bar: Progress, task: TaskID, key: str, st: Status | None) -> bool:
    """Put the batch's counts on the bar; True once every message is settled."""
    if st is None or st.batch is None or st.batch.state != "planned":
        bar.update(task, description=WAITING)
        return False
    what = "updates" if st.batch.kind is Kind.UPDATE else "reminders"
    bar.update(
        task,
        description=f"{what} {key}",
        total=st.batch.total,
        completed=st.finished,
        sent=st.counts["sent"],
        failed=st.counts["failed"],
        skipped=st.counts["skipped"],
        retrying=st.counts["retrying"],
        unknown=st.counts["unknown"],
    )
    return st.done


def _batch_status(client: redis.Redis, key: str) -> Status | None:
    try:
        return status(client, key, failures=False)
    except UnknownBatch:  # not opened yet: the worker has not taken the event
        return None


def print_status(st: Status, title: str) -> None:
    table = Table(title=title, min_width=len(title))  # a batch key is long: keep it on a line
    table.add_column("state")
    table.add_column("messages", justify="right")
    for state, count in st.counts.items():
        table.add_row(state, str(count))
    if st.batch is not None and st.batch.state == "planned":
        table.add_row("[bold]batch size[/]", str(st.batch.total))
    elif st.batch is not None:
        table.add_row("[bold]batch size[/]", f"planning: {st.total} so far")
    console.print(table)
    for title, rows in (
        ("failed", st.failures),
        ("delivery unknown: the relay may have these (no reply to the final dot)", st.unknown),
        (
            "bounced: accepted by the relay, then reported undeliverable (status, diagnostic)",
            st.bounced,
        ),
        ("suppressed: not sent, the address is on the suppression list", st.suppressed),
    ):
        if rows:
            console.print(_message_table(title, rows))
    if st.bounced:
        console.print(_count_table("bounced: by reason", "reason", st.bounce_reasons))


def _count_table(title: str, column: str, counts: dict[str, int]) -> Table:
    table = Table(title=title)
    table.add_column(column)
    table.add_column("messages", justify="right")
    for name, count in counts.items():
        table.add_row(name or "(not recorded)", str(count))
    return table


def print_signals(signals: list[Signal]) -> None:
    """Our side's problems that bounce reports named recently (blocklists, authentication,
    policy...): the organisers' mail server or domain needs looking at."""
    if not signals:
        return
    table = Table(title=f"reports of a problem on our side (last {RECENT_SIGNAL_DAYS} days)")
    for col in ("reason", "reports", "last (UTC)"):
        table.add_column(col)
    for s in signals:
        table.add_row(s.reason, str(s.count), _utc(s.last_at))
    console.print(table)


def _utc(at: float) -> str:
    return datetime.fromtimestamp(at, UTC).strftime("%Y-%m-%d %H:%M:%S") if at else "-"


def print_skipped(client: redis.Redis, key: str) -> None:
    """Why the batch's skipped messages were not sent, with counts (each skip records its
    reason as the message's last reply)."""
    reasons = _retrying(
        lambda: _skipped_reasons(client, key), RECONNECT_SECONDS, "cannot read the summary"
    )
    if not reasons:
        return
    table = Table(title="skipped: why")
    table.add_column("reason")
    table.add_column("messages", justify="right")
    for reason, count in reasons.most_common():
        table.add_row(reason, str(count))
    console.print(table)


def _skipped_reasons(client: redis.Redis, key: str) -> Counter[str]:
    outbox = Outbox(client)
    if not outbox.counts(key)["skipped"]:
        return Counter()
    records = outbox.records(sorted(outbox.keys_in(key)))
    return Counter(r.last_reply or "no reason recorded" for r in records if r.state == "skipped")


def _message_table(title: str, rows: tuple[Failure, ...]) -> Table:
    table = Table(title=title)
    reasons = any(f.reason for f in rows)
    for col in ("registration", "recipient", "attempts", "last SMTP reply"):
        table.add_column(col)
    if reasons:
        table.add_column("reason")
    for f in rows:
        cells = [f.registration, f.recipient, str(f.attempts), f.reply]
        table.add_row(*cells, *([f.reason or "-"] if reasons else []))
    return table


def remind_command(
    settings: Settings,
    conference: str,
    batch: str | None,
    dry: bool,
    allow_past: bool,
    timeout: float,
    out: Path,
    *,
    as_json: bool = False,
) -> None:
    with json_output(as_json):
        conf = load_conference(settings, conference)
        refuse_if_cancelled(conf)
        now = datetime.now(UTC)
        refuse_if_past(conf, now, allow_past)
        if dry:
            found = dry_run(settings, conf, now, out)
            if as_json:
                emit({"conference": conf.slug, "dry_run": True, **found})
            return
        batch_id = batch or DEFAULT_BATCH
        key = batch_key(conf.slug, batch_id)
        event = {
            "id": f"remind:{key}",
            "type": "reminder.requested",
            "occurred_at": now.isoformat(),
            "conference": conf.slug,
            "batch": {"id": batch_id},
        }
        publish_events(settings, [event])
        console.print(
            f"Requested batch {key}. The same command again sends nothing new; "
            "use --batch to send another round."
        )
        summarise(redis_client(settings, wait=RECONNECT_SECONDS), key, timeout, as_json)


def summarise(
    client: redis.Redis,
    key: str,
    timeout: float,
    as_json: bool,
    forecast: dict[str, Any] | None = None,
) -> None:
    """Follow the batch to its end, then its summary: tables, or one JSON document (with
    `notifier update`'s `forecast` in it). Exit status 1 if any message failed."""
    follow(client, key, timeout, quiet=as_json)
    st = _retrying(lambda: status(client, key), RECONNECT_SECONDS, "cannot read the summary")
    if as_json:
        reasons = _retrying(
            lambda: _skipped_reasons(client, key), RECONNECT_SECONDS, "cannot read the summary"
        )
        summary = status_document(st) | {"skipped_reasons": dict(reasons.most_common())}
        emit(summary if forecast is None else {"forecast": forecast} | summary)
    else:
        print_status(st, f"batch {key}")
        print_skipped(client, key)
    if st.failures:
        sys.exit(1)


def publish_events(settings: Settings, events: list[dict[str, Any]]) -> None:
    from kombu.exceptions import OperationalError

    from notifier.tasks import INGEST, QUEUE, create_app

    app = create_app(settings)
    try:
        with app.connection_for_write() as conn:
            conn.ensure_connection(max_retries=2)
            for event in events:
                app.send_task(
                    INGEST,
                    args=[event],
                    queue=QUEUE,
                    connection=conn,
                    retry=True,
                    retry_policy=PUBLISH_RETRY,
                )
    except (OSError, redis.RedisError, OperationalError) as exc:
        raise click.ClickException(f"cannot reach the broker: {exc}") from None
    finally:
        app.close()


def status_command(settings: Settings, batch: str | None, *, as_json: bool = False) -> None:
    with json_output(as_json):
        client = redis_client(settings)
        try:
            st = status(client, batch)
        except UnknownBatch as exc:
            raise click.ClickException(str(exc)) from None
        signals = BounceLog(client).recent_signals(time.time(), RECENT_SIGNAL_DAYS)
        pace = pacing(client, settings.rate_limit)
    if as_json:
        signal_rows = {"bounce_signals": [_signal(s) for s in signals]}
        emit(status_document(st) | signal_rows | pacing_document(st, pace))
    else:
        print_status(st, f"batch {st.batch.key}" if st.batch else "all messages")
        print_signals(signals)
        print_pacing(st, pace)


def pacing_document(st: Status, pace: Pacing) -> dict[str, Any]:
    """The pacing every worker goes by, and the batch's (or all messages') ETA."""
    until = pace.paused_until if pace.pause_left else None
    return {
        "pacing": {"cap": pace.cap, "learned_rate": pace.learned, "paused_until": until},
        "eta_seconds": eta(st, pace),
    }


def print_pacing(st: Status, pace: Pacing) -> None:
    learned = f"{pace.learned:.2f}/s (learned from the relay)" if pace.learned else "none"
    cap = f"{pace.cap:g}/s" if pace.cap else "none"
    line = f"pacing: cap {cap}, learned {learned}"
    if pace.pause_left:
        line += f", every sender paused for {pace.pause_left:.0f} s"
    console.print(line)
    left = eta(st, pace)
    if left is not None and not st.done:
        console.print(f"eta: about {left:.0f} s")


# -- --json: one document on stdout for scripts ---------------------------------------------


@contextmanager
def json_output(on: bool) -> Iterator[None]:
    """With --json, everything the console says (reconnecting, notes) goes to stderr, so
    that stdout holds the JSON document alone."""
    if not on:
        yield
        return
    # The flag, not the file: the console looks sys.stderr up when it writes, so a stream
    # replaced meanwhile (a test runner's) is never kept.
    before, console.stderr = console.stderr, True
    try:
        yield
    finally:
        console.stderr = before


def emit(document: dict[str, Any]) -> None:
    click.echo(json.dumps(document, ensure_ascii=False, indent=2))


def status_document(st: Status) -> dict[str, Any]:
    """`notifier status` as JSON. Listed messages carry the recipient's address in clear, as
    the table does: this is the organiser's own terminal, reading the same Redis. A script
    that stores the output stores personal data (see SECURITY.md)."""
    return {
        "batch": st.batch.key if st.batch else None,
        "kind": st.batch.kind.value if st.batch else None,
        "state": st.batch.state if st.batch else None,
        "counts": st.counts,
        "total": _total(st),
        "finished": st.finished,
        "done": st.done,
        "failures": [_row(f) for f in st.failures],
        "unknown": [_row(f) for f in st.unknown],
        "bounced": [_row(f) | {"reason": f.reason} for f in st.bounced],
        "bounce_reasons": st.bounce_reasons,
        "suppressed": [_row(f) for f in st.suppressed],
    }


def _signal(s: Signal) -> dict[str, Any]:
    at = datetime.fromtimestamp(s.last_at, UTC).isoformat() if s.last_at else None
    return {"reason": s.reason, "count": s.count, "last_at": at}


def _total(st: Status) -> int | None:
    """The batch's size once planned (None while it is planned); all messages without one."""
    if st.batch is None:
        return st.total
    return st.batch.total if st.batch.state == "planned" else None


def _row(f: Failure) -> dict[str, Any]:
    return {
        "key": f.key,
        "registration": f.registration,
        "recipient": f.recipient,
        "attempts": f.attempts,
        "reply": f.reply,
    }


def dead_letters_command(settings: Settings, replay: str | None, replay_all: bool) -> None:
    dead = DeadLetters(redis_client(settings))
    letters = dead.list()
    if replay or replay_all:
        chosen = [d for d in letters if replay_all or d.id == replay]
        if replay and not chosen:
            raise click.ClickException(f"no dead letter {replay}")
        if replay and chosen[0].purged_at is not None:
            raise click.ClickException(f"dead letter {replay} was purged: nothing to replay")
        from notifier.tasks import INGEST, QUEUE, create_app

        app = create_app(settings)
        try:
            with app.connection_for_write() as conn:

                def send(event: dict[str, Any]) -> None:
                    # Returns once the broker holds the task: only then may the letter go.
                    conn.ensure_connection(max_retries=2)
                    app.send_task(INGEST, args=[event], queue=QUEUE, connection=conn)

                report = dead.replay(chosen, send)
        finally:
            app.close()
        _print_replay(report)
        if not report.complete:
            sys.exit(1)
        return
    table = Table(title=f"{len(letters)} dead letter(s)")
    for col in ("id", "time (UTC)", "type", "event id", "fields", "reason"):
        table.add_column(col, overflow="fold")
    for d in letters:
        at = datetime.fromtimestamp(d.at, UTC).strftime("%Y-%m-%d %H:%M:%S")
        table.add_row(
            d.id, at, d.event_type or "?", d.event_id or "?", ", ".join(d.fields), d.reason
        )
    console.print(table)


def _print_replay(report: Replay) -> None:
    console.print(
        f"replayed {len(report.replayed)} event(s); any that fail again come back here",
        highlight=False,
    )
    if report.not_events:
        console.print(
            f"not replayed, kept: {len(report.not_events)} whose payload is not an event "
            f"(a JSON object): {', '.join(report.not_events)}",
            highlight=False,
        )
    if report.not_tried:
        console.print(
            f"not replayed, kept: {len(report.not_tried)} after publishing failed "
            f"(cannot reach the broker: {report.error}): {', '.join(report.not_tried)}",
            highlight=False,
        )
    if report.purged:
        console.print(f"skipped {len(report.purged)} purged letter(s), kept for statistics")


def parse_now(value: str | None) -> datetime:
    """--now: an RFC 3339 timestamp with offset; the real clock without it."""
    if value is None:
        return datetime.now(UTC)
    try:
        now = datetime.fromisoformat(value)
    except ValueError:
        raise click.BadParameter(
            f"not an ISO 8601 timestamp: {value!r}", param_hint="--now"
        ) from None
    if now.tzinfo is None or now.utcoffset() is None:
        raise click.BadParameter(
            "needs a UTC offset, e.g. 2024-05-23T00:00:00+02:00", param_hint="--now"
        )
    return now


def purge_command(settings: Settings, conference: str, dry: bool, now_text: str | None) -> None:
    conf = load_conference(settings, conference)
    now = parse_now(now_text)
    try:
        report = purge(redis_client(settings), conf, now, dry_run=dry)
    except PurgeRefused as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(
        f"{'Dry run: ' if dry else ''}purge of {conf.slug} (retention ended "
        f"{report.retention_ends.isoformat()})"
    )
    for line in report.lines():
        click.echo(f"  {line}")
