"""`notifier bounces poll` against a real Dovecot started by the test (devtools/dovecot.py):
every message reaches the intake as the very bytes the server stores, oldest first, and is
moved to the processed folder only once the intake has returned; the store going down stops
the poll and leaves the rest for the next one; TLS is verified and a wrong CA or password is
a configuration error that names the server and user but never the password.

The intake here is a small recording class: the real one is wired in by `notifier bounces
poll`, and the DSN parsing has tests of its own.
"""

from __future__ import annotations

import logging
import time
from dataclasses import replace
from pathlib import Path
from typing import Literal

import pytest
import trustme

from devtools.dovecot import PrivateDovecot
from notifier.bounce_poll import ImapConfig, PollReport, poll
from notifier.errors import ConfigError, MailboxUnavailable, StoreUnavailable

pytestmark = pytest.mark.e2e

DONE = "notifier-processed"
ATTENDEE = "mette.sorensen@aarhus.dk"


def dsn(token: str, recipient: str, n: int) -> bytes:
    """A delivery status notification as RFC 3464 describes it (multipart/report with a
    human part, a message/delivery-status part and the returned headers), in CRLF form as
    it travels over SMTP and IMAP."""
    lines = [
        "Return-Path: <>",
        "From: Mail Delivery System <MAILER-DAEMON@mta.kl.dk>",
        f"To: bounces+{token}@kl.dk",
        "Subject: Undelivered Mail Returned to Sender",
        f"Date: Mon, 15 Apr 2024 10:0{n}:00 +0200",
        f"Message-ID: <dsn-{n}@mta.kl.dk>",
        "Auto-Submitted: auto-replied",
        "MIME-Version: 1.0",
        f'Content-Type: multipart/report; report-type=delivery-status; boundary="B-{n}"',
        "",
        f"--B-{n}",
        "Content-Type: text/plain; charset=us-ascii",
        "",
        "Your message could not be delivered to one or more recipients.",
        "",
        f"--B-{n}",
        "Content-Type: message/delivery-status",
        "",
        "Reporting-MTA: dns; mta.kl.dk",
        "Arrival-Date: Mon, 15 Apr 2024 09:59:58 +0200",
        "",
        f"Final-Recipient: rfc822; {recipient}",
        f"Original-Recipient: rfc822;{recipient}",
        "Action: failed",
        "Status: 5.1.1",
        "Remote-MTA: dns; mx.aarhus.dk",
        f"Diagnostic-Code: smtp; 550 5.1.1 <{recipient}>: Recipient address rejected:",
        " User unknown in virtual mailbox table",
        "",
        f"--B-{n}",
        "Content-Type: text/rfc822-headers",
        "",
        f"Return-Path: <bounces+{token}@kl.dk>",
        "From: Kommunernes Landsforening <konference@kl.dk>",
        f"To: {recipient}",
        "Subject: =?utf-8?q?Bekr=C3=A6ftelse?=",
        f"Message-ID: <{token}@notifier.kl.dk>",
        "",
        f"--B-{n}--",
        "",
    ]
    return "\r\n".join(lines).encode("ascii")


def plain(n: int) -> bytes:
    """Mail that is not a bounce: an out-of-office reply with an 8-bit body."""
    return (
        "From: Jens Hansen <jens.hansen@odense.dk>\r\n"
        "To: bounces+zzz@kl.dk\r\n"
        f"Subject: Fraværende {n}\r\n"
        f"Message-ID: <ooo-{n}@odense.dk>\r\n"
        "MIME-Version: 1.0\r\n"
        "Content-Type: text/plain; charset=utf-8\r\n"
        "Content-Transfer-Encoding: 8bit\r\n"
        "\r\n"
        "Jeg er på ferie til og med 22. april.\r\n"
    ).encode()


def three() -> list[bytes]:
    return [dsn("abc", ATTENDEE, 1), plain(2), dsn("def", "lars.nielsen@vejle.dk", 3)]


class Recording:
    """A receiver that keeps every raw message it is given; it fails with StoreUnavailable
    on the call numbers in `fail_on` (1-based), as the intake does when Redis is down."""

    def __init__(self, fail_on: tuple[int, ...] = ()) -> None:
        self.raw: list[bytes] = []
        self.calls = 0
        self.fail_on = fail_on

    def refuse(self, outcome: str) -> str:
        return outcome

    def receive(self, raw: bytes) -> str:
        self.calls += 1
        if self.calls in self.fail_on:
            raise StoreUnavailable("redis is down")
        self.raw.append(raw)
        return "bounced" if b"report-type=delivery-status" in raw else "unrecognised"


def config(server: PrivateDovecot, tls: Literal["tls", "starttls"] = "tls") -> ImapConfig:
    port = server.imaps_port if tls == "tls" else server.starttls_port
    return ImapConfig(
        host="127.0.0.1",
        port=port,
        user=server.user,
        password=server.password,
        tls=tls,
        ca_file=server.ca_file,
        timeout=10,
    )


