"""A real MTA producing real DSNs (issue 14): a private Postfix says 250 to us, relays to the
test sink, which answers 550 (or 450), and Postfix delivers the DSN it writes to the envelope
sender through its pipe transport, as it would to `notifier bounces receive`.

These tests check the machinery (devtools/postfix.py) with a plain pipe command; they print
"POSTFIX DSN: ..." timings (run with -s to see them).
"""

from __future__ import annotations

import smtplib
import time
from collections.abc import Callable
from email import message_from_bytes, policy
from email.message import EmailMessage, Message
from pathlib import Path

import pytest

from devtools.postfix import PrivatePostfix
from devtools.sink import Sink
from tests.conftest import wait_for

pytestmark = pytest.mark.e2e

Postfix = Callable[..., PrivatePostfix]
SENDER = "bounces+abc@kl.dk"
GONE = "gone@aarhus.dk"
KEPT = "kept@aarhus.dk"
USER_UNKNOWN = "550 5.1.1 <gone@aarhus.dk>: Recipient address rejected: User unknown"


def send(postfix: PrivatePostfix, recipients: list[str], sender: str = SENDER) -> None:
    """One message into Postfix; it must accept every recipient (its 250 comes first)."""
    body = (
        f"From: Kommunernes Landsforening <kursus@kl.dk>\r\nTo: {', '.join(recipients)}\r\n"
        "Subject: Bekraeftelse\r\nMessage-ID: <m1@notifier.test>\r\n\r\nHej\r\n"
    ).encode()
    with smtplib.SMTP("127.0.0.1", postfix.port, timeout=10) as smtp:
        assert smtp.sendmail(sender, recipients, body) == {}


def report_blocks(dsn: EmailMessage) -> tuple[Message, list[Message]]:
    """The per-message block and the per-recipient blocks of a delivery-status report."""
    assert dsn.get_content_type() == "multipart/report"
    assert dsn.get_param("report-type") == "delivery-status"
    parts = [p for p in dsn.iter_parts() if p.get_content_type() == "message/delivery-status"]
    assert len(parts) == 1, [p.get_content_type() for p in dsn.iter_parts()]
    blocks = [b for b in parts[0].get_payload() if isinstance(b, Message)]
    assert len(blocks) >= 2
    return blocks[0], blocks[1:]


def parsed(raw: bytes) -> EmailMessage:
    message = message_from_bytes(raw, policy=policy.default)
    assert isinstance(message, EmailMessage)
    return message


def test_a_550_after_postfix_said_250_comes_back_as_a_dsn(
    sink: Sink, private_postfix: Postfix
) -> None:
    sink.script.rcpt[GONE] = USER_UNKNOWN
    postfix = private_postfix(sink.port)
    started = time.monotonic()
    send(postfix, [GONE, KEPT])  # Postfix says 250 for both: the 550 comes later

    raw = wait_for(postfix.dropped, 20, "the DSN to reach the pipe command")[0]
    took = time.monotonic() - started
    print(f"POSTFIX DSN: 550 from the relay -> DSN through the pipe in {took:.3f} s")

    dsn = parsed(raw)
    assert dsn["To"] == SENDER
    assert dsn["Return-Path"] == "<>"  # the null sender: nobody bounces a bounce
    per_message, recipients = report_blocks(dsn)
    assert per_message["X-Postfix-Sender"] == f"rfc822; {SENDER}"
    assert len(recipients) == 1  # only the rejected one; the other was delivered
    failed = recipients[0]
    assert failed["Final-Recipient"] == f"rfc822; {GONE}"
    assert failed["Action"] == "failed"
    assert failed["Status"] == "5.1.1"
    assert "User unknown" in failed["Diagnostic-Code"]
    # The envelope, as Postfix itself logged it: from the null sender, piped to the sender.
    assert postfix.log_matches(rf"to=<{SENDER.replace('+', '[+]')}>, relay=dsnpipe, .*status=sent")
    # The relay got the message for the other recipient, and never the DSN.
    assert [r.recipients for r in sink.wait_for(1)] == [(KEPT,)]
    wait_for(lambda: postfix.queued() == [], 10, "Postfix's queue to empty")
    assert len(postfix.dropped()) == 1


