"""Issue 21 end to end: what a hostile or broken report costs, and a report about another
recipient, through a real Postfix (its DSN, its pipe to `notifier bounces receive`) and a
real Dovecot (`notifier bounces poll`).

Time and memory are measured around one `notifier` command at a time: a small Python
wrapper runs it and reports resource.getrusage(RUSAGE_CHILDREN) (peak RSS, CPU) and the
wall time, so that no other child of the test process (Redis, Postfix, the worker) counts.
The bounds asserted are generous (a loaded 2-core machine must not flake them); the figures
measured are in bench/README.md ("Bounce input limits"). Run with -s to see them
("BOUNCE LIMITS: ...").
"""

from __future__ import annotations

import json
import os
import smtplib
import subprocess
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass

import pytest

from devtools.dovecot import PrivateDovecot
from devtools.postfix import PrivatePostfix
from devtools.sink import Sink
from notifier.store.bouncelog import BounceLog
from notifier.store.status import status
from notifier.store.suppressions import Suppressions
from tests.conftest import wait_for
from tests.e2e.conftest import Stack
from tests.e2e.test_bounces_e2e import (
    BOUNCE,
    BOUNCE_ADDRESS,
    DONE,
    NOTIFIER,
    Postfix,
    bounce_stack,
    notifier_env,
    pipe_tokens,
)
from tests.e2e.test_postfix_dsn import send
from tests.events import created, person

pytestmark = pytest.mark.e2e

MiB = 1024 * 1024
LIMIT = 20 * MiB  # NOTIFIER_BOUNCE_MAX_BYTES's default
# Bounds for one command, start-up included (about 1 s of it): far above what is measured.
MAX_SECONDS = 20.0
MAX_RSS_MB = 300.0
# A report just under the limit is parsed whole: the standard library's parser alone peaks
# at several times the message's size (bench/README.md).
MAX_RSS_PARSED_MB = 450.0
HEAD = (
    b"From: MAILER-DAEMON@mta.example.org\nTo: bounces+x@kl.dk\n"
    b"Subject: Undelivered Mail Returned to Sender\nMIME-Version: 1.0\n"
)

MEASURE = """
import json, resource, subprocess, sys, time
with open(sys.argv[1], "rb") as stdin:
    started = time.monotonic()
    done = subprocess.run(sys.argv[2:], stdin=stdin, capture_output=True)
    wall = time.monotonic() - started
used = resource.getrusage(resource.RUSAGE_CHILDREN)
print(json.dumps({
    "returncode": done.returncode,
    "stdout": done.stdout.decode(errors="replace"),
    "stderr": done.stderr.decode(errors="replace"),
    "wall": wall,
    "cpu": used.ru_utime + used.ru_stime,
    "rss_mb": used.ru_maxrss / 1024,
}))
"""


@dataclass(frozen=True)
class Run:
    returncode: int
    stdout: str
    stderr: str
    wall: float
    cpu: float
    rss_mb: float

    def within_bounds(self, rss_mb: float = MAX_RSS_MB) -> None:
        assert self.wall < MAX_SECONDS and self.cpu < MAX_SECONDS, self
        assert self.rss_mb < rss_mb, self

    def figures(self) -> str:
        return f"{self.wall:.2f} s wall, {self.cpu:.2f} s CPU, {self.rss_mb:.0f} MB max RSS"


