"""Bounces end to end (issue 14): a real worker sends through a real MTA (a private Postfix),
the relay behind it (the test sink) answers 550 after Postfix's 250, and the DSN Postfix
writes reaches `notifier bounces receive` through Postfix's pipe transport, or a real IMAP
server (a private Dovecot) for `notifier bounces poll`.

Each test prints "BOUNCE E2E: ..." timings (run with -s to see them).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from collections.abc import Callable
from email import message_from_bytes, policy
from pathlib import Path
from typing import Any

import pytest

from devtools.dovecot import PrivateDovecot
from devtools.postfix import PrivatePostfix
from devtools.sink import Sink, free_port
from notifier.bounces.token import find_tokens, message_id, message_token, verify
from notifier.domain.notice import Kind, Notice, Person
from notifier.errors import UnknownBatch
from notifier.store.bouncelog import BounceLog
from notifier.store.outbox import Outbox, Settlement
from notifier.store.status import Failure, status
from notifier.store.suppressions import Suppressions
from tests.conftest import wait_for
from tests.e2e.conftest import Stack, reminders_received
from tests.e2e.test_bounce_poll import dsn
from tests.events import created, person, reminder

pytestmark = pytest.mark.e2e

Postfix = Callable[..., PrivatePostfix]
NOTIFIER = str(Path(sys.executable).with_name("notifier"))  # the venv's console script
BOUNCE_ADDRESS = "bounces@kl.dk"
SECRET = "e2e-bounce-secret-for-tests-only"
BOUNCE = {"bounce_address": BOUNCE_ADDRESS, "bounce_secret": SECRET}
KEEP = [person(1), person(2)]
GONE = person(3)
GONE_ADDRESS = GONE["email"]
USER_UNKNOWN = f"550 5.1.1 <{GONE_ADDRESS}>: Recipient address rejected: User unknown"
DONE = "notifier-processed"
# What Postfix logs when it hands a DSN for one of our return paths to the pipe.
DSN_TO_PIPE = r"to=<bounces\+(\w+)@kl\.dk>, relay=dsnpipe, .*status={}"
# The pipe's own deferral (exit 75) and its reason. Not the "deferred transport" hold, which
# Postfix logs with relay=none and which a second queue scan may write again over the pipe's
# reason in the queue file; so the reason is read from the pipe's log line (CI, 2026-11-30).
PIPE_DEFERRED = r"deferred \((?!deferred transport\))(.*)\)$"


def notifier_env(s: Stack) -> dict[str, str]:
    return {k: v for k, v in s.env.items() if k.startswith("NOTIFIER_")}


def bounce_stack(
    stack: Callable[..., Stack],
    private_postfix: Postfix,
    sink: Sink,
    *,
    appendonly: bool = False,
    pipe: bool = True,
    postfix_settings: dict[str, str] | None = None,
) -> tuple[Stack, PrivatePostfix]:
    """A worker that relays through a private Postfix, which relays to the sink. With `pipe`
    Postfix delivers mail for kl.dk to `notifier bounces receive` with the worker's settings
    (bridged: the pipe's user, nobody, cannot run the venv); else it saves it as files."""
    port = free_port()
    s = stack(start=False, appendonly=appendonly, smtp_port=str(port), **BOUNCE)
    options: dict[str, Any] = {"port": port, "settings": postfix_settings}
    if pipe:
        options |= {
            "bridge": True,
            "pipe_argv": [NOTIFIER, "bounces", "receive"],
            "pipe_env": notifier_env(s),
        }
    postfix = private_postfix(sink.port, **options)
    s.worker.start()
    return s, postfix


def only(rows: tuple[Failure, ...]) -> Failure:
    assert len(rows) == 1, rows
    return rows[0]


def pipe_tokens(postfix: PrivatePostfix, outcome: str) -> list[str]:
    return [m.group(1) for m in postfix.log_matches(DSN_TO_PIPE.format(outcome))]


def batch_done(s: Stack, batch: str) -> bool:
    try:
        return status(s.client, batch, failures=False).done
    except UnknownBatch:  # the worker has not planned it yet
        return False


def to_gone(postfix: PrivatePostfix) -> int:
    """How many times Postfix tried to relay anything to the bounced address."""
    return len(postfix.log_matches(rf"to=<{re.escape(GONE_ADDRESS)}>"))


def notifier(
    s: Stack, *args: str, env: dict[str, str] | None = None, stdin: bytes = b""
) -> subprocess.CompletedProcess[str]:
    """The notifier command with the stack's settings, as an organiser, cron or an MTA runs
    it (a wide terminal, so that a table row stays on one line)."""
    done = subprocess.run(
        [NOTIFIER, *args],
        env={**os.environ, "COLUMNS": "200", **notifier_env(s), **(env or {})},
        input=stdin,
        capture_output=True,
        timeout=60,
        check=False,
    )
    return subprocess.CompletedProcess(
        done.args, done.returncode, done.stdout.decode(), done.stderr.decode()
    )


def assert_bounced_and_suppressed(s: Stack, postfix: PrivatePostfix) -> None:
    """The two others reached the sink through Postfix, each from its own signed return
    path and with the organiser's From; Postfix's DSN for the third, piped to `receive`,
    bounced it with status and masked diagnostic and suppressed its address."""
    got = s.sink.wait_for(2)
    assert sorted(r.recipients for r in got) == [(p["email"],) for p in KEEP]
    for r in got:
        [token] = find_tokens(r.sender, BOUNCE_ADDRESS)
        assert verify(token, SECRET.encode()) is not None
        message = message_from_bytes(r.data, policy=policy.default)
        assert message["From"].addresses[0].addr_spec == "arrangementsinfo@kl.dk"
    assert len({r.sender for r in got}) == 2
    # `receive` said 0 (status=sent; logged once the command has returned, so possibly
    # just after the bounce was recorded).
    [token] = wait_for(lambda: pipe_tokens(postfix, "sent"), 10, "Postfix to log the pipe")
    st = status(s.client)
    bounced = only(st.bounced)
    assert (bounced.registration, bounced.recipient) == ("REG-2", GONE_ADDRESS)
    assert verify(token, SECRET.encode()) == message_id(bounced.key)
    record = Outbox(s.client).get(bounced.key)
    assert record is not None and record.bounce_status == "5.1.1"
    assert "User unknown" in record.bounce_diagnostic
    assert GONE_ADDRESS not in record.bounce_diagnostic  # masked before it was stored
    assert bounced.reply.startswith("5.1.1 ")
    [entry] = Suppressions(s.client).list()
    assert entry.address == GONE_ADDRESS and entry.message == bounced.key
    assert entry.reason.startswith("hard bounce 5.1.1") and GONE_ADDRESS not in entry.reason
    assert BounceLog(s.client).stats()["bounced"] == 1
    assert st.counts["sent"] == 2
    assert to_gone(postfix) == 1


def assert_reminder_suppressed_without_smtp(s: Stack, postfix: PrivatePostfix) -> None:
    batch = status(s.client, "b1")
    assert (batch.counts["sent"], batch.counts["suppressed"]) == (2, 1)
    suppressed = only(batch.suppressed)
    assert suppressed.recipient == GONE_ADDRESS
    assert suppressed.reply.startswith("suppressed: hard bounce 5.1.1")
    assert set(reminders_received(s.sink.received)) == {p["email"] for p in KEEP}
    assert to_gone(postfix) == 1  # the confirmation only: the reminder never reached Postfix
    # 3 confirmations and 2 reminders entered Postfix, each from its own return path.
    senders = {m.group(1) for m in postfix.log_matches(r"qmgr.*from=<(bounces\+\w+@kl\.dk)>")}
    assert len(senders) == 5


def assert_status_lists_them(s: Stack) -> None:
    """What the organiser sees: each listed with its code (a wide terminal: one row a line)."""
    shown = notifier(s, "status")
    assert shown.returncode == 0, shown.stderr
    assert re.search(r"bounced\s*│\s*1\b", shown.stdout)
    assert re.search(r"REG-2 .*│ 5\.1\.1 .*User unknown", shown.stdout)
    shown = notifier(s, "status", "--batch", "b1")
    assert shown.returncode == 0, shown.stderr
    assert re.search(r"suppressed\s*│\s*1\b", shown.stdout)
    assert re.search(r"REG-2 .*│ suppressed: hard bounce 5\.1\.1", shown.stdout)


def test_a_real_dsn_bounces_the_message_and_suppresses_the_address(
    stack: Callable[..., Stack], private_postfix: Postfix, sink: Sink
) -> None:
    sink.script.rcpt[GONE_ADDRESS] = USER_UNKNOWN
    started = time.monotonic()
    s, postfix = bounce_stack(stack, private_postfix, sink)
    ready = time.monotonic()

    s.publish(*(created(f"evt-{i}", f"REG-{i}", p) for i, p in enumerate([*KEEP, GONE])))
    wait_for(lambda: status(s.client).counts["bounced"] == 1, 30, "the DSN to bounce a message")
    bounced_at = time.monotonic()
    assert_bounced_and_suppressed(s, postfix)

    # A reminder batch: the bounced attendee's settles `suppressed` without any SMTP.
    s.publish(reminder("rem-1", "b1"))
    wait_for(lambda: batch_done(s, "b1"), 30, "the reminder batch")
    wait_for(lambda: len(reminders_received(s.sink.received)) == 2, 20, "2 reminders")
    wait_for(lambda: postfix.queued() == [], 20, "Postfix's queue to empty")
    finished = time.monotonic()
    assert_reminder_suppressed_without_smtp(s, postfix)

    assert_status_lists_them(s)
    assert GONE_ADDRESS not in s.worker.text()
    print(
        f"BOUNCE E2E: stack and Postfix up in {ready - started:.2f} s; publish -> bounced "
        f"through Postfix's DSN in {bounced_at - ready:.2f} s; reminder batch settled "
        f"in {finished - bounced_at:.2f} s"
    )


def test_redis_down_while_postfix_delivers_the_dsn_keeps_it_queued(
    stack: Callable[..., Stack], private_postfix: Postfix, sink: Sink
) -> None:
    """`receive` exits 75 while Redis is down; Postfix keeps the DSN deferred, and delivers
    it once Redis is back (from its AOF) and the queue is flushed. The DSN is held for the
    pipe (defer_transports) until the test flushes, so that Redis is down when it arrives."""
    sink.script.rcpt[GONE_ADDRESS] = USER_UNKNOWN
    s, postfix = bounce_stack(
        stack,
        private_postfix,
        sink,
        appendonly=True,
        postfix_settings={"defer_transports": "dsnpipe"},
    )
    s.publish(created("evt-gone", "REG-GONE", GONE))
    wait_for(lambda: postfix.log_matches(r"status=deferred \(deferred transport\)"), 30, "a DSN")
    wait_for(lambda: status(s.client).counts["sent"] == 1, 10, "the message recorded as sent")

    s.redis_server.kill()
    down = time.monotonic()
    postfix.flush()
    # The pipe's first outcome: it must be a temporary failure, not an acknowledgement.
    wait_for(
        lambda: pipe_tokens(postfix, PIPE_DEFERRED) or pipe_tokens(postfix, "sent"), 30, "the pipe"
    )
    assert pipe_tokens(postfix, "sent") == [], "the DSN was acknowledged with Redis down"
    tempfail = time.monotonic() - down
    [queued] = postfix.queued()
    assert queued["sender"] == "MAILER-DAEMON"  # the DSN (from <>), still there
    [deferral] = postfix.log_matches(DSN_TO_PIPE.format(PIPE_DEFERRED))
    reason = deferral.group(2)
    assert "temporary failure" in reason and "cannot record the report now" in reason
    assert GONE_ADDRESS not in reason

    s.redis_server.start()
    back = time.monotonic()
    postfix.flush()
    wait_for(lambda: pipe_tokens(postfix, "sent"), 30, "the DSN after Redis came back")
    applied = time.monotonic() - back
    wait_for(lambda: postfix.queued() == [], 20, "Postfix's queue to empty")

    st = status(s.client)
    assert (st.counts["sent"], st.counts["bounced"]) == (0, 1)
    assert only(st.bounced).reply.startswith("5.1.1 ")
    assert [e.address for e in Suppressions(s.client).list()] == [GONE_ADDRESS]
    assert BounceLog(s.client).stats()["bounced"] == 1
    print(
        f"BOUNCE E2E: Redis down -> pipe exit 75 in {tempfail:.2f} s; "
        f"Redis back -> DSN applied in {applied:.2f} s"
    )


def poll(s: Stack, dovecot: PrivateDovecot) -> subprocess.CompletedProcess[str]:
    imap = {
        "NOTIFIER_BOUNCE_IMAP_HOST": "127.0.0.1",
        "NOTIFIER_BOUNCE_IMAP_PORT": str(dovecot.imaps_port),
        "NOTIFIER_BOUNCE_IMAP_USER": dovecot.user,
        "NOTIFIER_BOUNCE_IMAP_PASSWORD": dovecot.password,
        "NOTIFIER_BOUNCE_IMAP_CA_FILE": str(dovecot.ca_file),
    }
    done = notifier(s, "bounces", "poll", env=imap)
    assert GONE_ADDRESS not in done.stdout + done.stderr
    return done


def test_poll_applies_postfixs_dsn_from_a_real_imap_mailbox_once(
    stack: Callable[..., Stack], private_postfix: Postfix, sink: Sink, dovecot: PrivateDovecot
) -> None:
    """Postfix's DSN (saved by its pipe instead of applied) is put into the bounce mailbox;
    `notifier bounces poll` applies it and moves it away; a replay counts as a duplicate."""
    sink.script.rcpt[GONE_ADDRESS] = USER_UNKNOWN
    s, postfix = bounce_stack(stack, private_postfix, sink, pipe=False)
    s.publish(created("evt-gone", "REG-GONE", GONE))
    raw = wait_for(postfix.dropped, 30, "Postfix's DSN")[0]
    report = raw.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")  # as it travels over IMAP
    wait_for(lambda: status(s.client).counts["sent"] == 1, 10, "the message recorded as sent")
    dovecot.append([report])

    started = time.monotonic()
    first = poll(s, dovecot)
    took = time.monotonic() - started
    assert first.returncode == 0, first.stdout + first.stderr
    assert "processed 1 message(s): 1 bounced; left 0" in first.stdout
    assert only(status(s.client).bounced).reply.startswith("5.1.1 ")
    assert [e.address for e in Suppressions(s.client).list()] == [GONE_ADDRESS]
    assert dovecot.messages(DONE) == [report]
    assert dovecot.count("INBOX") == 0

    again = poll(s, dovecot)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "processed 0 message(s): none; left 0" in again.stdout

    dovecot.append([report])  # the same DSN delivered again
    replay = poll(s, dovecot)
    assert replay.returncode == 0, replay.stdout + replay.stderr
    assert "processed 1 message(s): 1 duplicate; left 0" in replay.stdout
    stats = BounceLog(s.client).stats()
    assert (stats["bounced"], stats["duplicate"]) == (1, 1)
    assert dovecot.messages(DONE) == [report, report]
    assert status(s.client).counts["bounced"] == 1
    print(f"BOUNCE E2E: first poll (subprocess, 1 DSN over IMAPS) took {took:.2f} s")


def test_a_dsn_for_a_message_not_yet_recorded_as_sent_is_not_dropped(
    stack: Callable[..., Stack],
) -> None:
    s = stack(start=False, **BOUNCE)
    notice = Notice(
        "evt-gone:confirmation",
        Kind.CONFIRMATION,
        "digitaliseringstraef-2024",
        "REG-GONE",
        Person(GONE["name"], GONE_ADDRESS),
    )
    box = Outbox(s.client)
    box.create(notice, time.time())
    claim = box.claim(notice.key)  # what a worker holds while the relay says 250
    assert claim is not None
    report = dsn(message_token(notice.key, SECRET.encode()), GONE_ADDRESS, 1)

    early = notifier(s, "bounces", "receive", stdin=report)
    # The MTA must keep the report until the message's outcome is recorded.
    assert early.returncode == 75, early.stdout + early.stderr

    box.finish(claim, Settlement("sent", "250 2.0.0 Ok: queued", recipient=GONE_ADDRESS))
    later = notifier(s, "bounces", "receive", stdin=report)
    assert later.returncode == 0 and "bounced" in later.stdout, later.stdout + later.stderr
    assert status(s.client).counts["bounced"] == 1
