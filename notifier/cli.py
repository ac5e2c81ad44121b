"""The `notifier` command: worker, publish, preview, remind, update, status, dead-letters,
purge."""

from __future__ import annotations

import json
import os
import sys
from email import message_from_bytes, policy
from pathlib import Path
from typing import IO, Any

import click

from notifier import announce, ops
from notifier.domain.events import parse_event
from notifier.domain.notice import Kind
from notifier.errors import ConfigError, InvalidEvent
from notifier.loading import Conferences, renderer
from notifier.mail.compose import compose
from notifier.mail.samples import SAMPLE_NOW, sample_notice
from notifier.settings import Settings, load_settings

DEFAULT_CONFERENCE = "digitaliseringstraef-2024"
JSON_HELP = "One JSON document on stdout, for scripts (no progress bar or tables)."


def _settings() -> Settings:
    try:
        return load_settings(os.environ)
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """Danish conference mail: confirmations, reminders and substitution notices."""


@main.command(context_settings={"ignore_unknown_options": True, "allow_extra_args": True})
@click.pass_context
def worker(ctx: click.Context) -> None:
    """Run a Celery worker (same as `celery -A worker worker`); extra options go to Celery.

    Exits with the worker's status: non-zero after an unrecoverable error, so that a
    supervisor restarting on failure brings it back."""
    from notifier.tasks import QUEUE, create_app

    app = create_app(_settings())
    args = list(ctx.args)
    if not any(a in ("-Q", "--queues") or a.startswith("--queues=") for a in args):
        args += ["-Q", QUEUE]
    # Not app.worker_main(): it drops the status that app.start() returns, so a worker that
    # stopped on "Unrecoverable error" exited 0.
    code = app.start(["worker", *args])
    sys.exit(code or app.notifier_runtime.exitcode or 0)


def _read_events(stream: IO[str], known: Conferences) -> tuple[list[dict[str, Any]], list[str]]:
    good: list[dict[str, Any]] = []
    bad: list[str] = []
    for number, line in enumerate(stream, start=1):
        if not line.strip():
            continue
        try:
            parse_event(line, conferences=known)
            good.append(json.loads(line))
        except InvalidEvent as exc:
            for field, reason in exc.errors:
                bad.append(f"line {number}: {field}: {reason}")
    return good, bad


@main.command()
@click.argument("source", type=click.File("r", encoding="utf-8"))
def publish(source: IO[str]) -> None:
    """Validate events (JSON lines; - for stdin) and publish the valid ones."""
    settings = _settings()
    good, bad = _read_events(source, Conferences(settings.conferences_dir))
    for line in bad:
        click.echo(line, err=True)
    ops.publish_events(settings, good)
    click.echo(f"published {len(good)} event(s); {len(bad)} problem(s) in invalid lines")
    if bad:
        sys.exit(1)


@main.command()
@click.argument("kind", type=click.Choice([k.value for k in Kind]))
@click.option("--conference", default=DEFAULT_CONFERENCE, show_default=True)
@click.option(
    "--out",
    "out_dir",
    type=click.Path(path_type=Path),
    default=Path("preview-out"),
    show_default=True,
)
def preview(kind: str, conference: str, out_dir: Path) -> None:
    """Render a mail of KIND with sample data to .eml and .html files."""
    settings = _settings()
    try:
        conf = Conferences(settings.conferences_dir).get(conference)
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None
    notice = sample_notice(Kind(kind), conf)
    msg = compose(notice, conf, renderer(settings.templates_dir), now=SAMPLE_NOW)
    out_dir.mkdir(parents=True, exist_ok=True)
    eml = out_dir / f"{kind}.eml"
    eml.write_bytes(msg.data)
    parsed = message_from_bytes(msg.data, policy=policy.default)
    html_part = parsed.get_body(preferencelist=("html",))
    html = out_dir / f"{kind}.html"
    html.write_text(html_part.get_content() if html_part else "", encoding="utf-8")
    click.echo(f"Subject: {msg.subject}\nwrote {eml}\nwrote {html}")


@main.command()
@click.argument("conference")
@click.option("--batch", help="Batch id; without it the same command never sends twice.")
@click.option("--dry-run", is_flag=True, help="Count recipients and write one sample mail.")
@click.option("--allow-past", is_flag=True, help="Allow a conference that has taken place.")
@click.option("--timeout", default=3600.0, show_default=True, help="Seconds to follow.")
@click.option(
    "--out",
    type=click.Path(path_type=Path),
    default=Path("reminder-dry-run.eml"),
    show_default=True,
    help="Where --dry-run writes its sample mail.",
)
@click.option("--json", "as_json", is_flag=True, help=JSON_HELP)
def remind(
    conference: str,
    batch: str | None,
    dry_run: bool,
    allow_past: bool,
    timeout: float,
    out: Path,
    as_json: bool,
) -> None:
    """Send a reminder to every current attendee of CONFERENCE and follow it to the end."""
    ops.remind_command(
        _settings(), conference, batch, dry_run, allow_past, timeout, out, as_json=as_json
    )


