"""The error tree of notifier.

::

    NotifierError                  base; never raised directly
    ├── ConfigError                a setting or a conference file is wrong; names the variable/field
    ├── InvalidEvent               an event fails validation; .errors lists (field, reason)
    ├── UnknownRegistration        an event names a registration no seat holds (a cancellation
    │                              that came first): .registration; the event is a dead letter
    ├── ConferenceCancelled        an event asks for mail about a conference whose file says
    │                              `cancelled = true`: .conference; the event is a dead letter
    ├── UnknownBatch               no batch, or more than one, has this key or id: .batch,
    │                              .candidates; also a LookupError, as status() raised before
    ├── BrokerUnavailable          the broker did not take a published task (down, refusing
    │                              writes): nothing is known queued; publish again, same id
    ├── MailboxUnavailable         the bounce mailbox's IMAP server could not be reached or
    │                              dropped the session: nothing was moved, the next poll retries
    ├── StoreUnavailable           Redis did not take a write or answer (down, OOM, READONLY):
    │                              the task is retried, the event stays on the queue
    └── DeliveryError              .smtp_code, .reply: an SMTP delivery did not succeed
        ├── TemporaryDeliveryError retried with backoff
        ├── PermanentDeliveryError recorded as failed, never retried
        └── DeliveryUnknown        no reply to the final dot: the relay may have the message;
                                   resent at most NOTIFIER_UNKNOWN_RESENDS times, then `unknown`

Third-party exceptions are translated where they enter: pydantic's in parse_event
(InvalidEvent) and in load_settings and the conference loader (ConfigError), aiosmtplib's and
the socket's in smtp.classify (DeliveryError), redis-py's in Service.ingest and
Service.deliver (StoreUnavailable). One path lets redis.RedisError through on purpose:
status(), which reads through the caller's own client, whose caller (`notifier remind`) tells
a restart from other store errors.
"""

from __future__ import annotations

from collections.abc import Sequence


class NotifierError(Exception):
    """Base of every error notifier raises on purpose."""


class ConfigError(NotifierError):
    """A setting or conference file is invalid; the message names the variable or field."""


class InvalidEvent(NotifierError):
    """An event failed validation; `errors` holds one (field, reason) pair per problem."""

    def __init__(self, errors: Sequence[tuple[str, str]]) -> None:
        self.errors: tuple[tuple[str, str], ...] = tuple(errors)
        super().__init__("; ".join(f"{field}: {reason}" for field, reason in self.errors))

    @property
    def field(self) -> str:
        """The first offending field (dotted path)."""
        return self.errors[0][0] if self.errors else ""


class DeliveryError(NotifierError):
    """An SMTP delivery did not succeed."""

    def __init__(self, reply: str, smtp_code: int | None = None) -> None:
        self.reply = reply
        self.smtp_code = smtp_code
        super().__init__(f"{smtp_code} {reply}" if smtp_code else reply)


class TemporaryDeliveryError(DeliveryError):
    """Worth trying again later: 4xx replies, timeouts, lost connections, relay down.

    `slow_down` is set when the relay said we are too many or too fast (a rate or connection
    limit: 421 4.4.2, Microsoft's 432 4.3.2, 451/452 with "too many"): every sender slows
    down (the learned rate, notifier.store.pace), and the attempt does not count. `greylisted`:
    the relay asks to come back later (451 4.7.1 greylisting): tried again after the greylist
    delay, not counted either. `quota`: the relay's daily quota is used up (Exchange Online's
    5.2.0 SubmissionQuotaExceededException, a 5xx that means "not today", not "not this
    recipient"): every sender pauses for the quota pause. `out_of_step` is set when the reply
    shows that our session and the server disagree on where the dialogue is (503 and kin): a
    fault of the session, never a verdict on the recipient.
    """

    def __init__(
        self,
        reply: str,
        smtp_code: int | None = None,
        *,
        slow_down: bool = False,
        out_of_step: bool = False,
        greylisted: bool = False,
        quota: bool = False,
    ):
        super().__init__(reply, smtp_code)
        self.slow_down = slow_down
        self.out_of_step = out_of_step
        self.greylisted = greylisted
        self.quota = quota

    @property
    def uncounted(self) -> bool:
        """The relay asked us to wait, not refused the message: no attempt is counted."""
        return self.slow_down or self.greylisted or self.quota


class PermanentDeliveryError(DeliveryError):
    """Trying again will not help: 5xx for this recipient or this message."""


class DeliveryUnknown(DeliveryError):
    """The message was handed over (the final dot was sent) but no reply came: the relay may
    have stored it. Resending risks a duplicate, not resending risks a loss, so it is resent
    a bounded number of times and then recorded as `unknown`, never as failed."""


class UnknownRegistration(NotifierError):
    """An event needs a seat that does not exist yet: a cancellation of a registration whose
    creation has not arrived. Never a bug of ours (a KeyError is one): the event is kept as a
    dead letter, to replay once the registration exists."""

    def __init__(self, registration: str) -> None:
        self.registration = registration
        super().__init__(f"registration {registration} is unknown: no attendee to notify")


class ConferenceCancelled(NotifierError):
    """A registration, substitution or reminder for a conference that is cancelled: no
    confirmation or reminder may be sent for it. The event is kept as a dead letter (replayed
    once the conference file no longer says it is cancelled)."""

    def __init__(self, conference: str, what: str) -> None:
        self.conference = conference
        super().__init__(f"conference {conference} is cancelled: {what}")


class BrokerUnavailable(NotifierError):
    """The broker did not take a published task (down, refusing writes). Nothing is known to
    be queued; the caller publishes again with the same event id (ingest is idempotent)."""


class MailboxUnavailable(NotifierError):
    """The IMAP server of the bounce mailbox could not be reached or dropped the session
    (refused, timeout, reset). Never a verdict on the mail: nothing was moved that was not
    received, and the next poll tries again."""


class UnknownBatch(NotifierError, LookupError):
    """No batch has this key or id, or an id names batches of several conferences.

    Also a LookupError: callers of status() caught that before this class existed."""

    def __init__(self, batch: str, candidates: Sequence[str] = ()) -> None:
        self.batch = batch
        self.candidates: tuple[str, ...] = tuple(candidates)
        found = f"ambiguous, one of {', '.join(self.candidates)}" if candidates else "not found"
        super().__init__(f"batch {batch!r}: {found}")


class StoreUnavailable(NotifierError):
    """Redis could not apply an event (down, out of memory, read-only after a failover).

    Never a verdict on the event: it stays on the queue and is retried, and is not made a
    dead letter (which would need the same store)."""


__all__ = [
    "BrokerUnavailable",
    "ConferenceCancelled",
    "ConfigError",
    "DeliveryError",
    "DeliveryUnknown",
    "InvalidEvent",
    "MailboxUnavailable",
    "NotifierError",
    "PermanentDeliveryError",
    "StoreUnavailable",
    "TemporaryDeliveryError",
    "UnknownBatch",
    "UnknownRegistration",
]
