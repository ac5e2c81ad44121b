"""Mails for one invite UID reach the relay one at a time, in the order they were planned:
the outbox's order lists (store/scripts/_order.lua, claim.lua, finish.lua, turn.lua)."""

from __future__ import annotations

import asyncio
import json

import pytest
import redis
import redis.asyncio

from notifier.domain.notice import InviteSpec, Kind, Notice, Person
from notifier.store import keys
from notifier.store.outbox import AsyncOutbox, Outbox, Settlement, skip

pytestmark = pytest.mark.integration

CONF = "konf-2024"
METTE = Person("Mette Sørensen", "mette@example.dk")
JENS = Person("Jens Ødegaard", "jens@example.dk")
UID_M = "m@kl.dk"
UID_J = "j@kl.dk"
NOW = 1000.0
LEASE = 60.0


@pytest.fixture
def box(redis_client: redis.Redis) -> Outbox:
    return Outbox(redis_client, lease_seconds=LEASE, store_clock=lambda: NOW)


def invite(key: str, who: Person, uid: str, method: str, sequence: int) -> Notice:
    kind = Kind.CONFIRMATION if method == "REQUEST" else Kind.CANCELLATION
    spec = InviteSpec(method, uid, sequence)  # type: ignore[arg-type]
    return Notice(key, kind, CONF, "R1", who, spec)


def test_a_later_mail_for_a_uid_waits_until_the_earlier_one_settles(
    redis_client: redis.Redis, box: Outbox
) -> None:
    request = invite("e1:confirmation", METTE, UID_M, "REQUEST", 0)
    cancel = invite("e2:cancel", METTE, UID_M, "CANCEL", 1)
    other = invite("e3:confirmation", JENS, UID_J, "REQUEST", 0)
    for n in (request, cancel, other):
        box.create(n, NOW)
    assert redis_client.lrange(keys.uid_order(UID_M), 0, -1) == [b"e1:confirmation", b"e2:cancel"]
    # The CANCEL is not claimed while the REQUEST before it is queued: it stays queued, with
    # no attempt counted. Another attendee's invite is not held back.
    assert box.claim(cancel.key) is None
    assert redis_client.hmget(keys.message(cancel.key), ["state", "attempts"]) == [b"queued", b"0"]
    assert box.claim(other.key) is not None
    first = box.claim(request.key)
    assert first is not None
    assert box.claim(cancel.key) is None  # still sending
    # A temporary failure keeps the REQUEST first in line.
    assert box.finish(first, Settlement("retrying", "451 later", 30)) == 1
    assert box.claim(cancel.key) is None
    again = box.claim(request.key)
    assert again is not None
    # Once it settles, the CANCEL is handed on: due at once in the sweeper's retry index.
    assert box.finish(again, Settlement("sent", "250 ok")) == 1
    assert redis_client.zscore(keys.RETRY, cancel.key) == NOW
    assert redis_client.lrange(keys.uid_order(UID_M), 0, -1) == [b"e2:cancel"]
    claimed = box.claim(cancel.key)
    assert claimed is not None and claimed.token == 1
    assert box.finish(claimed, Settlement("sent", "250 ok")) == 1
    assert not redis_client.exists(keys.uid_order(UID_M))


@pytest.mark.parametrize("ending", ["failed", "suppressed", "unknown", "skipped"])
def test_every_final_state_hands_the_next_mail_on(
    redis_client: redis.Redis, box: Outbox, ending: str
) -> None:
    request = invite("e1:confirmation", METTE, UID_M, "REQUEST", 0)
    cancel = invite("e2:cancel", METTE, UID_M, "CANCEL", 1)
    for n in (request, cancel):
        box.create(n, NOW)
    claim = box.claim(request.key)
    assert claim is not None
    box.unknown_resends = 0  # an unknown outcome is final at once
    assert box.finish(claim, Settlement(ending, "reply")) == 1
    assert box.claim(cancel.key) is not None


def test_a_purged_or_vanished_mail_does_not_block_its_uid(
    redis_client: redis.Redis, box: Outbox
) -> None:
    first = invite("e1:confirmation", METTE, UID_M, "REQUEST", 0)
    second = invite("e2:cancel", METTE, UID_M, "CANCEL", 1)
    third = invite("e3:confirmation", METTE, UID_M, "REQUEST", 2)
    for n in (first, second, third):
        box.create(n, NOW)
    # The purge settles the first unsent (skip.lua): the next is handed on.
    with redis_client.pipeline() as pipe:
        skip(pipe, first.key, first, "not sent: purged", NOW)
        pipe.execute()
    assert redis_client.zscore(keys.RETRY, second.key) == NOW
    assert not redis_client.hexists(keys.message(first.key), "order_key")
    # A message hash that vanished (a restart without data) is passed over.
    redis_client.delete(keys.message(second.key))
    assert box.claim(third.key) is not None


def test_a_reminder_takes_its_turn_behind_a_confirmation_and_is_handed_on(
    redis_client: redis.Redis, redis_url: str
) -> None:
    seat = json.dumps({"registration": "R1", "attendee": {"name": "x", "email": "y"}})
    redis_client.set(keys.seat(CONF, "R1"), seat)
    sync = Outbox(redis_client, lease_seconds=LEASE, store_clock=lambda: NOW)
    confirmation = invite("e1:confirmation", METTE, UID_M, "REQUEST", 0)
    reminder = Notice("reminder:b:R1", Kind.REMINDER, CONF, "R1", METTE, batch=f"{CONF}:b")
    sync.create(confirmation, NOW)
    sync.create(reminder, NOW)

    async def run() -> None:
        # from_url: the client owns its pool, so aclose() closes its connections too.
        client = redis.asyncio.Redis.from_url(redis_url)
        box = AsyncOutbox(client, lease_seconds=LEASE, store_clock=lambda: NOW)
        claim = await box.claim(reminder.key)
        assert claim is not None and claim.seat == seat
        # Another seat JSON than the one read: the seat changed, read it again.
        assert (await box.turn(claim, "{}", UID_M)).seat == seat
        waiting = await box.turn(claim, seat, UID_M)
        assert waiting.waiting and not waiting.held
        fields = ["state", "attempts", "order_key"]
        stored = await client.hmget(keys.message(reminder.key), fields)
        assert stored == [b"queued", b"0", keys.uid_order(UID_M).encode()]
        first = await box.claim(confirmation.key)
        assert first is not None
        assert await box.finish(first, Settlement("sent", "250 ok")) == 1
        assert box.take_handed_on() == [reminder.key]
        again = await box.claim(reminder.key)
        assert again is not None and again.token == 1
        assert (await box.turn(again, seat, UID_M)).held
        await client.aclose()

    asyncio.run(run())
