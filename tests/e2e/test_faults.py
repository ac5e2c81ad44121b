"""Fault injection on real processes: every scenario counts what was delivered, lost (must be
0) and duplicated (at most what was in flight when something was killed)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable

import pytest

from devtools.sink import Sink
from notifier.broker import INFLIGHT_REGISTRY
from notifier.store.codec import text
from notifier.store.status import status
from notifier.tasks import QUEUE, UNACKED_MUTEX_EXPIRE
from tests.conftest import wait_for
from tests.e2e.conftest import Stack
from tests.events import created, person

pytestmark = pytest.mark.e2e

IN_FLIGHT = 2 * 4  # worker processes x SMTP sessions each


def tally(sinks: list[Sink], expected: set[str], scenario: str) -> tuple[int, int, int]:
    got: Counter[str] = Counter()
    for sink in sinks:
        for item in sink.received:
            got.update(item.recipients)
    delivered = len(set(got) & expected)
    lost = len(expected - set(got))
    duplicated = sum(got.values()) - len(got)
    print(f"\nFAULT {scenario}: delivered={delivered} lost={lost} duplicated={duplicated}")
    return delivered, lost, duplicated


def _events(n: int, offset: int = 0) -> tuple[list[dict[str, object]], set[str]]:
    events = [created(f"evt-{i}", f"REG-{i}", person(i)) for i in range(offset, offset + n)]
    return events, {person(i)["email"] for i in range(offset, offset + n)}


def _all_arrived(sinks: list[Sink], expected: set[str]) -> bool:
    return expected <= {r for s in sinks for item in s.received for r in item.recipients}


def test_scripted_replies_and_dropped_connections(stack: Callable[..., Stack]) -> None:
    s = stack()
    s.sink.script.data.extend(
        ["421 4.7.0 try later", "451 4.3.0 local error", "452 4.3.1 insufficient storage"]
    )
    s.sink.script.drop_data = 2
    s.sink.script.rcpt["deltager7@"] = "550 5.1.1 no such user"
    s.sink.script.rcpt["deltager8@"] = "554 5.7.1 refused"
    events, expected = _events(30)
    s.publish(*events)
    bounced = {person(7)["email"], person(8)["email"]}
    wait_for(lambda: _all_arrived([s.sink], expected - bounced), 60, "the deliverable mails")
    s.wait_drained()
    assert tally([s.sink], expected - bounced, "4xx/5xx/drop") == (28, 0, 0)
    st = status(s.client)
    assert (st.counts["sent"], st.counts["failed"]) == (28, 2)
    assert {f.reply for f in st.failures} == {"550 5.1.1 no such user", "554 5.7.1 refused"}


def test_worker_killed_mid_stream(stack: Callable[..., Stack]) -> None:
    s = stack(visibility_timeout_seconds="10", claim_lease_seconds="10", smtp_timeout_seconds="2")
    s.sink.script.delay = 0.05
    events, expected = _events(120)
    s.publish(*events)
    s.sink.wait_for(25, timeout=60)
    s.worker.kill()
    assert len(s.sink.received) < 120
    s.sink.script.delay = 0
    s.worker.start()
    wait_for(lambda: _all_arrived([s.sink], expected), 120, "every confirmation")
    s.wait_drained()
    _, lost, duplicated = tally([s.sink], expected, "SIGKILL mid-stream")
    assert lost == 0 and duplicated <= IN_FLIGHT


def test_worker_killed_while_it_restores_unacked_tasks(stack: Callable[..., Stack]) -> None:
    """The root cause of a flaky SIGKILL run: a worker killed while it restores abandoned
    tasks leaves kombu's restore lock behind, and with kombu's default expiry (300 s) no
    worker restores anything for five minutes. The dead worker's unacknowledged ingest
    tasks (their events not yet applied, so the sweeper cannot know of them) waited that
    long. The lock now expires after UNACKED_MUTEX_EXPIRE seconds."""
    s = stack(visibility_timeout_seconds="10", claim_lease_seconds="10", smtp_timeout_seconds="2")
    s.sink.script.delay = 0.1
    events, expected = _events(60)
    s.publish(*events)
    s.sink.wait_for(5, timeout=60)
    # Held as kombu's restore_visible holds it, at the moment the worker dies.
    lock = s.client.lock("unacked_mutex", timeout=UNACKED_MUTEX_EXPIRE)
    assert lock.acquire(blocking=True, blocking_timeout=10)
    s.worker.kill()
    assert len(s.sink.received) < 60
    s.sink.script.delay = 0
    s.worker.start()
    # Well under kombu's default 300 s, with room for a slow machine.
    wait_for(lambda: _all_arrived([s.sink], expected), 120, "every confirmation")
    s.wait_drained()
    _, lost, duplicated = tally([s.sink], expected, "SIGKILL holding the restore lock")
    assert lost == 0 and duplicated <= IN_FLIGHT


def test_a_task_popped_by_a_worker_that_died_before_recording_it_comes_back(
    stack: Callable[..., Stack],
) -> None:
    """kombu pops a task and only then records it as unacknowledged; a worker killed between
    the two lost it. Our transport pops into an in-flight list of the channel's own: here a
    task sits in the list of a channel that is gone (no liveness key), as SIGKILL at that
    moment leaves it, and a live worker's restore puts it back on the queue."""
    s = stack(start=False, visibility_timeout_seconds="10")
    event = created("evt-popped", "REG-popped", person(1))
    s.publish(event)
    inflight = f"{INFLIGHT_REGISTRY}.notifier.dead0123"
    assert s.client.rpoplpush(QUEUE, inflight) is not None  # popped, then the worker died
    s.client.hset(INFLIGHT_REGISTRY, inflight, QUEUE)
    assert s.client.llen(QUEUE) == 0
    s.worker.start()
    s.sink.wait_for(1, timeout=60)
    s.wait_drained()
    assert tally([s.sink], {person(1)["email"]}, "a popped, unrecorded task") == (1, 0, 0)
    # The live worker pops the same way: its own in-flight list is registered and alive.
    live = [text(k) for k in s.client.hkeys(INFLIGHT_REGISTRY)]
    assert len(live) == 1 and s.client.exists(f"{live[0]}.alive")
    assert not s.client.exists(inflight) and not s.client.hexists(INFLIGHT_REGISTRY, inflight)


