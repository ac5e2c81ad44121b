"""No event is lost: dead letters replayed after a fix, and a store that refuses writes (out
of memory under `maxmemory`, read-only after a failover) while events come in."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest
import redis
from click.testing import CliRunner

from devtools.localredis import PrivateRedis
from devtools.sink import Sink, free_port
from notifier.cli import main
from notifier.errors import StoreUnavailable
from notifier.service import Service
from notifier.settings import load_settings
from notifier.store.deadletter import DeadLetters
from notifier.tasks import INGEST, QUEUE, STORE_ERRORS
from tests.conftest import wait_for
from tests.e2e.conftest import SHORT_LEASE, Stack
from tests.events import created, person

pytestmark = pytest.mark.e2e


def _recipients(sink: Sink) -> Counter[str]:
    return Counter(r for item in sink.received for r in item.recipients)


def _exactly_once(sink: Sink, expected: set[str], timeout: float, s: Stack) -> None:
    wait_for(lambda: expected <= set(_recipients(sink)), timeout, "every mail")
    s.wait_past_rescue(timeout)
    assert _recipients(sink) == Counter(dict.fromkeys(expected, 1))


def test_replayed_dead_letters_give_one_mail_each(
    stack: Callable[..., Stack], tmp_path: Path
) -> None:
    # The conference file is missing at first: both events become dead letters.
    empty = tmp_path / "no-conferences"
    empty.mkdir()
    s = stack(conferences_dir=str(empty), **SHORT_LEASE)
    as_dict = created("evt-1", "REG-1", person(1))
    as_text = created("evt-2", "REG-2", person(2))
    s.publish(as_dict)
    s.app.send_task(INGEST, args=[json.dumps(as_text, ensure_ascii=False)], queue=QUEUE)
    dead = DeadLetters(s.client)
    wait_for(lambda: len(dead.list()) == 2, 20, "two dead letters")
    s.wait_drained()
    text_letter = next(d.id for d in dead.list() if isinstance(d.payload, str))

    # The fix: the worker gets the conference files.
    s.worker.stop()
    s.env.pop("NOTIFIER_CONFERENCES_DIR")
    s.worker.start()
    env = {"NOTIFIER_BROKER_URL": s.redis_server.url}
    one = CliRunner().invoke(main, ["dead-letters", "--replay", text_letter], env=env)
    assert one.exit_code == 0 and "replayed 1 event(s)" in one.output, one.output
    rest = CliRunner().invoke(main, ["dead-letters", "--replay-all"], env=env)
    assert rest.exit_code == 0 and "replayed 1 event(s)" in rest.output, rest.output

    _exactly_once(s.sink, {person(1)["email"], person(2)["email"]}, 30, s)
    assert dead.list() == []


def _out_of_memory(client: redis.Redis) -> None:
    """From now on every write is refused: usage above `maxmemory`, nothing may be evicted."""
    client.set("ballast", b"x" * 1_000_000)
    client.config_set("maxmemory-policy", "noeviction")
    client.config_set("maxmemory", client.info("memory")["used_memory"] - 500_000)
    with pytest.raises(redis.exceptions.OutOfMemoryError):
        client.set("probe", 1)


def test_a_full_store_keeps_every_event_until_it_has_room(
    stack: Callable[..., Stack], private_redis: Callable[..., PrivateRedis]
) -> None:
    store = private_redis()
    store_client = redis.Redis.from_url(store.url)
    s = stack(redis_url=store.url, **SHORT_LEASE)
    _out_of_memory(store_client)
    events = [created(f"evt-{i}", f"REG-{i}", person(i)) for i in range(4)]
    s.publish(*events)

    # Every event was tried against the full store and put back for a retry.
    wait_for(lambda: s.worker.text().count("Retry in") >= len(events), 30, "the retries")
    assert s.sink.received == []
    assert store_client.hlen("notifier:dead") == 0

    store_client.config_set("maxmemory", 0)
    _exactly_once(s.sink, {person(i)["email"] for i in range(4)}, 90, s)
    assert store_client.hlen("notifier:dead") == 0
    store_client.close()


def test_a_read_only_store_is_an_error_to_retry_not_a_dead_letter(
    private_redis: Callable[..., PrivateRedis], sink: Sink
) -> None:
    server = private_redis()
    client = redis.Redis.from_url(server.url)
    # A replica of a master that is not there: what a worker meets after a failover when it
    # still talks to the old, demoted primary.
    client.replicaof("127.0.0.1", free_port())
    settings = load_settings({"NOTIFIER_BROKER_URL": server.url})
    svc = Service(settings, client)
    with pytest.raises(StoreUnavailable) as raised:
        svc.ingest(created("evt-1", "REG-1", person(1)))
    assert isinstance(raised.value.__cause__, redis.exceptions.ReadOnlyError)
    assert client.hlen("notifier:dead") == 0
    # What the ingest and deliver tasks retry on (their `autoretry_for`).
    assert isinstance(raised.value, STORE_ERRORS)
    svc.close()
    client.close()
