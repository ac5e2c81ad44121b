"""`notifier suppressions [add ADDRESS | remove ADDRESS]` as a real subprocess against the
tests' Redis, and what delivery (the aiosmtpd sink) does with what the organiser changed."""

from __future__ import annotations

import re
from collections.abc import Callable

import pytest
import redis

from devtools.sink import Sink
from notifier.service import Service
from notifier.store.bouncelog import BounceLog
from notifier.store.suppressions import COMPLAINT, ORGANISER, Suppressions, hard_bounce_reason
from tests.events import JENS, METTE, created, reminder
from tests.integration.test_bounce_intake import BOUNCE_SETTINGS, notifier, record

pytestmark = pytest.mark.integration

T0 = 1_700_000_000.0  # 2023-11-14 22:13:20 UTC
KEY = "digitaliseringstraef-2024:REG-1:confirmation:1"


def test_the_list_shows_address_reason_time_and_message(
    redis_client: redis.Redis, redis_url: str
) -> None:
    sup = Suppressions(redis_client)
    sup.add(METTE["email"], hard_bounce_reason("5.1.1", "user unknown"), message=KEY, now=T0)
    sup.add("Jens.Odegaard@AARHUS.dk", COMPLAINT, message=None, now=T0 + 60)
    log = BounceLog(redis_client)
    for outcome in ("bounced", "bounced", "forged"):
        log.count(outcome)
    done = notifier(["suppressions"], redis_url)
    assert done.returncode == 0, done.stderr
    rows = [line for line in done.stdout.splitlines() if "@" in line]
    assert len(rows) == 2
    assert re.search(
        rf"{re.escape(METTE['email'])} .*hard bounce 5\.1\.1: user unknown .*"
        rf"2023-11-14 22:13:20 .*{re.escape(KEY)}",
        rows[0],
    ), rows[0]
    assert re.search(r"jens\.odegaard@aarhus\.dk .*complaint .*2023-11-14 22:14:20", rows[1])
    assert "2 suppressed address(es)" in done.stdout
    assert re.search(r"reports received: .*2 bounced.*1 forged", done.stdout)


def test_an_empty_list_says_so(redis_client: redis.Redis, redis_url: str) -> None:
    done = notifier(["suppressions"], redis_url)
    assert done.returncode == 0, done.stderr
    assert "0 suppressed address(es)" in done.stdout


def test_add_stops_mail_to_the_address_and_remove_lets_it_through(
    service: Callable[..., Service], redis_client: redis.Redis, redis_url: str, sink: Sink
) -> None:
    svc = service(**BOUNCE_SETTINGS)
    svc.deliver(
        svc.ingest(created("e1", "REG-1", METTE)) + svc.ingest(created("e2", "REG-2", JENS))
    )
    assert len(sink.received) == 2

    added = notifier(["suppressions", "add", "Mette.Sorensen@AARHUS.dk"], redis_url)
    assert added.returncode == 0, added.stderr
    entry = Suppressions(redis_client).get(METTE["email"])
    assert entry is not None and (entry.address, entry.reason) == (METTE["email"], ORGANISER)
    assert entry.message is None
    sink.received.clear()
    first = svc.ingest(reminder("r1", "uge-1"))
    svc.deliver(first)
    assert [m.recipients for m in sink.received] == [(JENS["email"],)]
    states = {record(svc, k).sent_to: record(svc, k).state for k in first}
    assert states == {METTE["email"]: "suppressed", JENS["email"]: "sent"}

    removed = notifier(["suppressions", "remove", "mette.sorensen@aarhus.dk"], redis_url)
    assert removed.returncode == 0, removed.stderr
    assert Suppressions(redis_client).list() == []
    sink.received.clear()
    svc.deliver(svc.ingest(reminder("r2", "uge-2")))
    assert sorted(m.recipients for m in sink.received) == [(JENS["email"],), (METTE["email"],)]


@pytest.mark.parametrize("address", ["ole@", "ole.aarhus.dk", "ole@@aarhus.dk", "Ole <o@kl.dk>"])
def test_a_bad_address_is_refused_with_the_address_named(
    redis_client: redis.Redis, redis_url: str, address: str
) -> None:
    done = notifier(["suppressions", "add", address], redis_url)
    assert done.returncode == 2, (done.stdout, done.stderr)
    assert "ADDRESS" in done.stderr and address in done.stderr, done.stderr
    assert Suppressions(redis_client).list() == []


def test_removing_an_address_that_is_not_suppressed_says_so(
    redis_client: redis.Redis, redis_url: str
) -> None:
    done = notifier(["suppressions", "remove", "nobody@kl.dk"], redis_url)
    assert done.returncode == 1
    assert "not suppressed" in done.stderr
