"""The HTTP API's own task messages (notifier.taskmessage) against Celery's: the same event
published through Celery (kombu's producer, as `notifier publish` and the API's fallback do)
and built by TaskMessages, both read back from a real Redis queue, must match in every field
but the fresh ids. A Celery or kombu upgrade that changes the format fails here."""

from __future__ import annotations

import asyncio
import base64
import json
from typing import Any

import pytest
import redis
import redis.asyncio

from notifier import taskmessage, tasks
from notifier.api.context import Publisher
from notifier.settings import Settings
from notifier.store import keys
from notifier.store.acceptance import AsyncAcceptance
from tests.events import created

pytestmark = pytest.mark.integration

FRESH = {
    ("headers", "id"),
    ("headers", "root_id"),
    ("headers", "origin"),
    ("properties", "correlation_id"),
    ("properties", "delivery_tag"),
    ("properties", "reply_to"),
}


def normalised(raw: bytes | str) -> dict[str, Any]:
    message: dict[str, Any] = json.loads(raw)
    for part, name in FRESH:
        assert message[part][name], (part, name)
        message[part][name] = "<fresh>"
    return message


def test_names_agree_with_the_celery_app() -> None:
    assert (taskmessage.INGEST, taskmessage.QUEUE) == (tasks.INGEST, tasks.QUEUE)


def test_message_matches_celerys_field_by_field(
    make_settings: Any, redis_client: redis.Redis
) -> None:
    settings: Settings = make_settings()
    event = created("evt-wire-æøå", "REG-WIRE")
    publisher = Publisher(settings)
    try:
        publisher.publish([event])
        [celerys] = redis_client.lrange(tasks.QUEUE, 0, -1)
        ours = taskmessage.TaskMessages.for_app(publisher.app.thread_oid).ingest(event).encode()
    finally:
        publisher.close()
    assert normalised(ours) == normalised(celerys)
    theirs_body = base64.b64decode(json.loads(celerys)["body"])
    assert base64.b64decode(json.loads(ours)["body"]) == theirs_body  # byte for byte
    headers = json.loads(ours)["headers"]
    assert headers["root_id"] == headers["id"] == json.loads(ours)["properties"]["correlation_id"]


def test_accept_queues_once_and_marks(make_settings: Any, redis_client: redis.Redis) -> None:
    settings: Settings = make_settings()
    maker = taskmessage.TaskMessages("oid", "gen1@test")

    def task(event_id: str) -> tuple[str, str]:
        return event_id, maker.ingest({"id": event_id})

    async def run() -> list[list[bool]]:
        client = redis.asyncio.Redis.from_url(settings.redis_url)
        try:
            acceptance = AsyncAcceptance(client, tasks.QUEUE, 60)
            first = await acceptance.accept([task("e1"), task("e1")])  # twice in one call
            again = await acceptance.accept([task("e1")])
            redis_client.set(keys.event("e2"), 1)  # applied by a worker already
            applied = await acceptance.accept([task("e2")])
            return [first, again, applied]
        finally:
            await client.aclose()

    assert asyncio.run(run()) == [[True, False], [False], [False]]
    assert redis_client.llen(tasks.QUEUE) == 1
    assert 0 < redis_client.ttl(keys.accepted("e1")) <= 60