@pytest.mark.parametrize("bridge", [False, True], ids=["as-nobody", "bridged"])
def test_pipe_command_gets_its_environment_and_exit_75_keeps_the_dsn(
    sink: Sink, private_postfix: Postfix, tmp_path: Path, bridge: bool
) -> None:
    """The command's environment and Postfix macros reach it; EX_TEMPFAIL (75) leaves the DSN
    queued (deferred, not bounced: nothing lost) until a later run of the command succeeds.
    Bridged, the command sits where only root may run it (pytest's tmp_path is 0700), as the
    project's virtualenv does here."""
    sink.script.rcpt[GONE] = USER_UNKNOWN
    argv = ["/bin/sh", "-c", TEMPFAIL_WHILE_FLAG, "tempfail"]
    if bridge:
        script = tmp_path / "tempfail.sh"
        script.write_text("#!/bin/sh" + TEMPFAIL_WHILE_FLAG)
        script.chmod(0o700)
        argv = [str(script)]
    postfix = private_postfix(
        sink.port,
        bridge=bridge,
        pipe_argv=argv,
        pipe_args=["${sender}", "${recipient}"],
        pipe_env={"NOTIFIER_TEST_VALUE": 'it\'s a "value" with $pace'},
        settings={"minimal_backoff_time": "300s", "maximal_backoff_time": "300s"},
    )
    flag = postfix.drops / "tempfail"
    flag.touch()
    send(postfix, [GONE])

    wait_for(lambda: postfix.log_matches(r"relay=dsnpipe, .*status=deferred"), 20, "a deferral")
    queued = postfix.queued()
    assert len(queued) == 1 and queued[0]["sender"] == "MAILER-DAEMON"  # (postqueue's name for <>)
    assert "temporary failure" in queued[0]["recipients"][0]["delay_reason"]
    assert postfix.dropped() == []

    flag.unlink()
    started = time.monotonic()
    postfix.flush()
    raw = wait_for(postfix.dropped, 20, "the DSN after the command recovered")[0]
    print(f"POSTFIX DSN: deferred DSN delivered {time.monotonic() - started:.3f} s after flush")
    assert raw.startswith(b'NOTIFIER_TEST_VALUE=it\'s a "value" with $pace\n')
    assert b"\nargs=<> <bounces+abc@kl.dk>\n" in raw  # from the null sender to ours
    _, recipients = report_blocks(parsed(raw.split(b"\n--\n", 1)[1]))
    assert recipients[0]["Action"] == "failed"
    wait_for(lambda: postfix.queued() == [], 10, "Postfix's queue to empty")


# Exits 75 while the flag file exists; else saves its environment value, its arguments and
# the message (in that order) where the default file drop would.
TEMPFAIL_WHILE_FLAG = """
set -e
[ -e "$PRIVATE_POSTFIX_DROPS/tempfail" ] && exit 75
name="$(date +%s%N).$$"
{ printf 'NOTIFIER_TEST_VALUE=%s\\nargs=<%s> <%s>\\n--\\n' "$NOTIFIER_TEST_VALUE" "$1" "$2"
  cat; } > "$PRIVATE_POSTFIX_DROPS/.$name"
mv "$PRIVATE_POSTFIX_DROPS/.$name" "$PRIVATE_POSTFIX_DROPS/$name.eml"
"""


def test_a_450_becomes_delayed_then_failed_dsns_only_when_asked(
    sink: Sink, private_postfix: Postfix
) -> None:
    """A 4xx from the relay stays queued (Postfix's normal behaviour); with a short warning
    time and queue lifetime it produces a "delayed" DSN and then a "failed" one."""
    sink.script.rcpt[GONE] = "450 4.2.1 <gone@aarhus.dk>: Mailbox busy, try again later"
    postfix = private_postfix(
        sink.port,
        settings={"delay_warning_time": "1s", "maximal_queue_lifetime": "4s"},
    )
    started = time.monotonic()
    send(postfix, [GONE])

    dsns = wait_for(lambda: len(postfix.dropped()) >= 2 and postfix.dropped(), 60, "2 DSNs")
    took = time.monotonic() - started
    print(f"POSTFIX DSN: 450 from the relay -> delayed and failed DSNs within {took:.3f} s")
    actions = []
    for raw in dsns:
        _, recipients = report_blocks(parsed(raw))
        actions.append((recipients[0]["Action"], recipients[0]["Status"]))
    assert actions == [("delayed", "4.2.1"), ("failed", "4.2.1")]
    wait_for(lambda: postfix.queued() == [], 10, "Postfix's queue to empty")
