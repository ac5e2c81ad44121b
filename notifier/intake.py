"""Bounce intake: a report that came back after the relay's 250, matched to its message and
applied. Shared by `notifier bounces receive` (an MTA's pipe) and `notifier bounces poll`
(an IMAP mailbox).

A report names its message by the token in the return path it was sent to
(`bounces+TOKEN@domain`, notifier.bounces.token); a token whose HMAC does not verify, under
the current secret or (until NOTIFIER_BOUNCE_SECRET_PREVIOUS_UNTIL) a previous one, is counted
as forged and changes nothing. What a report does is notifier.bounces.policy's decision:

- a report whose recipient is not the message's changes nothing (`mismatched`);
- a failure marks the message `bounced` with its status, diagnostic and reason; only a
  recipient who is gone (5.x.x user unknown, mailbox disabled, host unknown) is suppressed;
  a full mailbox is suppressed once NOTIFIER_BOUNCE_MAILBOX_FULL_COUNT failures came within
  NOTIFIER_BOUNCE_MAILBOX_FULL_DAYS, the first and the latest at least a day apart; our
  side's problems (blocklist, authentication, policy, content, rate) raise an operator
  signal (a counter, a log line without addresses, the console) and suppress nothing;
- a `delayed` report is recorded on the message and changes nothing else;
- a complaint (an ARF abuse report, an SES complaint) suppresses the address; an ARF
  auth-failure report is an authentication signal;
- the same report again counts once: by its message and status, whatever its Message-ID;
- a report about a message whose send is not recorded yet is left to be received again;
- mail over NOTIFIER_BOUNCE_MAX_BYTES or with more than NOTIFIER_BOUNCE_MAX_PARTS MIME
  boundaries is refused unread (`too_large`, `too_many_parts`).

The organiser's copies are never suppressed. Nothing here logs an address.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

import redis

from notifier.bounces.policy import Effect, decide
from notifier.bounces.report import Report, boundary_lines, parse
from notifier.bounces.token import verify
from notifier.domain.notice import Kind
from notifier.errors import ConfigError, StoreUnavailable
from notifier.logs import scrub
from notifier.settings import Settings
from notifier.store import suppressions
from notifier.store.bouncelog import BounceLog
from notifier.store.deadletter import DeadLetters
from notifier.store.outbox import Outbox, Record
from notifier.store.suppressions import MAILBOX_FULL, Suppressions, hard_bounce_reason

log = logging.getLogger("notifier")

# What became of a report (also the counters' names).
BOUNCED, DELAYED, COMPLAINT = "bounced", "delayed", "complaint"
AUTH_FAILURE, AUTO_REPLY, MISMATCHED = "auth_failure", "auto_reply", "mismatched"
DUPLICATE, UNMATCHED, FORGED = "duplicate", "unmatched", "forged"
UNRECOGNISED, IGNORED, ERROR = "unrecognised", "ignored", "error"
TOO_LARGE, TOO_MANY_PARTS = "too_large", "too_many_parts"
# Outcomes of a report that was not applied and must be received again.
RETRY = frozenset({"early", ERROR})
# A report about a message whose send is not recorded yet: kept to be received again later
# (`receive` exits 75; `poll` leaves it in the folder).
EARLY = "early"
NOT_YET_SENT = frozenset({"queued", "sending", "retrying"})
DIAGNOSTIC_CHARS = 200
DAY = 86_400.0


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
        self.previous = settings.previous_bounce_keys()
        until = settings.bounce_secret_previous_until
        self.previous_until = until.timestamp() if until is not None else 0.0
        self.max_bytes = settings.bounce_max_bytes
        self.max_parts = settings.bounce_max_parts
        self.full_count = settings.bounce_mailbox_full_count
        self.full_span = settings.bounce_mailbox_full_days * DAY
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
                outcome = self._bounded(raw)
            except redis.RedisError:
                raise
            except Exception as exc:  # a bug: keep the report to look at, never drop it
                log.exception("cannot process a bounce report")
                outcome = self._keep(raw, exc)
            self.log.count(outcome)
        except redis.RedisError as exc:
            raise StoreUnavailable(f"{type(exc).__name__}: {exc}") from exc
        return outcome

    def refuse(self, outcome: str) -> str:
        """Count a report refused unread (TOO_LARGE, TOO_MANY_PARTS) by the caller.

        Raises:
            StoreUnavailable: the count could not be recorded.
        """
        try:
            self.log.count(outcome)
        except redis.RedisError as exc:
            raise StoreUnavailable(f"{type(exc).__name__}: {exc}") from exc
        log.warning("bounce report refused unread: %s", outcome)
        return outcome

    def _bounded(self, raw: bytes) -> str:
        if len(raw) > self.max_bytes:
            outcome = TOO_LARGE
        elif boundary_lines(raw, self.max_parts + 1) > self.max_parts:
            outcome = TOO_MANY_PARTS
        else:
            return self._receive(raw)
        log.warning("bounce report refused unread: %s", outcome)
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
        if report.kind == "auto_reply":
            return AUTO_REPLY
        ids = self._verified(report)
        if not ids:
            return FORGED if report.tokens else UNMATCHED
        key = self.outbox.key_for_bounce_id(ids[0])
        record = self.outbox.get(key) if key else None
        if record is None:
            return UNMATCHED
        effect = decide(report, record.sent_to)
        if effect.outcome == MISMATCHED:
            return MISMATCHED
        if effect.outcome in (BOUNCED, DELAYED) and record.state in NOT_YET_SENT:
            # The relay's 250 is not recorded yet (a worker between it and its record, or
            # one that died there): the report must wait, or it would be lost.
            return EARLY
        # A replay is the same message and the same status, whatever its Message-ID.
        seen = f"{ids[0]}:{effect.outcome}:{effect.status}"
        if self.log.seen(seen):
            return DUPLICATE
        outcome = self._apply(effect, record, ids[0])
        # Marked only once applied: a store failure in between must leave the report unmarked,
        # or the MTA's next try (after our exit 75) would be taken for a duplicate and the
        # report lost. Applying one twice moves nothing further: a bounced message stays as it
        # is (bounce.lua), and a suppression only has its time renewed.
        if not self.log.first(seen, self.clock()):
            return DUPLICATE  # another delivery of the same report was applied meanwhile
        self.log.count_reason(effect.reason)
        log.info(
            "bounce report for %s: %s (%s)",
            record.key,
            outcome,
            effect.reason,
            extra={"key": record.key, "outcome": outcome, "reason": effect.reason},
        )
        return outcome

    def _verified(self, report: Report) -> list[str]:
        """The message ids of the report's tokens that verify: under the current secret, or
        under a previous one while it is still accepted."""
        keys = [self.secret]
        if self.previous and self.clock() < self.previous_until:
            keys += self.previous
        found = (verify(t, k) for t in report.tokens for k in keys)
        return list(dict.fromkeys(i for i in found if i is not None))

    def _apply(self, effect: Effect, record: Record, bounce_id: str) -> str:
        now = self.clock()
        if effect.signal:
            self._signal(effect, record)
        if effect.outcome == COMPLAINT:
            self._suppress(record, suppressions.COMPLAINT)
            return COMPLAINT
        if effect.outcome == AUTH_FAILURE:
            return AUTH_FAILURE
        if effect.outcome == DELAYED:
            said = _diagnostic(effect.diagnostic)
            self.outbox.delay(record.key, effect.status, said, now, reason=effect.reason)
            return DELAYED
        if effect.outcome != BOUNCED:
            return IGNORED  # delivered, relayed, expanded: nothing to do
        said = _diagnostic(effect.diagnostic)
        found = self.outbox.bounce(record.key, effect.status, said, now, reason=effect.reason)
        if effect.suppress:
            status = f"{effect.status} {effect.reason}"
            self._suppress(record, hard_bounce_reason(status, effect.diagnostic, record.sent_to))
        elif effect.mailbox_full:
            self._mailbox_full(record, bounce_id, now)
        return BOUNCED if found == "bounced" else IGNORED

    def _mailbox_full(self, record: Record, bounce_id: str, now: float) -> None:
        """Suppress a full mailbox only once it stayed full: enough failures, over a day."""
        full = self.log.mailbox_full(record.sent_to, bounce_id, now, self.full_span)
        if full.count >= self.full_count and now - full.first_at >= DAY:
            days = (now - full.first_at) / DAY
            self._suppress(record, f"{MAILBOX_FULL} {full.count} times in {days:.0f} days")

    def _signal(self, effect: Effect, record: Record) -> None:
        self.log.signal(effect.reason, self.clock())
        log.warning(
            "bounce report says our mail is refused: %s (status %s) for %s",
            effect.reason,
            effect.status or "-",
            record.key,
            extra={"key": record.key, "reason": effect.reason, "signal": True},
        )

    def _suppress(self, record: Record, reason: str) -> None:
        if record.notice.kind is Kind.SUBSTITUTION_COPY:
            return  # the organiser's own address: never suppressed
        self.suppressions.add(record.sent_to, reason, message=record.key, now=self.clock())


def _diagnostic(said: str) -> str:
    """The remote server's words, without addresses, cut to a length a status table shows."""
    return scrub(" ".join(said.split()))[:DIAGNOSTIC_CHARS]