def measured(args: list[str], env: dict[str, str], stdin: bytes = b"") -> Run:
    """`notifier ARGS` with `stdin`, alone under the wrapper; its exit status and costs."""
    with tempfile.NamedTemporaryFile(prefix="notifier-input-") as fed:
        fed.write(stdin)
        fed.flush()
        done = subprocess.run(
            [sys.executable, "-c", MEASURE, fed.name, NOTIFIER, *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=True,
        )
    return Run(**json.loads(done.stdout))


def load() -> str:
    return "load average {:.2f} {:.2f} {:.2f}".format(*os.getloadavg())


# Inputs ---------------------------------------------------------------------------------------


def oversized(size: int) -> bytes:
    """A DSN-looking message of `size` bytes (an original message attached whole)."""
    head = HEAD + b"Content-Type: text/plain\n\nYour message could not be delivered.\n"
    line = b"x" * 76 + b"\n"
    return head + line * ((size - len(head)) // len(line) + 1)


def many_parts(parts: int) -> bytes:
    body = b"--b\nContent-Type: text/plain\n\nx\n" * parts + b"--b--\n"
    return HEAD + b"Content-Type: multipart/mixed; boundary=b\n\n" + body


def deep_multipart(depth: int) -> bytes:
    """Multiparts nested `depth` deep: two boundary lines a level."""
    opened = b"".join(
        b'Content-Type: multipart/mixed; boundary="b%d"\n\n--b%d\n' % (n, n) for n in range(depth)
    )
    closed = b"".join(b"\n--b%d--\n" % n for n in reversed(range(depth)))
    return HEAD + opened + b"Content-Type: text/plain\n\nx\n" + closed


def deep_rfc822(depth: int) -> bytes:
    """Attached messages nested `depth` deep: no boundary line at all."""
    return HEAD + b"Content-Type: message/rfc822\n\n" * depth + b"Content-Type: text/plain\n\nx\n"


# Through `receive`, as an MTA's pipe runs it --------------------------------------------------


def test_oversized_finely_split_and_deeply_nested_reports_cost_little(
    stack: Callable[..., Stack],
) -> None:
    s = stack(start=False, **BOUNCE)
    env = {**os.environ, **notifier_env(s)}
    cases = {
        "over the limit (20 MiB + 64 KiB)": (oversized(LIMIT + 64 * 1024), "too_large"),
        "just under the limit (20 MiB - 64 KiB), parsed": (
            oversized(LIMIT - 64 * 1024),
            "unrecognised",
        ),
        "50,000 parts": (many_parts(50_000), "too_many_parts"),
        "multipart nested 240 deep": (deep_multipart(240), "unrecognised"),
        "message/rfc822 nested 50,000 deep": (deep_rfc822(50_000), "unrecognised"),
    }
    for name, (raw, expected) in cases.items():
        run = measured(["bounces", "receive"], env, raw)
        assert run.returncode == 0, (name, run)
        assert run.stdout == f"notifier bounces receive: {expected}\n", (name, run)
        run.within_bounds(MAX_RSS_PARSED_MB if "parsed" in name else MAX_RSS_MB)
        print(f"BOUNCE LIMITS: receive, {name} ({len(raw):,} bytes): {run.figures()}; {load()}")
    stats = BounceLog(s.client).stats()
    assert (stats["too_large"], stats["too_many_parts"], stats["unrecognised"]) == (1, 1, 3)


# Through a real Postfix: its DSN for another recipient, and a report split 50,000 times ------


def test_postfixs_dsn_about_another_recipient_changes_nothing(
    stack: Callable[..., Stack], private_postfix: Postfix, sink: Sink
) -> None:
    """Mette's mailbox forwards to a dead one: the DSN comes back to the return path of her
    message but names the dead address. Counted `mismatched`; nothing else changes."""
    dead = "gammel.adresse@example.org"
    sink.script.rcpt[dead] = f"550 5.1.1 <{dead}>: Recipient address rejected: User unknown"
    s, postfix = bounce_stack(stack, private_postfix, sink)
    s.publish(created("evt-1", "REG-1", person(1)))
    [sent] = s.sink.wait_for(1)
    wait_for(lambda: status(s.client).counts["sent"] == 1, 20, "the message recorded as sent")

    # The forward: the same envelope sender (our signed return path), the dead recipient.
    send(postfix, [dead], sender=sent.sender)
    log = BounceLog(s.client)
    wait_for(lambda: log.stats()["mismatched"] == 1, 30, "Postfix's DSN to be received")
    token = sent.sender.partition("+")[2].partition("@")[0]
    wait_for(lambda: token in pipe_tokens(postfix, "sent"), 10, "the pipe to exit 0")
    st = status(s.client)
    assert (st.counts["sent"], st.counts["bounced"]) == (1, 0)
    assert Suppressions(s.client).list() == []
    assert log.reasons() == {} and log.signals() == {}


def test_a_finely_split_report_through_postfixs_pipe_is_refused_and_taken(
    stack: Callable[..., Stack], private_postfix: Postfix, sink: Sink
) -> None:
    s, postfix = bounce_stack(stack, private_postfix, sink)
    raw = many_parts(50_000).replace(b"\n", b"\r\n")
    send_raw(postfix, raw)
    wait_for(lambda: BounceLog(s.client).stats()["too_many_parts"] == 1, 60, "the refusal")
    # Exit 0: Postfix counts the report delivered and keeps nothing.
    wait_for(lambda: postfix.log_matches(r"relay=dsnpipe, .*status=sent"), 10, "delivered")
    wait_for(lambda: postfix.queued() == [], 20, "Postfix's queue to empty")


def send_raw(postfix: PrivatePostfix, raw: bytes) -> None:
    """One message from the null sender to the bounce address, as a remote MTA's DSN."""
    with smtplib.SMTP("127.0.0.1", postfix.port, timeout=30) as smtp:
        assert smtp.sendmail("", [BOUNCE_ADDRESS], raw) == {}


# Through a real Dovecot: `poll` refuses by size before it fetches --------------------------


def test_poll_refuses_a_large_and_a_finely_split_report_within_bounds(
    stack: Callable[..., Stack], dovecot: PrivateDovecot
) -> None:
    s = stack(start=False, **BOUNCE)
    crlf = [
        oversized(LIMIT + 64 * 1024).replace(b"\n", b"\r\n"),
        many_parts(50_000).replace(b"\n", b"\r\n"),
        deep_multipart(240).replace(b"\n", b"\r\n"),
    ]
    dovecot.append(crlf)
    env = {
        **os.environ,
        **notifier_env(s),
        "NOTIFIER_BOUNCE_IMAP_HOST": "127.0.0.1",
        "NOTIFIER_BOUNCE_IMAP_PORT": str(dovecot.imaps_port),
        "NOTIFIER_BOUNCE_IMAP_USER": dovecot.user,
        "NOTIFIER_BOUNCE_IMAP_PASSWORD": dovecot.password,
        "NOTIFIER_BOUNCE_IMAP_CA_FILE": str(dovecot.ca_file),
    }
    run = measured(["bounces", "poll"], env)
    assert run.returncode == 0, run
    assert "processed 3 message(s): 1 too_large, 1 too_many_parts, 1 unrecognised" in run.stdout
    run.within_bounds()
    assert dovecot.count("INBOX") == 0 and dovecot.count(DONE) == 3
    size = sum(len(m) for m in crlf)
    print(f"BOUNCE LIMITS: poll of 3 ({size:,} bytes in all): {run.figures()}; {load()}")
