"""The bounce and suppression commands: `notifier bounces receive|poll`, `notifier suppressions`.

`receive` is run by an MTA for every message to the bounce address, so its exit status is
the MTA's instruction: 0 once the outcome is recorded (also for mail it does not recognise or
refuses unread as too large, so that the MTA never bounces the bounce) or 75, EX_TEMPFAIL,
for a report that was not applied: the store cannot record it (Redis down, settings missing),
its message's send is not recorded yet, or processing it failed. The MTA keeps it and tries
again later.
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
from notifier.intake import RETRY, TOO_LARGE, Intake
from notifier.ops import console, redis_client
from notifier.settings import Settings
from notifier.store.bouncelog import BounceLog
from notifier.store.suppressions import ORGANISER, Suppressions

EX_TEMPFAIL = 75
CHUNK = 1024 * 1024


class _OneLine(logging.Handler):
    """flufl.bounce logs a detector's exception with its traceback (log.exception): one line
    naming the exception's type instead, so that no third-party traceback (nor the report's
    words in it) reaches the MTA's log."""

    def emit(self, record: logging.LogRecord) -> None:
        kind = record.exc_info[0].__name__ if record.exc_info and record.exc_info[0] else ""
        logging.getLogger("notifier").warning(
            "flufl.bounce: a detector failed%s", f" ({kind})" if kind else ""
        )


def quiet_flufl() -> None:
    flufl = logging.getLogger("flufl.bounce")
    flufl.handlers[:] = [_OneLine()]
    flufl.propagate = False


def _log_to_stderr(settings: Settings) -> None:
    """The intake's and flufl.bounce's log lines on stderr, addresses masked (an MTA keeps a
    pipe command's output in its log)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logs.formatter(settings.log_format))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.WARNING)
    logging.getLogger("notifier").setLevel(logging.INFO)
    quiet_flufl()


def _read(stream: BinaryIO, limit: int) -> bytes | None:
    """At most `limit` bytes of the stream; None when it holds more (the rest is read and
    dropped, so that the MTA's pipe sees its message taken whole)."""
    raw = stream.read(limit + 1)
    if len(raw) <= limit:
        return raw
    while stream.read(CHUNK):
        pass
    return None


def receive_command(settings: Settings, stream: BinaryIO) -> None:
    _log_to_stderr(settings)
    raw = _read(stream, settings.bounce_max_bytes)
    try:
        client = redis.Redis.from_url(settings.redis_url, socket_connect_timeout=5)
        intake = Intake(settings, client)
        outcome = intake.refuse(TOO_LARGE) if raw is None else intake.receive(raw)
    except (StoreUnavailable, ConfigError, redis.RedisError) as exc:
        click.echo(f"notifier bounces receive: cannot record the report now: {exc}", err=True)
        sys.exit(EX_TEMPFAIL)
    click.echo(f"notifier bounces receive: {outcome}")
    if outcome in RETRY:
        # Not applied (its send is not recorded yet, or processing failed): the MTA keeps
        # the report and tries again.
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
        # Not ops.redis_client: its failure is exit status 1. Redis down at the start is 75,
        # as Redis down later is (a timer or cron tries again).
        client = redis.Redis.from_url(settings.redis_url, socket_connect_timeout=5)
        intake = Intake(settings, client)
        intake.log.stats()
        report = poll(cfg, intake, limit=limit, max_bytes=settings.bounce_max_bytes)
    except (StoreUnavailable, redis.RedisError) as exc:
        click.echo(f"stopped: Redis did not answer: {type(exc).__name__}", err=True)
        sys.exit(EX_TEMPFAIL)
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
