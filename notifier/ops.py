"""Organiser commands: remind (with a progress bar), status, dead-letters, purge."""

from __future__ import annotations

import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click
import redis
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from notifier import danish
from notifier.batches import Batches, batch_key
from notifier.compose import compose
from notifier.conference import Conference, Conferences
from notifier.deadletter import DeadLetters
from notifier.errors import ConfigError
from notifier.notice import Kind, Notice
from notifier.outbox import Outbox
from notifier.plan import current_invite
from notifier.purge import PurgeRefused, purge
from notifier.render import renderer
from notifier.roster import Roster
from notifier.settings import Settings
from notifier.status import Status, status

console = Console()
DEFAULT_BATCH = "reminder"


def _conference(settings: Settings, slug: str) -> Conference:
    known = Conferences(settings.conferences_dir)
    try:
        return known.get(slug)
    except ConfigError as exc:
        raise click.ClickException(f"{exc} (known: {', '.join(known.slugs()) or 'none'})") from None


def _client(settings: Settings) -> redis.Redis:
    client = redis.Redis.from_url(settings.redis_url, socket_connect_timeout=5)
    try:
        client.ping()
    except (redis.RedisError, OSError) as exc:
        raise click.ClickException(f"cannot reach Redis at NOTIFIER_REDIS_URL: {exc}") from None
    return client


def refuse_if_past(conf: Conference, now: datetime, allow_past: bool) -> None:
    if conf.has_passed(now) and not allow_past:
        raise click.ClickException(
            f"{conf.title} took place {danish.long_date(conf.date)} ({conf.date.isoformat()}); "
            "reminders for a past conference are refused. Use --allow-past to send anyway."
        )


def dry_run(settings: Settings, conf: Conference, now: datetime, out: Path) -> None:
    client = _client(settings)
    outbox = Outbox(client)
    roster = Roster(client, outbox)
    seats = [s for page in Batches(client, outbox, roster).pages(conf.slug) for s in page]
    active = [s for s in seats if s.status == "active" and (s.registered_at or s.as_of) <= now]
    console.print(
        f"Dry run: {len(active)} current attendee(s) of {conf.title} would get a "
        f"reminder ({len(seats) - len(active)} seat(s) cancelled or newer). "
        "Nothing was sent or published."
    )
    if not active:
        return
    seat = active[0]
    notice = Notice(
        "dry-run",
        Kind.REMINDER,
        conf.slug,
        seat.registration,
        seat.attendee,
        invite=current_invite(seat, conf),
    )
    msg = compose(notice, conf, renderer(settings.templates_dir), now=now)
    out.write_bytes(msg.data)
    console.print(f"Sample mail (to registration {seat.registration}): {out}")


def follow(client: redis.Redis, key: str, timeout: float) -> Status:
    """Show a progress bar until every message of the batch is settled."""
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn(
            "sent {task.fields[sent]} · failed {task.fields[failed]} · "
            "skipped {task.fields[skipped]} · retrying {task.fields[retrying]}"
        ),
        TimeElapsedColumn(),
    )
    deadline = time.monotonic() + timeout
    with Progress(*columns, console=console, transient=False) as bar:
        task = bar.add_task(
            "waiting for a worker to plan the batch",
            total=None,
            sent=0,
            failed=0,
            skipped=0,
            retrying=0,
        )
        while True:
            st = _batch_status(client, key)
            if st is not None and st.batch is not None and st.batch.state == "planned":
                bar.update(
                    task,
                    description=f"reminders {key}",
                    total=st.batch.total,
                    completed=st.finished,
                    sent=st.counts["sent"],
                    failed=st.counts["failed"],
                    skipped=st.counts["skipped"],
                    retrying=st.counts["retrying"],
                )
                if st.done:
                    return st
            if time.monotonic() > deadline:
                raise click.ClickException(
                    f"gave up following after {timeout:.0f} s; the batch "
                    f"goes on: `notifier status --batch {key}`"
                )
            time.sleep(0.2)


def _batch_status(client: redis.Redis, key: str) -> Status | None:
    try:
        return status(client, key, failures=False)
    except LookupError:
        return None


def print_status(st: Status, title: str) -> None:
    table = Table(title=title)
    table.add_column("state")
    table.add_column("messages", justify="right")
    for state, count in st.counts.items():
        table.add_row(state, str(count))
    if st.batch is not None:
        table.add_row("[bold]batch size[/]", str(st.batch.total))
    console.print(table)
    if st.failures:
        failed = Table(title="failed")
        for col in ("registration", "recipient", "attempts", "last SMTP reply"):
            failed.add_column(col)
        for f in st.failures:
            failed.add_row(f.registration, f.recipient, str(f.attempts), f.reply)
        console.print(failed)


def remind_command(
    settings: Settings,
    conference: str,
    batch: str | None,
    dry: bool,
    allow_past: bool,
    timeout: float,
    out: Path,
) -> None:
    conf = _conference(settings, conference)
    now = datetime.now(UTC)
    refuse_if_past(conf, now, allow_past)
    if dry:
        dry_run(settings, conf, now, out)
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
    client = _client(settings)
    follow(client, key, timeout)
    st = status(client, key)
    print_status(st, f"batch {key}")
    if st.failures:
        sys.exit(1)


def publish_events(settings: Settings, events: list[dict[str, Any]]) -> None:
    from notifier.tasks import INGEST, QUEUE, create_app

    app = create_app(settings)
    try:
        with app.connection_for_write() as conn:
            conn.ensure_connection(max_retries=2)
            for event in events:
                app.send_task(INGEST, args=[event], queue=QUEUE, connection=conn)
    except (OSError, redis.RedisError) as exc:
        raise click.ClickException(f"cannot reach the broker: {exc}") from None
    finally:
        app.close()


def status_command(settings: Settings, batch: str | None) -> None:
    try:
        st = status(_client(settings), batch)
    except LookupError as exc:
        raise click.ClickException(str(exc)) from None
    print_status(st, f"batch {st.batch.key}" if st.batch else "all messages")


def dead_letters_command(settings: Settings, replay: str | None, replay_all: bool) -> None:
    dead = DeadLetters(_client(settings))
    letters = dead.list()
    if replay or replay_all:
        chosen = [d for d in letters if replay_all or d.id == replay]
        if replay and not chosen:
            raise click.ClickException(f"no dead letter {replay}")
        if replay and chosen[0].purged_at is not None:
            raise click.ClickException(f"dead letter {replay} was purged: nothing to replay")
        chosen = [d for d in chosen if d.purged_at is None]  # kept for statistics only
        publish_events(settings, [d.payload for d in chosen if isinstance(d.payload, dict)])
        for d in chosen:
            dead.remove(d.id)
        console.print(f"replayed {len(chosen)} event(s); any that fail again come back here")
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
    conf = _conference(settings, conference)
    now = parse_now(now_text)
    try:
        report = purge(_client(settings), conf, now, dry_run=dry)
    except PurgeRefused as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(
        f"{'Dry run: ' if dry else ''}purge of {conf.slug} (retention ended "
        f"{report.retention_ends.isoformat()})"
    )
    for line in report.lines():
        click.echo(f"  {line}")
