"""The error tree of notifier.

::

    NotifierError                  base; never raised directly
    ├── ConfigError                a setting or a conference file is wrong; names the variable/field
    ├── InvalidEvent               an event fails validation; .errors lists (field, reason)
    └── DeliveryError              .smtp_code, .reply: an SMTP delivery did not succeed
        ├── TemporaryDeliveryError retried with backoff
        └── PermanentDeliveryError recorded as failed, never retried

Third-party exceptions (pydantic, aiosmtplib, redis) are translated into these at the boundary.
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

    `slow_down` is set when the relay said we are too many or too fast (Microsoft's 432):
    then every sender pauses, instead of hammering it with retries.
    """

    def __init__(self, reply: str, smtp_code: int | None = None, *, slow_down: bool = False):
        super().__init__(reply, smtp_code)
        self.slow_down = slow_down


class PermanentDeliveryError(DeliveryError):
    """Trying again will not help: 5xx for this recipient or this message."""
