"""Redis fills up while the relay holds back its 250: the outcome is recorded once Redis
takes writes again, even after the claim's lease ran out, and the mail is not sent again."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import redis

from notifier.store import keys
from tests.conftest import wait_for
from tests.e2e.conftest import SHORT_LEASE, Stack
from tests.events import created, person

pytestmark = pytest.mark.e2e

KEY = "evt-1:confirmation"


def _out_of_memory(client: redis.Redis) -> None:
    """From now on every write is refused: usage well above `maxmemory`, nothing may be
    evicted. The ballast is written in small pieces: one large SET would leave a large
    query buffer behind, and when Redis frees it later, usage falls below the limit again."""
    for _ in range(80):
        client.append("ballast", b"x" * 65_536)
    client.config_set("maxmemory-policy", "noeviction")
    client.config_set("maxmemory", client.info("memory")["used_memory"] - 2_000_000)
    with pytest.raises(redis.exceptions.OutOfMemoryError):
        client.set("probe", 1)


def _store_now(client: redis.Redis) -> float:
    seconds, micros = client.time()
    return float(seconds) + micros / 1e6


def test_a_full_redis_while_the_relay_answers_records_sent_once(
    stack: Callable[..., Stack],
) -> None:
    # A lease of 4 s; the sweeper looks every 30 s, so the first sweep after Redis takes
    # writes again comes long after the record (which is tried again every 50 ms).
    s = stack(**SHORT_LEASE, sweep_seconds="30")
    s.sink.script.late_reply = 2.0  # the relay stores the mail, then answers 2 s later
    s.publish(created("evt-1", "REG-1", person(1)))
    s.sink.wait_for(1)  # stored: its 250 is on its way
    _out_of_memory(s.client)
    lease = s.client.hget(keys.message(KEY), "lease_until")
    assert lease is not None
    # Past the claim's lease: another worker could take the claim over, were Redis taking
    # writes (it does not, so neither can anyone else).
    wait_for(lambda: _store_now(s.client) > float(lease) + 1.0, 30, "the lease to run out")
    assert s.client.hget(keys.message(KEY), "state") == b"sending"
    wait_for(lambda: "waiting to record an outcome" in s.worker.text(), 10, "the worker to wait")
    s.client.config_set("maxmemory", 0)
    s.client.delete("ballast")
    wait_for(lambda: s.client.hget(keys.message(KEY), "state") == b"sent", 10, "the record")
    s.wait_drained(30)
    s.wait_past_rescue(60)
    assert len(s.sink.received) == 1
    assert s.client.hget(keys.message(KEY), "attempts") == b"1"
