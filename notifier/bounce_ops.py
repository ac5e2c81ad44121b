"""The bounce and suppression commands: `notifier bounces receive|poll`, `notifier suppressions`.

`receive` is run by an MTA for every message to the bounce address, so its exit status is
the MTA's instruction: 0 (also for mail it does not recognise, so that the MTA never bounces
the bounce) or 75, EX_TEMPFAIL, while the report cannot be recorded (Redis down, settings
missing), so that the MTA keeps it and tries again later.
"""

from __future__ import annotations

import logging
import sys
from datetime import UTC, datetime
from typing import BinaryIO

import click
import redis
from email_validator import EmailNotValidError, validate_email
from rich.table import Table

from notifier import logs
from notifier.bounce_poll import ImapConfig, poll
from notifier.errors import ConfigError, MailboxUnavailable, StoreUnavailable
from notifier.intake import EARLY, Intake
from notifier.ops import console, redis_client
from notifier.settings import Settings
from notifier.store.bouncelog import BounceLog
from notifier.store.suppressions import ORGANISER, Suppressions

EX_TEMPFAIL = 75
# A bounce with the whole original message attached stays far below this; anything larger
# is not a report worth holding in memory.
MAX_REPORT_BYTES = 20 * 1024 * 1024


def _log_to_stderr(settings: Settings) -> None:
    """The intake's and flufl.bounce's log lines on stderr, addresses masked (an MTA keeps a
    pipe command's output in its log)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logs.formatter(settings.log_format))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.WARNING)
    logging.getLogger("notifier").setLevel(logging.INFO)


def receive_command(settings: Settings, stream: BinaryIO) -> None:
    _log_to_stderr(settings)
    raw = stream.read(MAX_REPORT_BYTES + 1)
    if len(raw) > MAX_REPORT_BYTES:
        click.echo("notifier bounces receive: larger than 20 MB: not a report, ignored")
        return
    try:
        client = redis.Redis.from_url(settings.redis_url, socket_connect_timeout=5)
        outcome = Intake(settings, client).receive(raw)
    except (StoreUnavailable, ConfigError, redis.RedisError) as exc:
        click.echo(f"notifier bounces receive: cannot record the report now: {exc}", err=True)
        sys.exit(EX_TEMPFAIL)
    click.echo(f"notifier bounces receive: {outcome}")
    if outcome == EARLY:
        # The message's send is not recorded yet: the MTA keeps the report and tries again.
        sys.exit(EX_TEMPFAIL)


def imap_config(settings: Settings) -> ImapConfig:
    password = settings.imap_password()
    if not settings.bounce_imap_host or not settings.bounce_imap_user or password is None:
        raise click.ClickException(
            "set NOTIFIER_BOUNCE_IMAP_HOST, NOTIFIER_BOUNCE_IMAP_USER and "
            "NOTIFIER_BOUNCE_IMAP_PASSWORD (or _FILE) to poll a bounce mailbox"
        )
    return ImapConfig(
        host=settings.bounce_imap_host,
        port=settings.bounce_imap_port,
        user=settings.bounce_imap_user,
        password=password,
        folder=settings.bounce_imap_folder,
        done_folder=settings.bounce_imap_done_folder,
        tls=settings.bounce_imap_tls,
        ca_file=settings.bounce_imap_ca_file,
    )


def poll_command(settings: Settings, limit: int | None) -> None:
    _log_to_stderr(settings)
    cfg = imap_config(settings)
    try:
        intake = Intake(settings, redis_client(settings))
        report = poll(cfg, intake, limit=limit)
    except (ConfigError, MailboxUnavailable) as exc:
        raise click.ClickException(str(exc)) from None
    counts = ", ".join(f"{n} {outcome}" for outcome, n in sorted(report.outcomes.items()))
    click.echo(f"processed {report.processed} message(s): {counts or 'none'}; left {report.left}")
    if report.store_unavailable:
        click.echo("stopped: Redis did not answer; the rest stays in the folder", err=True)
        sys.exit(EX_TEMPFAIL)


def _address(value: str) -> str:
    try:
        return validate_email(value, check_deliverability=False).normalized
    except EmailNotValidError as exc:
        # Named, so that whoever typed (or pasted) it sees which value was refused; this is
        # the operator's own input on their terminal, not a log.
        raise click.BadParameter(f"{value!r}: {exc}", param_hint="ADDRESS") from None


def suppressions_list(settings: Settings) -> None:
    client = redis_client(settings)
    entries = Suppressions(client).list()
    table = Table(title=f"{len(entries)} suppressed address(es)")
    for col in ("address", "reason", "since (UTC)", "message"):
        table.add_column(col, overflow="fold")
    for s in entries:
        at = datetime.fromtimestamp(s.at, UTC).strftime("%Y-%m-%d %H:%M:%S")
        table.add_row(s.address, s.reason, at, s.message or "")
    console.print(table)
    stats = BounceLog(client).stats()
    if stats:
        line = ", ".join(f"{n} {outcome}" for outcome, n in sorted(stats.items()))
        console.print(f"reports received: {line}", highlight=False)


def suppressions_add(settings: Settings, address: str) -> None:
    Suppressions(redis_client(settings)).add(
        _address(address), ORGANISER, message=None, now=datetime.now(UTC).timestamp()
    )
    click.echo("suppressed: no further mail goes to this address")


def suppressions_remove(settings: Settings, address: str) -> None:
    if not Suppressions(redis_client(settings)).remove(_address(address)):
        raise click.ClickException("that address is not suppressed")
    click.echo("removed: mail goes to this address again")
