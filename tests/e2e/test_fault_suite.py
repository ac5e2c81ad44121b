"""The fault suite on real processes (issue 11): real Celery workers, a private redis-server
and real SMTP servers on loopback, one of them Postfix's smtp-sink. Every scenario prints
"FAULT <scenario>: delivered=.. lost=.. duplicated=.." and asserts 0 lost and at most the
in-flight duplicates (0 where nothing was killed or stopped).

"In flight" is what the killed or stopped processes were sending: each worker here runs 2
pool processes, each with up to 4 SMTP sessions. A confirmation goes out inline in its ingest
task (one session per process busy); a batch's chunks use all four.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable
from datetime import datetime

import pytest
import redis

from devtools.sink import Sink
from notifier.store.outbox import Outbox, Record
from notifier.store.status import status
from tests.conftest import wait_for
from tests.e2e.conftest import NamedWorker, PostfixSink, Stack, skewed_clock, start_all
from tests.e2e.test_faults import tally
from tests.events import created, person, reminder

pytestmark = pytest.mark.e2e

PER_PROCESS = 4  # SMTP sessions of one pool process
PER_WORKER = 2 * PER_PROCESS  # 2 pool processes
SETTLED = ("sent", "failed", "skipped", "unknown")
# A crash or a stall must be noticed quickly for the suite to stay short; the SMTP timeout
# is small because the claim lease must be at least twice it.
FAST_RECOVERY = {
    "visibility_timeout_seconds": "10",
    "claim_lease_seconds": "10",
    "smtp_timeout_seconds": "2",
}


def _events(n: int, offset: int = 0) -> tuple[list[dict[str, object]], set[str]]:
    events = [created(f"evt-{i}", f"REG-{i}", person(i)) for i in range(offset, offset + n)]
    return events, {person(i)["email"] for i in range(offset, offset + n)}


def _recipients(sinks: Iterable[Sink], start: int = 0) -> Counter[str]:
    got: Counter[str] = Counter()
    for sink in sinks:
        for item in sink.received[start:]:
            got.update(item.recipients)
    return got


def _report(scenario: str, got: Counter[str], expected: set[str]) -> tuple[int, int, int]:
    """tally()'s line and figures, for copies counted elsewhere (smtp-sink's dumps, or only
    the mails after a point)."""
    delivered = len(set(got) & expected)
    lost = len(expected - set(got))
    duplicated = sum(got.values()) - len(got)
    print(f"\nFAULT {scenario}: delivered={delivered} lost={lost} duplicated={duplicated}")
    return delivered, lost, duplicated


def _counts(client: redis.Redis) -> dict[str, int]:
    # .get: "unknown" is a state only once the outbox knows it
    counts = status(client, failures=False).counts
    return {state: counts.get(state, 0) for state in ("queued", "sending", "retrying", *SETTLED)}


def _settled(client: redis.Redis) -> int:
    counts = _counts(client)
    return sum(counts[s] for s in SETTLED)


def _records(client: redis.Redis) -> list[Record]:
    prefix = "notifier:msg:"
    found = sorted(k.decode()[len(prefix) :] for k in client.scan_iter(f"{prefix}*", count=1000))
    return Outbox(client).records(found)


def _alive(*workers: NamedWorker) -> bool:
    """True while every worker runs; a dead one fails the test at once, with its log."""
    for w in workers:
        assert w.alive(), f"worker {w.name} died:\n{w.text()[-3000:]}"
    return True


def test_a_redis_killed_and_restarted_from_aof_mid_batch_with_two_workers(
    stack: Callable[..., Stack], workers: Callable[..., NamedWorker]
) -> None:
    s = stack(start=False, appendonly=True, chunk_size="10", **FAST_RECOVERY)
    a, b = workers(s, "a"), workers(s, "b")
    start_all(a, b)
    events, current = _events(60)
    s.publish(*events)
    wait_for(lambda: _counts(s.client)["sent"] == 60, 90, "the 60 confirmations")
    s.wait_drained()
    before = len(s.sink.received)
    s.sink.script.delay = 0.03  # slow enough to be caught in the middle
    s.publish(reminder("rem-a", "redis-crash"))
    s.sink.wait_for(before + 15, timeout=60)
    s.redis_server.kill()
    at_kill = len(s.sink.received) - before
    assert at_kill < len(current), "the batch finished before Redis was killed"
    s.redis_server.start()
    s.sink.script.delay = 0
    wait_for(
        lambda: _alive(a, b) and set(_recipients([s.sink], before)) == current,
        120,
        "every reminder",
    )
    s.wait_drained(60)
    got = _recipients([s.sink], before)
    _, lost, duplicated = _report("Redis SIGKILL + AOF restart mid-batch", got, current)
    # A batch's chunks keep every session of both workers busy
    assert lost == 0 and duplicated <= 2 * PER_WORKER, got.most_common(3)
    st = status(s.client, "redis-crash")
    assert st.counts["sent"] == len(current) and st.done, st


def test_b_one_worker_killed_five_times_mid_stream(stack: Callable[..., Stack]) -> None:
    s = stack(**FAST_RECOVERY)
    s.sink.script.delay = 0.05
    events, expected = _events(150)
    s.publish(*events)
    for kill in range(5):
        s.sink.wait_for(len(s.sink.received) + 10, timeout=90)
        s.worker.kill()
        if kill < 4:
            s.worker.start(60)
    assert len(_recipients([s.sink])) < len(expected), "the stream ended before the last kill"
    s.sink.script.delay = 0
    s.worker.start(60)
    wait_for(lambda: set(_recipients([s.sink])) >= expected, 150, "every confirmation")
    s.wait_drained(60)
    _, lost, duplicated = tally([s.sink], expected, "SIGKILL x5 of one worker")
    # Confirmations go out inline: one session per process in flight at each kill
    assert lost == 0 and duplicated <= 5 * PER_WORKER
    wait_for(lambda: _settled(s.client) == len(expected), 30, "every message to settle")
    assert _counts(s.client)["sent"] == len(expected)


def test_c_worker_stopped_longer_than_its_claim_lease(
    stack: Callable[..., Stack], workers: Callable[..., NamedWorker]
) -> None:
    s = stack(
        start=False,
        claim_lease_seconds="5",
        smtp_timeout_seconds="2",
        visibility_timeout_seconds="10",
    )
    a, b = workers(s, "a"), workers(s, "b")
    start_all(a, b)
    s.sink.script.delay = 0.3  # every process is in the middle of a send most of the time
    events, expected = _events(60)
    s.publish(*events)
    # Four claims at once: both processes of each worker are sending, so `a` holds claims
    wait_for(lambda: _counts(s.client)["sending"] >= 4, 60, "both workers to be sending")
    a.pause()
    try:
        # Only `b` runs: it must take over a's claims once their lease ran out, and a's
        # prefetched tasks once the broker's visibility timeout did.
        wait_for(lambda: set(_recipients([s.sink])) >= expected, 120, "b to deliver all")
        taken_over = [r.key for r in _records(s.client) if r.attempts >= 2]
    finally:
        a.resume()
    s.sink.script.delay = 0
    assert taken_over, "no claim of the stopped worker was taken over"
    wait_for(lambda: _settled(s.client) == len(expected), 60, "every message to settle")
    s.wait_drained(60)
    _alive(a, b)
    _, lost, duplicated = tally([s.sink], expected, "SIGSTOP past the claim lease")
    assert lost == 0 and duplicated <= PER_WORKER
    assert _counts(s.client)["sent"] == len(expected)


def test_d_soft_refusals_then_relay_refusing_connections(
    stack: Callable[..., Stack], postfix_sink: Callable[..., PostfixSink]
) -> None:
    s = stack()
    s.sink.script.mail.extend(["421 4.3.2 Service shutting down"] * 3)
    s.sink.script.rcpt_next.extend(["451 4.3.0 Try again later"] * 3)
    s.sink.script.data.extend(["451 4.3.0 Local error in processing"] * 3)
    first, expected = _events(30)
    s.publish(*first)
    wait_for(lambda: set(_recipients([s.sink])) >= expected, 60, "the first 30 mails")
    script = s.sink.script
    assert not (script.mail or script.rcpt_next or script.data), "a scripted reply was unused"
    port = s.sink.port
    s.sink.stop()  # connections refused from now on
    second, later = _events(20, offset=100)
    s.publish(*second)
    wait_for(lambda: _counts(s.client)["retrying"] == 20, 60, "the next 20 to wait")
    relay = postfix_sink(port=port)  # back, and this time not ours
    wait_for(lambda: {r for r, _ in relay.copies()} >= later, 60, "delivery after the outage")
    s.wait_drained()
    got = _recipients([s.sink]) + Counter(r for r, _ in relay.copies())
    result = _report("421 MAIL, 451 RCPT/DATA, refused", got, expected | later)
    assert result == (50, 0, 0)
    wait_for(lambda: _settled(s.client) == 50, 30, "every message to settle")
    assert _counts(s.client)["sent"] == 50


def _unknown_outcome(
    stack: Callable[..., Stack], relay: PostfixSink, scenario: str
) -> tuple[Counter[str], dict[str, int]]:
    """Ten confirmations through a relay that never gives the final dot a reply in time."""
    s = stack(
        smtp_port=str(relay.port),
        smtp_timeout_seconds="2",
        smtp_data_timeout_seconds="1",
        claim_lease_seconds="10",
    )
    events, expected = _events(10)
    s.publish(*events)

    def copies() -> Counter[str]:
        return Counter(mid for _, mid in relay.copies())

    # Done when every message settled; a third copy of any is already a failure
    wait_for(
        lambda: _settled(s.client) == 10 or max(copies().values(), default=0) > 2,
        90,
        "every message to settle",
    )
    got = Counter(r for r, _ in relay.copies())
    _, lost, _ = _report(scenario, got, expected)
    counts = _counts(s.client)
    print(f"copies per Message-ID: {sorted(Counter(copies().values()).items())}; {counts}")
    assert lost == 0
    return copies(), counts


def test_e_reply_to_the_final_dot_comes_too_late(
    stack: Callable[..., Stack], postfix_sink: Callable[..., PostfixSink]
) -> None:
    relay = postfix_sink("-W", ".:4")  # answers the final dot after 4 s
    copies, counts = _unknown_outcome(stack, relay, "final dot answered late")
    assert len(copies) == 10 and max(copies.values()) <= 2, copies
    assert counts["sent"] + counts["unknown"] == 10 and counts["failed"] == 0, counts


def test_e_relay_drops_the_connection_after_storing(
    stack: Callable[..., Stack], postfix_sink: Callable[..., PostfixSink]
) -> None:
    relay = postfix_sink("-q", ".")  # stores the message, then hangs up without a reply
    copies, counts = _unknown_outcome(stack, relay, "dropped after the final dot")
    assert len(copies) == 10 and max(copies.values()) <= 2, copies
    assert counts["sent"] + counts["unknown"] == 10 and counts["failed"] == 0, counts


def _clock_of(w: NamedWorker) -> datetime:
    """The time on the worker's latest log line: its own wall clock, as it logged it."""
    stamps = [line[1:24] for line in w.text().splitlines() if line.startswith("[20")]
    return datetime.strptime(stamps[-1], "%Y-%m-%d %H:%M:%S,%f")


