"""Reading bounces from an IMAP mailbox: `notifier bounces poll`.

An organisation on hosted mail cannot pipe bounces into a command, but it can give the
bounce address a mailbox. Each poll hands every message in that mailbox's folder, oldest
first and as the exact bytes the server stores, to the same intake `notifier bounces receive`
uses, and once the intake has returned moves the message to a folder of processed mail. So a
message leaves the folder only after its outcome is recorded: a poll that dies half way
leaves at most the message in hand to be read again, and the intake counts a DSN seen twice
once.

When the store is down (the intake raises StoreUnavailable) the poll stops at once and leaves
that message and the rest where they are, for the next poll.

TLS is always on and always verified (implicit TLS or STARTTLS, against the system's trust
store or `ca_file`). Nothing here logs an address: only counts of outcomes.
"""

from __future__ import annotations

import imaplib
import logging
import re
import ssl
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Protocol

from imap_tools import BaseMailBox, MailBox, MailBoxStartTls
from imap_tools.errors import (
    ImapToolsError,
    MailboxFolderCreateError,
    MailboxFolderSelectError,
    MailboxLoginError,
    MailboxStarttlsError,
    UnexpectedCommandStatusError,
)

from notifier.errors import ConfigError, MailboxUnavailable, NotifierError, StoreUnavailable

log = logging.getLogger(__name__)
# Outcomes that leave the message in the folder: the receiver could not apply it yet (a
# report about a message whose send is not recorded yet, or one whose processing failed).
KEEP = frozenset({"early", "error"})
TOO_LARGE = "too_large"

# Messages per FETCH: few round trips, yet memory stays bounded when the folder has
# thousands (a DSN may carry the whole original message).
BULK = 20
FETCHED_UID = re.compile(rb"\bUID (\d+)")
FETCHED_SIZE = re.compile(rb"\bRFC822\.SIZE (\d+)")


@dataclass(frozen=True)
class ImapConfig:
    """Where the bounce mailbox is and how to reach it. `tls` is "tls" (implicit, usually
    port 993) or "starttls" (usually 143); there is no plain mode."""

    host: str
    port: int
    user: str
    password: str = field(repr=False)
    folder: str = "INBOX"
    done_folder: str = "notifier-processed"
    tls: Literal["tls", "starttls"] = "tls"
    ca_file: Path | None = None
    timeout: float = 30.0

    def __post_init__(self) -> None:
        if self.tls not in ("tls", "starttls"):
            raise ConfigError(f"IMAP tls must be 'tls' or 'starttls', not {self.tls!r}")
        if self.folder == self.done_folder:
            raise ConfigError(
                f"IMAP folder and processed folder are both {self.folder!r}: "
                "processed mail would be read again"
            )

    @property
    def where(self) -> str:
        """For error messages: user and server, never the password."""
        return f"{self.user} at {self.host}:{self.port}"


class Receiver(Protocol):
    def receive(self, raw: bytes) -> str:
        """Take one raw message; return the name of its outcome. Raises StoreUnavailable
        when the store could not record it."""
        ...

    def refuse(self, outcome: str) -> str:
        """Count a message refused unread (too large); raises StoreUnavailable likewise."""
        ...


@dataclass(frozen=True)
class PollReport:
    """processed: messages received and moved; outcomes: how many of each outcome;
    left: messages still in the folder of those the poll saw (the limit, or the store going
    down, left them); store_unavailable: the poll stopped because the store was down."""

    processed: int
    outcomes: dict[str, int]
    left: int
    store_unavailable: bool = False


