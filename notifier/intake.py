"""Bounce intake: a report that came back after the relay's 250, matched to its message and
applied. Shared by `notifier bounces receive` (an MTA's pipe) and `notifier bounces poll`
(an IMAP mailbox).

A report names its message by the token in the return path it was sent to
(`bounces+TOKEN@domain`, notifier.bounces.token); a token whose HMAC does not verify is
counted as forged and changes nothing. What a report does:

- a hard failure (Action: failed, 5.x.x) marks the message `bounced` with the status and the
  diagnostic, and suppresses the address for later messages;
- a failure after the relay gave up on a temporary condition (Action: failed, 4.x.x) marks
  the message `bounced` but suppresses nothing: the address may well work tomorrow;
- a `delayed` report is recorded on the message and changes nothing else;
- a complaint (an ARF feedback report) suppresses the address with the reason "complaint";
- the same report again counts once (its fingerprint is remembered);
- a report about a message whose send is not recorded yet is left to be received again.

The organiser's copies are never suppressed. Nothing here logs an address.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

import redis

from notifier.bounces.report import Recipient, Report, parse
from notifier.bounces.token import verify
from notifier.domain.notice import Kind
from notifier.errors import ConfigError, StoreUnavailable
from notifier.logs import scrub
from notifier.settings import Settings
from notifier.store import suppressions
from notifier.store.bouncelog import BounceLog
from notifier.store.deadletter import DeadLetters
from notifier.store.outbox import Outbox, Record
from notifier.store.suppressions import Suppressions, hard_bounce_reason

log = logging.getLogger("notifier")

# What became of a report (also the counters' names).
BOUNCED, DELAYED, COMPLAINT = "bounced", "delayed", "complaint"
DUPLICATE, UNMATCHED, FORGED = "duplicate", "unmatched", "forged"
UNRECOGNISED, IGNORED, ERROR = "unrecognised", "ignored", "error"
# A report about a message whose send is not recorded yet: kept to be received again later
# (`receive` exits 75; `poll` leaves it in the folder).
EARLY = "early"
NOT_YET_SENT = frozenset({"queued", "sending", "retrying"})
DIAGNOSTIC_CHARS = 200


class Intake:
    def __init__(
        self, settings: Settings, client: redis.Redis, *, clock: Callable[[], float] = time.time
    ) -> None:
        """Raises:
        ConfigError: NOTIFIER_BOUNCE_ADDRESS (and its secret) is not set: nothing could be
            matched, and a report must not be dropped for that.
        """
        secret = settings.bounce_key()
        if settings.bounce_address is None or secret is None:
            raise ConfigError(
                "NOTIFIER_BOUNCE_ADDRESS and NOTIFIER_BOUNCE_SECRET (or _FILE) must be set "
                "to match bounces to their messages"
            )
        self.address = settings.bounce_address
        self.secret = secret
        self.clock = clock
        self.client = client
        self.outbox = Outbox(client, webhooks=settings.webhooks_enabled)
        self.suppressions = Suppressions(client)
        self.log = BounceLog(client)
        self.dead = DeadLetters(client)

    def receive(self, raw: bytes) -> str:
        """Apply one raw report; returns what became of it (one of the names above).

        Raises:
            StoreUnavailable: Redis did not answer: nothing may be assumed recorded, so the
                caller keeps the report to try again (the MTA's exit status 75).
        """
        try:
            try:
                outcome = self._receive(raw)
            except redis.RedisError:
                raise
            except Exception as exc:  # a bug: keep the report to look at, never drop it
                log.exception("cannot process a bounce report")
                outcome = self._keep(raw, exc)
            self.log.count(outcome)
        except redis.RedisError as exc:
            raise StoreUnavailable(f"{type(exc).__name__}: {exc}") from exc
        return outcome

    def _keep(self, raw: bytes, exc: Exception) -> str:
        text = raw.decode("utf-8", errors="replace")
        reason = f"internal error: {type(exc).__name__}"
        self.dead.put(text, [("bounce report", reason)], now=self.clock())
        return ERROR

    def _receive(self, raw: bytes) -> str:
        report = parse(raw, self.address)
        if report.kind == "unrecognised":
            return UNRECOGNISED
        ids = [i for i in (verify(t, self.secret) for t in report.tokens) if i is not None]
        if not ids:
            return FORGED if report.tokens else UNMATCHED
        key = self.outbox.key_for_bounce_id(ids[0])
        record = self.outbox.get(key) if key else None
        if record is None:
            return UNMATCHED
        seen = f"{report.fingerprint}:{ids[0]}"
        if self.log.seen(seen):
            return DUPLICATE
        outcome = self._apply(report, record)
        if outcome == EARLY:
            return outcome  # not marked: it is to be received again
        # Marked only once applied: a store failure in between must leave the report unmarked,
        # or the MTA's next try (after our exit 75) would be taken for a duplicate and the
        # report lost. Applying one twice moves nothing further: a bounced message stays as it
        # is (bounce.lua), and a suppression only has its time renewed.
        if not self.log.first(seen, self.clock()):
            return DUPLICATE  # another delivery of the same report was applied meanwhile
        log.info(
            "bounce report for %s: %s",
            record.key,
            outcome,
            extra={"key": record.key, "outcome": outcome, "kind": report.kind},
        )
        return outcome

    def _apply(self, report: Report, record: Record) -> str:
        if report.kind == "complaint":
            self._suppress(record, suppressions.COMPLAINT)
            return COMPLAINT
        failed = [r for r in report.recipients if r.action == "failed"]
        delayed = [r for r in report.recipients if r.action == "delayed"]
        if (failed or delayed) and record.state in NOT_YET_SENT:
            # The relay's 250 is not recorded yet (a worker between it and its record, or
            # one that died there): the report must wait, or it would be lost.
            return EARLY
        if failed:
            return self._failed(record, failed[0])
        if delayed:
            first = delayed[0]
            self.outbox.delay(record.key, first.status, _diagnostic(first), self.clock())
            return DELAYED
        return IGNORED  # delivered, relayed, expanded: nothing to do

    def _failed(self, record: Record, failure: Recipient) -> str:
        found = self.outbox.bounce(record.key, failure.status, _diagnostic(failure), self.clock())
        if failure.status.startswith("5"):
            reason = hard_bounce_reason(failure.status, failure.diagnostic, record.sent_to)
            self._suppress(record, reason)
        return BOUNCED if found == "bounced" else IGNORED

    def _suppress(self, record: Record, reason: str) -> None:
        if record.notice.kind is Kind.SUBSTITUTION_COPY:
            return  # the organiser's own address: never suppressed
        self.suppressions.add(record.sent_to, reason, message=record.key, now=self.clock())


def _diagnostic(recipient: Recipient) -> str:
    """The remote server's words, without addresses, cut to a length a status table shows."""
    return scrub(" ".join(recipient.diagnostic.split()))[:DIAGNOSTIC_CHARS]
