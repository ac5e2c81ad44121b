"""Ingest tasks are numbered in publication order as they leave the queue, whichever entry
point published them (a Celery task, `notifier publish`, the HTTP API's messages), and their
registration learns that they are on their way (store/scripts/pop.lua via notifier.broker)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import redis

from notifier import broker
from notifier.ops import publish_events
from notifier.settings import Settings
from notifier.store import keys
from notifier.store.pending import in_turn, wait_turn
from notifier.taskmessage import TaskMessages
from notifier.tasks import DELIVER, INGEST, QUEUE, create_app
from tests.events import CONFERENCE, created, substituted
from tests.events import person as someone

pytestmark = pytest.mark.integration

INFLIGHT = "test:inflight"


def _pop(client: redis.Redis) -> tuple[bytes, int, str] | None:
    k = [QUEUE, INFLIGHT, broker.ORDER_COUNTER]
    a: list[Any] = [broker.ORDER_STAMP, broker.ORDER_TTL, broker.STAMPED_TASK, broker.PENDING]
    found: Any = client.eval(broker.POP, len(k), *k, *a)
    return (found[0], int(found[1]), found[2].decode()) if found else None


def _events(n: int) -> list[dict[str, Any]]:
    a, b = someone(1), someone(2)
    return [substituted(f"e{n}-{i}", "R1", a, b) if i % 2 else created(f"e{n}-{i}", "R1", a)
            for i in range(2)]  # fmt: skip


def test_every_entry_point_is_numbered_in_publication_order(
    redis_client: redis.Redis, make_settings: Callable[..., Settings], redis_url: str
) -> None:
    settings = make_settings(redis_url)
    app = create_app(settings)
    try:
        for event in _events(1):
            app.send_task(INGEST, args=[event], queue=QUEUE)  # a registration system's way
        publish_events(settings, _events(2))  # `notifier publish`
        messages = TaskMessages.for_app("test")
        for event in _events(3):  # the HTTP API's (pushed by its Lua script)
            redis_client.lpush(QUEUE, messages.ingest(event))
        app.send_task(DELIVER, args=[["k"]], queue=QUEUE)  # not an ingest task
    finally:
        app.close()
    popped = [_pop(redis_client) for _ in range(7)]
    assert _pop(redis_client) is None
    pending = keys.registration_pending(CONFERENCE, "R1")
    assert [(p[1], p[2]) for p in popped if p] == [(n, pending) for n in range(1, 7)] + [(0, "")]
    assert redis_client.zrange(pending, 0, -1, withscores=True) == [
        (str(n).encode(), float(n)) for n in range(1, 7)
    ]


def test_a_task_that_comes_back_keeps_its_number(
    redis_client: redis.Redis, make_settings: Callable[..., Settings], redis_url: str
) -> None:
    publish_events(make_settings(redis_url), _events(1))
    first = _pop(redis_client)
    assert first is not None and first[1] == 1
    # A dead consumer's in-flight task goes back to the queue, after the second task.
    redis_client.lpush(QUEUE, first[0])
    second, again = _pop(redis_client), _pop(redis_client)
    assert second is not None and second[1] == 2
    assert again is not None and again[1] == 1


def test_an_event_waits_for_the_earlier_events_of_its_registration(
    redis_client: redis.Redis,
) -> None:
    pending = keys.registration_pending(CONFERENCE, "R1")
    redis_client.zadd(pending, {"1": 1, "2": 2})
    waited: list[float] = []

    def earlier_done(seconds: float) -> None:  # the earlier event is applied meanwhile
        waited.append(seconds)
        redis_client.zrem(pending, 1)

    assert wait_turn(redis_client, pending, 2, 5.0, sleep=earlier_done)
    assert len(waited) == 1
    # Bounded: an earlier task whose worker died does not hold the registration forever.
    redis_client.zadd(pending, {"1": 1})
    clock = iter([0.0, 0.0, 10.0])
    assert not wait_turn(
        redis_client, pending, 2, 5.0, sleep=lambda _: None, clock=lambda: next(clock)
    )
    # The number leaves the set afterwards, also when applying failed.
    with pytest.raises(RuntimeError), in_turn(redis_client, pending, 3, 0.0):
        raise RuntimeError("applying failed")
    assert redis_client.zrange(pending, 0, -1) == [b"1", b"2"]