def poll(
    cfg: ImapConfig,
    receiver: Receiver,
    *,
    limit: int | None = None,
    max_bytes: int | None = None,
) -> PollReport:
    """Receive every message in cfg.folder (at most `limit`), oldest first, moving each to
    cfg.done_folder once received. A message over `max_bytes` (by the server's RFC822.SIZE)
    is not fetched: it is counted as too large and moved. Raises ConfigError for a refused
    login or TLS failure and MailboxUnavailable when the server cannot be reached or drops
    the session."""
    with _session(cfg) as box:
        with _imap_errors(cfg):
            uids = sorted(box.uids("ALL"), key=int)
            todo = uids if limit is None else uids[: max(limit, 0)]
            if todo:
                _ensure_folder(box, cfg.done_folder)
        outcomes: Counter[str] = Counter()
        for start in range(0, len(todo), BULK):
            with _imap_errors(cfg):
                fetched = _fetch(box, todo[start : start + BULK], max_bytes)
            for uid, raw in fetched:
                # Outside _imap_errors: the intake's own errors are not the mailbox's.
                try:
                    outcome = receiver.refuse(TOO_LARGE) if raw is None else receiver.receive(raw)
                except StoreUnavailable:
                    return _report(outcomes, len(uids), store_unavailable=True)
                outcomes[outcome] += 1
                if outcome in KEEP:
                    continue  # to be received again by a later poll
                with _imap_errors(cfg):
                    box.move(uid, cfg.done_folder)
        return _report(outcomes, len(uids))


def _report(outcomes: Counter[str], seen: int, *, store_unavailable: bool = False) -> PollReport:
    processed = outcomes.total()
    kept = sum(outcomes[k] for k in KEEP)  # received but left in the folder for later
    report = PollReport(processed, dict(outcomes), seen - processed + kept, store_unavailable)
    # Counts only: the messages carry attendee addresses.
    log.info(
        "bounce poll: %d processed %s, %d left%s",
        report.processed,
        dict(sorted(report.outcomes.items())),
        report.left,
        " (store unavailable, stopped)" if store_unavailable else "",
    )
    return report


@contextmanager
def _session(cfg: ImapConfig) -> Iterator[BaseMailBox]:
    with _imap_errors(cfg, connecting=True):
        box = _connect(cfg)
    try:
        with _imap_errors(cfg, connecting=True):
            box.login(cfg.user, cfg.password, cfg.folder)
        yield box
    finally:
        # The work is done (or failed already); a rude goodbye changes nothing.
        with suppress(OSError, imaplib.IMAP4.error, ImapToolsError):
            box.logout()


def _connect(cfg: ImapConfig) -> BaseMailBox:
    try:
        context = ssl.create_default_context(cafile=str(cfg.ca_file) if cfg.ca_file else None)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"IMAP CA file {cfg.ca_file} cannot be used: {exc}") from exc
    if cfg.tls == "tls":
        return MailBox(cfg.host, cfg.port, timeout=cfg.timeout, ssl_context=context)
    return MailBoxStartTls(cfg.host, cfg.port, timeout=cfg.timeout, ssl_context=context)


@contextmanager
def _imap_errors(cfg: ImapConfig, *, connecting: bool = False) -> Iterator[None]:
    """Turn imap-tools', imaplib's and ssl's errors into ours. A step that fails while
    connecting or logging in is the configuration's fault unless the network is (refused,
    timeout, reset); later every failure is the server's or the network's, and the next poll
    tries again."""
    try:
        yield
    except NotifierError:
        raise
    except ssl.SSLError as exc:
        raise _tls_error(cfg, exc, connecting) from exc
    except (imaplib.IMAP4.error, ImapToolsError) as exc:
        raise _imap_error(cfg, exc, connecting) from exc
    except OSError as exc:
        raise MailboxUnavailable(f"IMAP server {cfg.where} unreachable: {exc}") from exc


def _tls_error(cfg: ImapConfig, exc: ssl.SSLError, connecting: bool) -> NotifierError:
    if isinstance(exc, ssl.SSLCertVerificationError):
        return ConfigError(f"IMAP TLS with {cfg.where}: certificate not accepted: {exc}")
    if connecting:
        return ConfigError(f"IMAP TLS with {cfg.where} failed: {exc}")
    return MailboxUnavailable(f"IMAP session with {cfg.where} broke: {exc}")


