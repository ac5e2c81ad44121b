"""The outbox scripts find derived keys through the names stored in the message, fall back to
keys.py's templates for messages of the previous version, and the skip transition moves
state, counters and indexes like every other one."""

from __future__ import annotations

from typing import Any

import pytest
import redis

from notifier.domain.notice import Kind, Notice, Person
from notifier.store import keys, outbox
from notifier.store.codec import text
from notifier.store.outbox import STATES, Outbox, Settlement

pytestmark = pytest.mark.integration

CONF = "konf-2024"
BATCH = f"{CONF}:uge"
PERSON = Person("Test Person", "test.person@example.dk", "Testkommune")
NOW = 1000.0  # the store clock's time in these tests
LEASE = 60.0


@pytest.fixture
def box(redis_client: redis.Redis) -> Outbox:
    return Outbox(redis_client, lease_seconds=LEASE, store_clock=lambda: NOW)


def reminder(registration: str) -> Notice:
    key = f"reminder:{BATCH}:{registration}"
    return Notice(key, Kind.REMINDER, CONF, registration, PERSON, batch=BATCH)


def confirmation(registration: str) -> Notice:
    return Notice(f"evt-{registration}:confirmation", Kind.CONFIRMATION, CONF, registration, PERSON)


def counts(r: redis.Redis, key: str) -> dict[str, int]:
    got = {text(k): int(v) for k, v in r.hgetall(key).items()}
    return {s: n for s, n in got.items() if n}


def as_before_this_version(r: redis.Redis, notice: Notice) -> None:
    """The message as the previous version created it: without the stored key names."""
    assert r.hdel(keys.message(notice.key), "batch_counts_key", "seat_key") == 2


def test_a_new_message_holds_the_names_of_its_batch_counts_and_its_seat(
    redis_client: redis.Redis, box: Outbox
) -> None:
    box.create(reminder("R1"), NOW)
    box.create(confirmation("R2"), NOW)
    stored = redis_client.hmget(keys.message(reminder("R1").key), ["batch_counts_key", "seat_key"])
    assert stored == [keys.batch_counts(BATCH).encode(), keys.seat(CONF, "R1").encode()]
    other = redis_client.hmget(
        keys.message(confirmation("R2").key), ["batch_counts_key", "seat_key"]
    )
    assert other == [b"", b""]
    assert counts(redis_client, keys.batch_counts(BATCH)) == {"queued": 1}
    assert redis_client.smembers(keys.batch_members(BATCH)) == {reminder("R1").key.encode()}


def test_the_scripts_read_the_stored_names_rather_than_build_them(
    redis_client: redis.Redis, box: Outbox
) -> None:
    notice = reminder("R1")
    box.create(notice, NOW)
    # Point the message elsewhere: the scripts must follow what is stored.
    mkey = keys.message(notice.key)
    redis_client.hset(mkey, mapping={"batch_counts_key": "elsewhere:counts", "seat_key": "s"})
    redis_client.set("s", '{"seat": "the stored one"}')
    redis_client.set(keys.seat(CONF, "R1"), '{"seat": "built from the notice"}')
    claim = box.claim(notice.key)
    assert claim is not None and claim.seat == '{"seat": "the stored one"}'
    assert box.finish(claim, Settlement("sent", "250 ok")) == 1
    assert counts(redis_client, "elsewhere:counts") == {"queued": -1, "sent": 1}


def test_a_message_of_the_previous_version_still_finds_its_batch_and_seat(
    redis_client: redis.Redis, box: Outbox
) -> None:
    seat = '{"registration": "R1"}'
    redis_client.set(keys.seat(CONF, "R1"), seat)
    sent, deferred = reminder("R1"), reminder("R2")
    for notice in (sent, deferred):
        box.create(notice, NOW)
        as_before_this_version(redis_client, notice)

    claim = box.claim(sent.key)
    assert claim is not None and claim.seat == seat
    assert counts(redis_client, keys.batch_counts(BATCH)) == {"queued": 1, "sending": 1}
    assert box.finish(claim, Settlement("failed", "550 no")) == 1
    assert box.defer(deferred.key, NOW + 30)
    assert counts(redis_client, keys.batch_counts(BATCH)) == {"failed": 1, "retrying": 1}
    assert (
        box.counts(BATCH)
        == box.counts()
        == {s: {"failed": 1, "retrying": 1}.get(s, 0) for s in STATES}
    )
    assert box.failed_keys() == [sent.key]