def test_sigterm_lets_in_flight_sends_finish(stack: Callable[..., Stack]) -> None:
    s = stack()
    s.sink.script.delay = 0.05
    events, expected = _events(80)
    s.publish(*events)
    s.sink.wait_for(15, timeout=60)
    s.worker.stop()  # SIGTERM to the main process, as systemd or docker stop would
    # Nothing was left half-done: every message is either sent or still waiting its turn
    assert status(s.client).counts["sending"] == 0
    s.sink.script.delay = 0
    s.worker.start()
    wait_for(lambda: _all_arrived([s.sink], expected), 60, "every confirmation")
    s.wait_drained()
    assert tally([s.sink], expected, "SIGTERM") == (80, 0, 0)


def test_relay_down_for_a_while(stack: Callable[..., Stack]) -> None:
    s = stack()
    port = s.sink.port
    s.sink.stop()
    events, expected = _events(20)
    s.publish(*events)
    wait_for(lambda: status(s.client).counts["retrying"] == 20, 30, "messages to wait")
    with Sink(port=port) as back:
        wait_for(lambda: _all_arrived([back], expected), 60, "delivery after the outage")
        s.wait_drained()
        assert tally([back], expected, "relay down") == (20, 0, 0)


def test_redis_killed_and_restarted_from_aof(stack: Callable[..., Stack]) -> None:
    s = stack(
        appendonly=True,
        visibility_timeout_seconds="10",
        claim_lease_seconds="10",
        smtp_timeout_seconds="2",
    )
    s.sink.script.delay = 0.03
    events, expected = _events(60)
    s.publish(*events)
    s.sink.wait_for(15, timeout=60)
    s.redis_server.kill()
    s.redis_server.start()
    s.sink.script.delay = 0
    wait_for(lambda: _all_arrived([s.sink], expected), 120, "delivery after the restart")
    s.wait_drained(60)
    _, lost, duplicated = tally([s.sink], expected, "Redis killed, AOF restart")
    assert lost == 0 and duplicated <= IN_FLIGHT