@pytest.mark.parametrize("tls", ["tls", "starttls"])
def test_every_message_reaches_the_intake_as_stored_and_is_moved(
    dovecot: PrivateDovecot, tls: Literal["tls", "starttls"]
) -> None:
    sent = three()
    dovecot.append(sent)
    assert DONE not in dovecot.folders()
    receiver = Recording()

    report = poll(config(dovecot, tls), receiver)

    assert receiver.raw == sent  # byte for byte, oldest first
    assert report == PollReport(processed=3, outcomes={"bounced": 2, "unrecognised": 1}, left=0)
    assert dovecot.messages(DONE) == sent
    assert dovecot.count("INBOX") == 0

    again = poll(config(dovecot, tls), receiver)
    assert again == PollReport(processed=0, outcomes={}, left=0)
    assert receiver.calls == 3


def test_the_store_going_down_stops_the_poll_and_leaves_the_rest(
    dovecot: PrivateDovecot,
) -> None:
    sent = three()
    dovecot.append(sent)

    report = poll(config(dovecot), Recording(fail_on=(2,)))

    assert report == PollReport(
        processed=1, outcomes={"bounced": 1}, left=2, store_unavailable=True
    )
    assert dovecot.messages(DONE) == sent[:1]
    assert dovecot.messages("INBOX") == sent[1:]
    # The next poll, with the store back, takes up exactly where this one stopped.
    later = Recording()
    assert poll(config(dovecot), later).processed == 2
    assert later.raw == sent[1:]
    assert dovecot.messages(DONE) == sent
    assert dovecot.count("INBOX") == 0


def test_a_limit_leaves_the_newest_for_the_next_poll(dovecot: PrivateDovecot) -> None:
    sent = three()
    dovecot.append(sent)
    receiver = Recording()

    report = poll(config(dovecot), receiver, limit=2)

    assert (report.processed, report.left, report.store_unavailable) == (2, 1, False)
    assert receiver.raw == sent[:2]
    assert dovecot.messages("INBOX") == sent[2:]


@pytest.mark.parametrize("tls", ["tls", "starttls"])
def test_a_server_certificate_from_another_ca_is_refused(
    dovecot: PrivateDovecot, tls: Literal["tls", "starttls"], tmp_path: Path
) -> None:
    dovecot.append(three())
    other_ca = tmp_path / "other-ca.pem"
    trustme.CA().cert_pem.write_to_path(str(other_ca))
    receiver = Recording()

    with pytest.raises(ConfigError) as refused:
        poll(replace(config(dovecot, tls), ca_file=other_ca), receiver)

    text = str(refused.value)
    assert "TLS" in text
    assert "certificate" in text
    assert f"127.0.0.1:{config(dovecot, tls).port}" in text
    assert receiver.calls == 0
    assert dovecot.count("INBOX") == 3


def test_a_wrong_password_is_a_config_error_without_the_password(
    dovecot: PrivateDovecot,
) -> None:
    dovecot.append(three())
    wrong = "forkert-kodeord-4711"
    receiver = Recording()

    with pytest.raises(ConfigError) as refused:
        poll(replace(config(dovecot), password=wrong), receiver)

    text = str(refused.value)
    assert "login" in text
    assert f"{dovecot.user} at 127.0.0.1:{dovecot.imaps_port}" in text
    assert wrong not in text
    assert dovecot.password not in text
    assert wrong not in repr(replace(config(dovecot), password=wrong))
    assert receiver.calls == 0
    assert dovecot.count("INBOX") == 3


def test_a_missing_folder_is_a_config_error_naming_it(dovecot: PrivateDovecot) -> None:
    with pytest.raises(ConfigError, match="'Bounces'"):
        poll(replace(config(dovecot), folder="Bounces"), Recording())


def test_a_server_that_is_down_is_unavailable_not_misconfigured(
    dovecot: PrivateDovecot,
) -> None:
    cfg = config(dovecot)
    dovecot.stop()
    with pytest.raises(MailboxUnavailable, match="unreachable"):
        poll(cfg, Recording())


def test_the_poll_logs_counts_and_no_address(
    dovecot: PrivateDovecot, caplog: pytest.LogCaptureFixture
) -> None:
    dovecot.append(three())
    with caplog.at_level(logging.DEBUG):
        poll(config(dovecot), Recording())
    assert "3 processed" in caplog.text
    assert "@" not in caplog.text


def test_measure_a_poll_of_a_hundred_messages(dovecot: PrivateDovecot) -> None:
    sent = [dsn(f"t{n:03d}", ATTENDEE, n % 10) if n % 4 else plain(n) for n in range(100)]
    dovecot.append(sent)
    receiver = Recording()

    started = time.perf_counter()
    report = poll(config(dovecot), receiver)
    seconds = time.perf_counter() - started

    print(f"MEASURE bounce poll: 100 messages in {seconds:.2f} s")
    assert report.processed == 100
    assert receiver.raw == sent
    assert dovecot.count("INBOX") == 0
    assert dovecot.count(DONE) == 100
