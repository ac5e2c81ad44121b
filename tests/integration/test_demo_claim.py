"""The demo's claim on a database of an existing Redis (devtools/demoredis.py), on a real one:
it empties only an empty database or one holding nothing but what a demo writes, marked as a
demo's; anything else stays exactly as it was, the marker included."""

from __future__ import annotations

import redis

from devtools.demoredis import MARKER, Claim, claim
from notifier.store import keys
from notifier.tasks import QUEUE

# What a demo run leaves besides its marker: notifier's keys, the Celery queue, kombu's.
DEMO_KEYS = (
    keys.message("evt-1:confirmation"),
    keys.COUNTS,
    keys.seat("digitaliseringstraef-2024", "REG-1001"),
    QUEUE,
    "_kombu.binding.notifier",
    "_kombu.inflight",
    "unacked",
    "unacked_index",
)


def contents(client: redis.Redis) -> dict[bytes, bytes | None]:
    """Every key of the database with its serialized value."""
    return {key: client.dump(key) for key in client.scan_iter()}


def test_an_empty_database_is_claimed_and_marked(redis_client: redis.Redis) -> None:
    assert claim(redis_client) == Claim("empty", 0)
    assert redis_client.keys("*") == [MARKER.encode()]


def test_an_earlier_demos_data_is_emptied(redis_client: redis.Redis) -> None:
    claim(redis_client)
    earlier_marker = redis_client.get(MARKER)
    for key in DEMO_KEYS:
        redis_client.set(key, "x")
    redis_client.set(MARKER, b"an earlier run's")

    assert claim(redis_client) == Claim("reused", len(DEMO_KEYS) + 1)
    assert redis_client.keys("*") == [MARKER.encode()]
    assert redis_client.get(MARKER) not in (earlier_marker, b"an earlier run's")


def test_data_without_the_marker_is_left_alone(redis_client: redis.Redis) -> None:
    # notifier's own keys too: a notifier of someone's may keep its data in this database.
    redis_client.hset(keys.COUNTS, "sent", 3)
    redis_client.set("other-app:settings", "keep me")
    before = contents(redis_client)

    found = claim(redis_client)

    assert found == Claim("unmarked", 2)
    assert not found.granted
    assert contents(redis_client) == before


def test_another_programs_key_next_to_a_demos_data_is_left_alone(
    redis_client: redis.Redis,
) -> None:
    claim(redis_client)
    for key in DEMO_KEYS:
        redis_client.set(key, "x")
    redis_client.set("other-app:settings", "keep me")
    redis_client.set("notifierish", "not ours either")
    before = contents(redis_client)

    found = claim(redis_client)

    assert found == Claim("foreign", 2)
    assert not found.granted
    assert contents(redis_client) == before