def _imap_error(
    cfg: ImapConfig, exc: imaplib.IMAP4.error | ImapToolsError, connecting: bool
) -> NotifierError:
    if isinstance(exc, MailboxLoginError):
        return ConfigError(f"IMAP login as {cfg.where} refused: {_said(exc)}")
    if isinstance(exc, MailboxStarttlsError):
        return ConfigError(f"IMAP TLS with {cfg.where}: STARTTLS refused: {_said(exc)}")
    if isinstance(exc, MailboxFolderSelectError):
        return ConfigError(f"IMAP folder {cfg.folder!r} of {cfg.where}: {_said(exc)}")
    if isinstance(exc, imaplib.IMAP4.abort):
        return MailboxUnavailable(f"IMAP session with {cfg.where} broke: {exc}")
    if connecting and isinstance(exc, imaplib.IMAP4.error):
        # imaplib's own refusal while connecting: no STARTTLS offered at all.
        return ConfigError(f"IMAP TLS with {cfg.where} failed: {exc}")
    if isinstance(exc, UnexpectedCommandStatusError):
        return MailboxUnavailable(f"IMAP server {cfg.where} refused: {_said(exc)}")
    return MailboxUnavailable(f"IMAP server {cfg.where} failed: {exc}")


def _said(exc: UnexpectedCommandStatusError) -> str:
    """The server's own words from a failed command (never our command, which for LOGIN
    carries the password)."""
    words = []
    for item in exc.command_result[1] or ():
        if isinstance(item, bytes):
            words.append(item.decode("utf-8", "replace"))
    return " ".join(words) or str(exc.command_result[0])


def _ensure_folder(box: BaseMailBox, name: str) -> None:
    if box.folder.exists(name):
        return
    try:
        box.folder.create(name)
    except MailboxFolderCreateError:
        # Another poller may have created it in between; only then is this fine.
        if not box.folder.exists(name):
            raise


def _fetch(
    box: BaseMailBox, uids: Sequence[str], max_bytes: int | None = None
) -> list[tuple[str, bytes | None]]:
    """(uid, raw bytes) of these messages, in the order asked; None in place of the bytes of
    one larger than `max_bytes`, which is not fetched. BODY.PEEK[] is the message exactly as
    stored (imap-tools' MailMessage keeps only a parsed copy) and sets no \\Seen. A UID
    another poller moved away meanwhile is simply missing from the answer."""
    small = list(uids)
    large: set[str] = set()
    if max_bytes is not None:
        sizes = _sizes(box, uids)
        large = {uid for uid, size in sizes.items() if size > max_bytes}
        small = [uid for uid in uids if uid in sizes and uid not in large]
    found: dict[str, bytes | None] = dict.fromkeys(large)
    if small:
        found |= _bodies(box, small)
    return [(uid, found[uid]) for uid in uids if uid in found]


def _sizes(box: BaseMailBox, uids: Sequence[str]) -> dict[str, int]:
    typ, data = box.client.uid("FETCH", ",".join(uids), "(UID RFC822.SIZE)")
    if typ != "OK":
        raise imaplib.IMAP4.error(f"FETCH failed: {data!r}")
    sizes: dict[str, int] = {}
    for item in data:
        line = item[0] if isinstance(item, tuple) else item
        if not isinstance(line, bytes):
            continue
        uid, size = FETCHED_UID.search(line), FETCHED_SIZE.search(line)
        if uid and size:
            sizes[uid.group(1).decode()] = int(size.group(1))
    return sizes


def _bodies(box: BaseMailBox, uids: Sequence[str]) -> dict[str, bytes | None]:
    typ, data = box.client.uid("FETCH", ",".join(uids), "(UID BODY.PEEK[])")
    if typ != "OK":
        raise imaplib.IMAP4.error(f"FETCH failed: {data!r}")
    found: dict[str, bytes | None] = {}
    for i, item in enumerate(data):
        if not isinstance(item, tuple):
            continue
        # The UID is before the literal as asked; a server may send it after, in the
        # bytes that close the response.
        after = data[i + 1] if i + 1 < len(data) and isinstance(data[i + 1], bytes) else b""
        uid = FETCHED_UID.search(item[0]) or FETCHED_UID.search(after)
        if uid:
            found[uid.group(1).decode()] = item[1]
    return found