@pytest.mark.parametrize("offset", ["+15", "-15"])
def test_f_two_workers_one_clock_fifteen_seconds_off(
    stack: Callable[..., Stack], workers: Callable[..., NamedWorker], offset: str
) -> None:
    # The lease is shorter than the skew: judged by the other worker's clock, a claim has
    # always run out (-15: the skewed worker's own claims; +15: everybody else's).
    s = stack(start=False, claim_lease_seconds="5", smtp_timeout_seconds="2")
    skewed, normal = workers(s, "skewed", **skewed_clock(offset)), workers(s, "normal")
    start_all(skewed, normal)
    skew = (_clock_of(skewed) - datetime.now()).total_seconds()
    assert abs(skew) > 10 and (skew > 0) == (offset[0] == "+"), f"libfaketime: {skew} s"
    # One worker holds the claims while the other is idle with its sweeper running: the
    # worker whose clock puts the other's leases in the past is made the idle one. It is
    # stopped only while the holder fetches the tasks (prefetch 4 x 2 processes); the one
    # task its own pending BRPOP may have taken is all it gets.
    holder, idle = (skewed, normal) if offset[0] == "-" else (normal, skewed)
    s.sink.script.delay = 1.5  # every message stays in flight across the sweeps
    events, expected = _events(8)
    idle.pause()
    try:
        s.publish(*events)
        wait_for(
            lambda: s.client.llen("notifier") == 0 and s.client.hlen("unacked") >= 7,
            30,
            f"{holder.name} to fetch the tasks",
        )
    finally:
        idle.resume()
    wait_for(lambda: set(_recipients([s.sink])) >= expected, 60, "every confirmation")
    wait_for(lambda: _settled(s.client) == len(expected), 30, "every message to settle")
    s.wait_drained()
    _alive(skewed, normal)
    scenario = f"one worker's clock {offset} s off"
    assert tally([s.sink], expected, scenario) == (8, 0, 0)
    assert _counts(s.client)["sent"] == len(expected)
