"""SMTP outcomes: which failures are retried (temporary) and which are final (permanent)."""

from __future__ import annotations

import aiosmtplib
import pytest

from notifier.errors import DeliveryError, PermanentDeliveryError, TemporaryDeliveryError
from notifier.smtp import classify


def refused(code: int) -> aiosmtplib.SMTPRecipientsRefused:
    reply = "5.1.1 User unknown" if code >= 500 else "4.2.1 Mailbox busy"
    return aiosmtplib.SMTPRecipientsRefused(
        [aiosmtplib.SMTPRecipientRefused(code, reply, "mette.sorensen@aarhus.dk")]
    )


TEMPORARY = TemporaryDeliveryError
PERMANENT = PermanentDeliveryError

CASES: list[tuple[str, BaseException, type[DeliveryError], int | None]] = [
    ("recipients-refused-550", refused(550), PERMANENT, 550),
    ("recipients-refused-450", refused(450), TEMPORARY, 450),
    ("data-554", aiosmtplib.SMTPDataError(554, "5.7.1 Message rejected as spam"), PERMANENT, 554),
    ("data-451", aiosmtplib.SMTPDataError(451, "4.3.0 Try again later"), TEMPORARY, 451),
    (
        "sender-refused-421",
        aiosmtplib.SMTPSenderRefused(421, "4.7.0 Too busy", "arrangementsinfo@kl.dk"),
        TEMPORARY,
        421,
    ),
    (
        "sender-refused-553",
        aiosmtplib.SMTPSenderRefused(553, "5.7.1 Not allowed", "arrangementsinfo@kl.dk"),
        PERMANENT,
        553,
    ),
    (
        "response-432",
        aiosmtplib.SMTPResponseException(432, "4.7.12 Password needed"),
        TEMPORARY,
        432,
    ),
    (
        "connect",
        aiosmtplib.SMTPConnectError("Error connecting to 127.0.0.1 on port 25"),
        TEMPORARY,
        None,
    ),
    (
        "connect-timeout",
        aiosmtplib.SMTPConnectTimeoutError("Timed out connecting"),
        TEMPORARY,
        None,
    ),
    ("disconnected", aiosmtplib.SMTPServerDisconnected("Server disconnected"), TEMPORARY, None),
    (
        "read-timeout",
        aiosmtplib.SMTPReadTimeoutError("Timed out waiting for reply"),
        TEMPORARY,
        None,
    ),
    ("connection-refused", ConnectionRefusedError(111, "Connection refused"), TEMPORARY, None),
    ("timeout", TimeoutError("timed out"), TEMPORARY, None),
    ("not-supported", aiosmtplib.SMTPNotSupported("SMTPUTF8 not supported"), PERMANENT, None),
    (
        "authentication-535",
        aiosmtplib.SMTPAuthenticationError(535, "5.7.8 Authentication failed"),
        TEMPORARY,
        535,
    ),
]


@pytest.mark.parametrize(
    ("exc", "expected", "code"),
    [pytest.param(exc, kind, code, id=name) for name, exc, kind, code in CASES],
)
def test_classify(exc: BaseException, expected: type[DeliveryError], code: int | None) -> None:
    outcome = classify(exc)
    assert type(outcome) is expected
    assert outcome.smtp_code == code
    assert outcome.reply


def test_reply_keeps_code_and_text_on_one_line() -> None:
    outcome = classify(aiosmtplib.SMTPDataError(554, "5.7.1 Message\r\n rejected"))
    assert outcome.reply == "554 5.7.1 Message rejected"


def test_non_smtp_exception_is_a_bug() -> None:
    with pytest.raises(TypeError):
        classify(ValueError("not an SMTP outcome"))


EXCHANGE_RATE = "4.4.2 Message submission rate for this client has exceeded the configured limit"
EXCHANGE_QUOTA = "5.2.0 STOREDRV.Submission.Exception:SubmissionQuotaExceededException"
WAITS: list[tuple[str, str, int, str]] = [
    # (what, reply, code, which wait)
    ("exchange rate", EXCHANGE_RATE, 421, "slow_down"),
    ("exchange connections", "4.3.2 STOREDRV; mailbox server is too busy", 432, "slow_down"),
    ("too many", "4.7.0 Too many messages, slow down", 451, "slow_down"),
    ("greylisted", "4.7.1 Greylisted, please try again later", 451, "greylisted"),
    ("postgrey", "4.2.0 Recipient address rejected: Greylisted for 300 seconds", 450, "greylisted"),
    ("daily quota", EXCHANGE_QUOTA, 554, "quota"),
]  # fmt: skip


@pytest.mark.parametrize(("what", "reply", "code", "wait"), WAITS, ids=[w[0] for w in WAITS])
def test_a_relay_asking_to_wait_is_told_apart(what: str, reply: str, code: int, wait: str) -> None:
    outcome = classify(aiosmtplib.SMTPSenderRefused(code, reply, "arrangementsinfo@kl.dk"))
    assert isinstance(outcome, TemporaryDeliveryError)
    flags = {
        "slow_down": outcome.slow_down,
        "greylisted": outcome.greylisted,
        "quota": outcome.quota,
    }
    assert {k for k, v in flags.items() if v} == {wait}
    assert outcome.uncounted


@pytest.mark.parametrize(
    "reply",
    [
        "5.2.2 Mailbox quota exceeded",
        "5.2.2 The email account that you tried to reach is over quota",
    ],
)
def test_a_full_mailbox_is_not_our_quota(reply: str) -> None:
    outcome = classify(
        aiosmtplib.SMTPRecipientsRefused([aiosmtplib.SMTPRecipientRefused(552, reply, "a@b.dk")])
    )
    assert isinstance(outcome, PermanentDeliveryError)


def test_an_ordinary_temporary_failure_counts() -> None:
    outcome = classify(aiosmtplib.SMTPDataError(451, "4.3.0 Try again later"))
    assert isinstance(outcome, TemporaryDeliveryError) and not outcome.uncounted
