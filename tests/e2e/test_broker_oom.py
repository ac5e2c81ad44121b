"""No event is lost when the one Redis that is both broker and store runs out of memory while
the worker takes a task from the queue (see notifier/broker.py)."""

from __future__ import annotations

import os
import signal
from collections import Counter
from collections.abc import Callable

import pytest
import redis

from notifier.broker import INFLIGHT_REGISTRY
from notifier.tasks import QUEUE
from tests.conftest import wait_for
from tests.e2e.conftest import NamedWorker, Stack, proc_stats
from tests.events import created, person

pytestmark = pytest.mark.e2e

EVENTS = 20
WAITING = "broker Redis refuses writes"


def _out_of_memory(client: redis.Redis) -> None:
    """From now on every write is refused: usage above `maxmemory`, nothing may be evicted.
    BRPOP still works, as it frees memory."""
    client.set("ballast", b"x" * 1_000_000)
    client.config_set("maxmemory-policy", "noeviction")
    client.config_set("maxmemory", client.info("memory")["used_memory"] - 500_000)
    with pytest.raises(redis.exceptions.OutOfMemoryError):
        client.set("probe", 1)


def _mails(s: Stack) -> Counter[str]:
    return Counter(r for item in s.sink.received for r in item.recipients)


def _each_mail_once(s: Stack, count: int) -> None:
    expected = {person(i)["email"] for i in range(count)}
    wait_for(lambda: expected <= set(_mails(s)), 90, "every mail")
    s.wait_drained(30)
    assert set(_mails(s)) == expected
    assert all(n == 1 for n in _mails(s).values()), _mails(s)
    assert s.client.hlen("notifier:dead") == 0


def _children(pid: int) -> list[int]:
    """The pool processes of a worker's main process."""
    return [child for child, fields in proc_stats() if int(fields[1]) == pid]


def test_a_task_popped_while_redis_is_full_is_kept_and_the_worker_lives(
    stack: Callable[..., Stack], workers: Callable[..., NamedWorker]
) -> None:
    s = stack(start=False)  # no NOTIFIER_REDIS_URL: the store is the broker's Redis
    w = workers(s, "oom").start()

    # Stopped, the worker cannot record anything; its BRPOP, if one is pending, is still
    # served, so a message may leave the queue now and be recorded only after SIGCONT.
    w.pause()
    s.publish(*(created(f"evt-{i}", f"REG-{i}", person(i)) for i in range(EVENTS)))
    _out_of_memory(s.client)
    w.resume()

    wait_for(lambda: WAITING in w.text() or not w.alive(), 30, "the worker to meet the OOM")
    assert w.alive() and "Unrecoverable error" not in w.text(), w.text()[-3000:]
    # At most one task has left the queue: the pop the stopped worker had pending, if it had
    # one (a pop sent after the store filled up is refused). It is in the worker's in-flight
    # list, not recorded as unacknowledged, and the worker takes no other while it waits.
    inflight = sum(int(s.client.llen(k)) for k in s.client.hkeys(INFLIGHT_REGISTRY))
    assert s.client.llen(QUEUE) + inflight == EVENTS
    assert inflight <= 1
    assert s.client.hlen("unacked") == 0

    s.client.config_set("maxmemory", 0)
    s.client.delete("ballast")

    _each_mail_once(s, EVENTS)
    assert w.alive() and "Unrecoverable error" not in w.text(), w.text()[-3000:]


def test_a_task_requeued_while_redis_is_full_is_kept_and_the_worker_lives(
    stack: Callable[..., Stack], workers: Callable[..., NamedWorker]
) -> None:
    """The other way in: tasks recorded before Redis filled up run while it is full. Their
    store writes fail, their retries cannot be published, so each is rejected with requeue,
    and that requeue (an LPUSH) is refused too."""
    s = stack(start=False)
    w = workers(s, "full").start()
    assert w.proc is not None
    pool = _children(w.proc.pid)
    assert pool, "the worker has pool processes"

    # The pool processes wait while the main process takes and records the tasks.
    for pid in pool:
        os.kill(pid, signal.SIGSTOP)
    count = 4  # no more than the worker prefetches (2 processes x 4), so it records them all
    s.publish(*(created(f"evt-{i}", f"REG-{i}", person(i)) for i in range(count)))
    wait_for(lambda: s.client.hlen("unacked") == count, 30, "the tasks to be recorded")
    _out_of_memory(s.client)
    for pid in pool:
        os.kill(pid, signal.SIGCONT)

    wait_for(lambda: "reject a task" in w.text() or not w.alive(), 60, "a refused requeue")
    assert w.alive() and "Unrecoverable error" not in w.text(), w.text()[-3000:]
    assert s.sink.received == []

    s.client.config_set("maxmemory", 0)
    s.client.delete("ballast")
    _each_mail_once(s, count)
    assert w.alive() and "Unrecoverable error" not in w.text(), w.text()[-3000:]
