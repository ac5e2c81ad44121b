"""Issue 21 on real services: the policy by reason, the recipient check, bounded input and
8-bit reports, through `notifier bounces receive` as an MTA runs it."""

from __future__ import annotations

import subprocess
from collections.abc import Callable

import pytest
import redis

from notifier.service import Service
from notifier.store.bouncelog import BounceLog
from notifier.store.suppressions import Suppressions
from tests.events import METTE
from tests.integration.test_bounce_intake import (
    BOUNCES,
    NOTIFIER,
    SECRET,
    bounce,
    cli_env,
    outcome,
    receive,
    record,
    registered,
)
from tests.unit.test_bounce_report import sample

pytestmark = pytest.mark.integration


@pytest.fixture
def svc(service: Callable[..., Service]) -> Service:
    return service(bounce_address=BOUNCES, bounce_secret=SECRET)


def test_a_report_for_another_recipient_changes_nothing_and_counts_mismatched(
    svc: Service, redis_client: redis.Redis, redis_url: str
) -> None:
    [mette] = registered(svc, METTE)
    # Our token, but the sample's own (dead) recipient: a forward from Mette's mailbox.
    raw = bounce("dsn_15.txt", mette, "userx@example.com")
    assert outcome(receive(raw, redis_url)) == "mismatched"
    assert record(svc, mette).state == "sent"
    assert Suppressions(redis_client).list() == []
    assert BounceLog(redis_client).stats()["mismatched"] == 1


def test_a_banned_sending_ip_bounces_signals_and_suppresses_nothing(
    svc: Service, redis_client: redis.Redis, redis_url: str
) -> None:
    [mette] = registered(svc, METTE)
    raw = bounce("dsn_15.txt", mette, METTE["email"]).replace(
        b"Status: 5.1.1",
        b"Status: 5.7.606\nDiagnostic-Code: smtp; 550 5.7.606 Access denied,"
        b" banned sending IP [192.0.2.1]",
    )
    assert outcome(receive(raw, redis_url)) == "bounced"
    found = record(svc, mette)
    assert (found.state, found.bounce_reason) == ("bounced", "blocked")
    assert Suppressions(redis_client).list() == []
    log = BounceLog(redis_client)
    assert log.reasons() == {"blocked": 1}
    assert set(log.signals()) == {"blocked"}


def test_a_report_with_raw_8bit_utf8_is_applied(
    svc: Service, redis_client: redis.Redis, redis_url: str
) -> None:
    [mette] = registered(svc, METTE)
    raw = bounce("dsn_15.txt", mette, METTE["email"]).replace(
        b"Status: 5.1.1",
        "Status: 5.1.1\nDiagnostic-Code: smtp; 550 5.1.1 brugeren findes ikke – ukendt".encode(),
    )
    done = receive(raw, redis_url)
    assert outcome(done) == "bounced", done.stderr
    assert "ukendt" in record(svc, mette).bounce_diagnostic
    assert Suppressions(redis_client).get(METTE["email"]) is not None


def test_oversized_and_finely_split_reports_are_refused_and_counted(
    redis_client: redis.Redis, redis_url: str, svc: Service
) -> None:
    big = sample("dsn_15.txt") + b"x" * (70 * 1024)
    parts = b"Content-Type: multipart/mixed; boundary=b\n\n" + b"--b\n\nx\n" * 20 + b"--b--\n"
    limits = {"NOTIFIER_BOUNCE_MAX_BYTES": str(64 * 1024), "NOTIFIER_BOUNCE_MAX_PARTS": "10"}
    assert outcome(receive(big, redis_url, **limits)) == "too_large"
    assert outcome(receive(parts, redis_url, **limits)) == "too_many_parts"
    stats = BounceLog(redis_client).stats()
    assert (stats["too_large"], stats["too_many_parts"]) == (1, 1)


def test_a_refusal_that_cannot_be_recorded_exits_75() -> None:
    big = b"x" * (70 * 1024)
    done = receive(big, "redis://127.0.0.1:1/0", NOTIFIER_BOUNCE_MAX_BYTES=str(64 * 1024))
    assert done.returncode == 75, done.stderr


IMAP = {
    "NOTIFIER_BOUNCE_IMAP_HOST": "imap.kl.dk",
    "NOTIFIER_BOUNCE_IMAP_USER": "bounces",
    "NOTIFIER_BOUNCE_IMAP_PASSWORD": "not needed: Redis is asked first",
}


def test_poll_exits_75_when_redis_is_down_at_the_start() -> None:
    done = notifier_with(["bounces", "poll"], "redis://127.0.0.1:1/0", **IMAP)
    assert done.returncode == 75, (done.stdout, done.stderr)
    assert "Redis did not answer" in done.stderr


def test_an_empty_ca_file_setting_names_its_variable(redis_url: str) -> None:
    done = notifier_with(["bounces", "poll"], redis_url, NOTIFIER_BOUNCE_IMAP_CA_FILE="", **IMAP)
    assert done.returncode == 1
    assert "NOTIFIER_BOUNCE_IMAP_CA_FILE: is empty" in done.stderr


def notifier_with(
    args: list[str], redis_url: str, **extra: str
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [NOTIFIER, *args],
        env=cli_env(redis_url, **extra),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
