"""What the faster publish path (kombu's publish batch, a short argsrepr, one queue
declaration per request) must not change: the tasks on the queue, their order and their
shape. Functional only: the speed is measured
by bench.http."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
import redis

from notifier.settings import Settings
from notifier.tasks import INGEST, QUEUE, create_app
from tests.api_support import Api, api, make_token
from tests.events import created
from tests.integration.test_api_events import queued

pytestmark = pytest.mark.integration
__all__ = ["api"]


@pytest.fixture
def setup(
    api: Callable[[Settings], Api], make_settings: Callable[..., Settings], redis_client: Any
) -> tuple[Api, str]:
    a = api(make_settings())
    return a, make_token(a.settings, "ingest")


def _raw(client: redis.Redis) -> list[dict[str, Any]]:
    return [json.loads(m) for m in reversed(client.lrange(QUEUE, 0, -1))]


def test_a_batch_is_queued_in_order_with_a_short_argsrepr(
    setup: tuple[Api, str], redis_client: redis.Redis
) -> None:
    a, token = setup
    events = [created(f"evt-s{i}", f"REG-{i}") for i in range(300)]
    reply = a.call("POST", "/v1/events/batch", {"events": events}, token=token)
    assert reply.status == 200 and reply.json()["accepted"] == 300
    assert queued(redis_client) == events
    for event, message in zip(events, _raw(redis_client), strict=True):
        # The id alone: Celery's saferepr of the whole event cost a third of a publish.
        assert message["headers"]["argsrepr"] == f"[<event {event['id']}>]"


def test_messages_have_the_shape_of_a_plain_send_task(
    setup: tuple[Api, str], make_settings: Callable[..., Settings], redis_client: redis.Redis
) -> None:
    a, token = setup
    assert a.call("POST", "/v1/events", created("evt-p1", "REG-1"), token=token).status == 202
    app = create_app(make_settings())
    try:
        app.send_task(INGEST, args=[created("evt-p2", "REG-2")], queue=QUEUE)
    finally:
        app.close()
    ours, plain = _raw(redis_client)
    assert set(ours) == set(plain)
    assert set(ours["headers"]) == set(plain["headers"])
    # Celery copies a publish option into the properties too (as apply_async(argsrepr=...)
    # does); the worker reads it from the headers.
    assert set(ours["properties"]) - {"argsrepr"} == set(plain["properties"])
    assert ours["properties"]["delivery_info"] == plain["properties"]["delivery_info"]
    for name in ("content-type", "content-encoding"):
        assert ours[name] == plain[name]