def skip(r: redis.Redis, notice: Notice, now: float = NOW) -> Any:
    """The purge's use: the skip script inside a transaction."""
    with r.pipeline(transaction=True) as pipe:
        pipe.multi()
        outbox.skip(pipe, notice.key, notice, "not sent", now)
        return pipe.execute()[0]


def indexed(r: redis.Redis, key: str) -> list[str]:
    return [i for i in (keys.QUEUED, keys.RETRY, keys.SENDING) if r.zscore(i, key) is not None]


@pytest.mark.parametrize("previous_version", [False, True])
def test_skip_settles_queued_and_retrying_messages_with_counters_and_indexes(
    redis_client: redis.Redis, box: Outbox, previous_version: bool
) -> None:
    queued, retrying = reminder("R1"), reminder("R2")
    for notice in (queued, retrying):
        box.create(notice, NOW)
        if previous_version:
            as_before_this_version(redis_client, notice)
    box.defer(retrying.key, NOW + 30)
    assert indexed(redis_client, queued.key) == [keys.QUEUED]
    assert indexed(redis_client, retrying.key) == [keys.RETRY]

    anonymised = Notice(queued.key, Kind.REMINDER, CONF, "R1", Person("A", "a@a.invalid"))
    with redis_client.pipeline(transaction=True) as pipe:
        pipe.multi()
        outbox.skip(pipe, queued.key, anonymised, "not sent: purged", 1234.5)
        outbox.skip(pipe, retrying.key, retrying, "not sent", 1234.5)
        assert pipe.execute() == [1, 1]

    for notice in (queued, retrying):
        assert indexed(redis_client, notice.key) == []
        assert box.claim(notice.key) is None  # never sent afterwards
    record = box.get(queued.key)
    assert record is not None
    assert (record.state, record.last_reply, record.notice) == (
        "skipped",
        "not sent: purged",
        anonymised,
    )
    assert redis_client.hget(keys.message(queued.key), "updated_at") == b"1234.5"
    assert counts(redis_client, keys.COUNTS) == {"skipped": 2}
    assert counts(redis_client, keys.batch_counts(BATCH)) == {"skipped": 2}


def test_skip_takes_an_expired_claim_and_leaves_a_live_one_and_a_settled_message(
    redis_client: redis.Redis, box: Outbox
) -> None:
    held, sent = reminder("R1"), reminder("R2")
    for notice in (held, sent):
        box.create(notice, NOW)
    claim = box.claim(held.key)  # its lease runs until NOW + LEASE
    done = box.claim(sent.key)
    assert claim is not None and done is not None
    box.finish(done, Settlement("sent", "250 ok"))
    before = {k: redis_client.hgetall(k) for k in (keys.message(held.key), keys.COUNTS)}

    assert skip(redis_client, held, NOW + LEASE - 1) == 0
    assert skip(redis_client, sent, NOW + LEASE + 1) == 0
    assert {k: redis_client.hgetall(k) for k in before} == before
    assert indexed(redis_client, held.key) == [keys.SENDING]

    assert skip(redis_client, held, NOW + LEASE + 1) == 1
    assert indexed(redis_client, held.key) == []
    assert counts(redis_client, keys.COUNTS) == {"sent": 1, "skipped": 1}
    assert counts(redis_client, keys.batch_counts(BATCH)) == {"sent": 1, "skipped": 1}
    assert box.finish(claim, Settlement("sent", "250 ok")) == 0  # the claim was lost