@main.command()
@click.argument("conference")
@click.option("--dry-run", is_flag=True, help="Show the changes and write one sample mail.")
@click.option("--allow-past", is_flag=True, help="Allow a conference that has taken place.")
@click.option("--timeout", default=3600.0, show_default=True, help="Seconds to follow.")
@click.option(
    "--out",
    type=click.Path(path_type=Path),
    default=Path("update-dry-run.eml"),
    show_default=True,
    help="Where --dry-run writes its sample mail.",
)
@click.option("--json", "as_json", is_flag=True, help=JSON_HELP)
def update(
    conference: str, dry_run: bool, allow_past: bool, timeout: float, out: Path, as_json: bool
) -> None:
    """Announce what CONFERENCE's file says now: every current attendee whose invite differs
    gets an update (or, with cancelled = true, a cancellation), followed to the end."""
    announce.update_command(
        _settings(), conference, dry_run, allow_past, timeout, out, as_json=as_json
    )


@main.command()
@click.option("--batch", help="A batch id (or conference:batch-id).")
@click.option("--json", "as_json", is_flag=True, help=JSON_HELP)
def status(batch: str | None, as_json: bool) -> None:
    """Messages per delivery state; failed ones with their last SMTP reply."""
    ops.status_command(_settings(), batch, as_json=as_json)


@main.command("dead-letters")
@click.option("--replay", metavar="ID", help="Publish this dead letter again.")
@click.option("--replay-all", is_flag=True, help="Publish every dead letter again.")
def dead_letters(replay: str | None, replay_all: bool) -> None:
    """List the events that could not be processed, or replay them after a fix."""
    ops.dead_letters_command(_settings(), replay, replay_all)


@main.command()
@click.argument("conference")
@click.option("--dry-run", is_flag=True, help="Count what would be anonymised; change nothing.")
@click.option(
    "--now",
    "now_text",
    metavar="ISO",
    help="Judge the retention period as of this time (RFC 3339 with offset; for testing).",
)
def purge(conference: str, dry_run: bool, now_text: str | None) -> None:
    """Anonymise CONFERENCE's personal data once its retention period has passed."""
    ops.purge_command(_settings(), conference, dry_run, now_text)


@main.group()
def bounces() -> None:
    """Bounces and complaints that come back after the relay's 250."""


@bounces.command("receive")
def bounces_receive() -> None:
    """Read one raw message on stdin (for an MTA's pipe transport or an alias) and apply it.

    Exit status 0, also for mail that is not a bounce; 75 (EX_TEMPFAIL) while it cannot be
    recorded (Redis down), so that the MTA keeps it and tries again."""
    from notifier import bounce_ops

    try:
        settings = load_settings(os.environ)
    except ConfigError as exc:
        # Not exit 1: the MTA would bounce the bounce. 75 keeps it queued until fixed.
        click.echo(f"notifier bounces receive: {exc}", err=True)
        sys.exit(bounce_ops.EX_TEMPFAIL)
    bounce_ops.receive_command(settings, sys.stdin.buffer)


@bounces.command("poll")
@click.option("--limit", type=click.IntRange(min=1), help="At most this many messages.")
def bounces_poll(limit: int | None) -> None:
    """Read the bounce mailbox over IMAP (NOTIFIER_BOUNCE_IMAP_*); processed mail is moved to
    NOTIFIER_BOUNCE_IMAP_DONE_FOLDER. Exit status 75 if Redis stopped answering."""
    from notifier import bounce_ops

    bounce_ops.poll_command(_settings(), limit)


@main.group(invoke_without_command=True)
@click.pass_context
def suppressions(ctx: click.Context) -> None:
    """Addresses no mail goes to (hard bounces, complaints, organisers' additions)."""
    if ctx.invoked_subcommand is None:
        from notifier import bounce_ops

        bounce_ops.suppressions_list(_settings())


@suppressions.command("add")
@click.argument("address")
def suppressions_add(address: str) -> None:
    """Suppress ADDRESS: later messages to it settle as `suppressed` without SMTP."""
    from notifier import bounce_ops

    bounce_ops.suppressions_add(_settings(), address)


@suppressions.command("remove")
@click.argument("address")
def suppressions_remove(address: str) -> None:
    """Let mail go to ADDRESS again."""
    from notifier import bounce_ops

    bounce_ops.suppressions_remove(_settings(), address)


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=8080, show_default=True, type=click.IntRange(1, 65535))
@click.option(
    "--workers",
    default=1,
    show_default=True,
    type=click.IntRange(1, 64),
    help="Server processes (uvicorn workers), e.g. one per core.",
)
def serve(host: str, port: int, workers: int) -> None:
    """Run the HTTP API (events, organisers' requests, health; docs at /docs) until SIGTERM
    or SIGINT, which let running requests finish."""
    from notifier.api.app import serve as run

    run(_settings(), host, port, workers)


@main.group()
def tokens() -> None:
    """Bearer tokens for the HTTP API (stored only as SHA-256 digests)."""


@tokens.command("create")
@click.argument("name")
@click.option("--scope", type=click.Choice(["ingest", "organiser"]), required=True)
def tokens_create(name: str, scope: str) -> None:
    """Create a token; it is printed once, alone on the last line."""
    from notifier.api import admin

    admin.create_command(_settings(), name, "ingest" if scope == "ingest" else "organiser")


@tokens.command("list")
def tokens_list() -> None:
    """Name, scope, creation and revocation of every token (never the token)."""
    from notifier.api import admin

    admin.list_command(_settings())


@tokens.command("revoke")
@click.argument("name")
def tokens_revoke(name: str) -> None:
    """Stop the token NAME from working, at once."""
    from notifier.api import admin

    admin.revoke_command(_settings(), name)
