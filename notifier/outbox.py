"""The outbox: one Redis hash per message with its state, attempts and last SMTP reply.

States: queued -> sending -> sent | retrying | failed | skipped; retrying -> sending again.

Every transition is one Lua script, so the state, the per-state counters (global and per
batch) and the sweeper's indexes never disagree. A message is *claimed* (moved to "sending"
with a lease) before SMTP and marked after it, so a redelivered task never sends it again;
a claim whose lease ran out (its worker died) can be taken over.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import redis
import redis.asyncio

from notifier import keys
from notifier.notice import Notice
from notifier.pipelining import Pipelined, Script

STATES = ("queued", "sending", "retrying", "sent", "failed", "skipped")
FINAL = frozenset({"sent", "failed", "skipped"})

_MOVE = """
local function move(msgkey, from, to)
  redis.call('HINCRBY', KEYS[2], from, -1)
  redis.call('HINCRBY', KEYS[2], to, 1)
  local b = redis.call('HGET', msgkey, 'batch')
  if b and b ~= '' then
    local bc = ARGV[1] .. ':batch:' .. b .. ':counts'
    redis.call('HINCRBY', bc, from, -1)
    redis.call('HINCRBY', bc, to, 1)
  end
end
"""

# KEYS: msg, counts, queued; ARGV: prefix, bare key, now, notice, batch, registration, kind
_CREATE = """
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('HSET', KEYS[1], 'state', 'queued', 'notice', ARGV[4], 'attempts', 0,
  'created_at', ARGV[3], 'updated_at', ARGV[3], 'batch', ARGV[5],
  'registration', ARGV[6], 'kind', ARGV[7], 'last_reply', '')
redis.call('HINCRBY', KEYS[2], 'queued', 1)
if ARGV[5] ~= '' then
  redis.call('HINCRBY', ARGV[1] .. ':batch:' .. ARGV[5] .. ':counts', 'queued', 1)
  redis.call('SADD', ARGV[1] .. ':batch:' .. ARGV[5] .. ':messages', ARGV[2])
end
redis.call('ZADD', KEYS[3], ARGV[3], ARGV[2])
return 1
"""

# KEYS: msg, counts, sending, retry, queued; ARGV: prefix, bare key, now, lease until
_CLAIM = (
    _MOVE
    + """
local st = redis.call('HGET', KEYS[1], 'state')
if not st then return {-1} end
if st == 'sending' then
  local lease = redis.call('HGET', KEYS[1], 'lease_until')
  if lease and tonumber(lease) > tonumber(ARGV[3]) then return {0} end
elseif st ~= 'queued' and st ~= 'retrying' then
  return {0}
end
local n = redis.call('HINCRBY', KEYS[1], 'attempts', 1)
redis.call('HSET', KEYS[1], 'state', 'sending', 'updated_at', ARGV[3], 'lease_until', ARGV[4])
if st ~= 'sending' then move(KEYS[1], st, 'sending') end
redis.call('ZADD', KEYS[3], ARGV[4], ARGV[2])
redis.call('ZREM', KEYS[4], ARGV[2])
redis.call('ZREM', KEYS[5], ARGV[2])
local notice = redis.call('HGET', KEYS[1], 'notice')
if redis.call('HGET', KEYS[1], 'kind') ~= 'reminder' then return {n, notice} end
-- A reminder goes to whoever holds the seat now: hand the seat over in the same trip.
local d = cjson.decode(notice)
local seat = redis.call('GET', ARGV[1] .. ':seat:' .. d.conference .. ':' .. d.registration_id)
return {n, notice, seat or ''}
"""
)

# KEYS: msg, counts, sending, retry; ARGV: prefix, bare key, now, token, to, reply, due
_FINISH = (
    _MOVE
    + """
local st = redis.call('HGET', KEYS[1], 'state')
if st ~= 'sending' then return 0 end
if redis.call('HGET', KEYS[1], 'attempts') ~= ARGV[4] then return 0 end
redis.call('HSET', KEYS[1], 'state', ARGV[5], 'last_reply', ARGV[6], 'updated_at', ARGV[3])
move(KEYS[1], 'sending', ARGV[5])
redis.call('ZREM', KEYS[3], ARGV[2])
if ARGV[5] == 'failed' then redis.call('SADD', ARGV[1] .. ':failed', ARGV[2]) end
if ARGV[5] == 'retrying' then redis.call('ZADD', KEYS[4], ARGV[7], ARGV[2]) end
return 1
"""
)


def text(value: bytes | str | object) -> str:
    """A Redis reply as str (the client returns bytes; its type hints allow str too)."""
    return value.decode() if isinstance(value, bytes) else str(value)


# KEYS: msg, counts, retry, queued; ARGV: prefix, bare key, now, due
_DEFER = (
    _MOVE
    + """
local st = redis.call('HGET', KEYS[1], 'state')
if st ~= 'queued' and st ~= 'retrying' then return 0 end
redis.call('HSET', KEYS[1], 'state', 'retrying', 'updated_at', ARGV[3])
if st ~= 'retrying' then move(KEYS[1], st, 'retrying') end
redis.call('ZADD', KEYS[3], ARGV[4], ARGV[2])
redis.call('ZREM', KEYS[4], ARGV[2])
return 1
"""
)


@dataclass(frozen=True, slots=True)
class Claim:
    key: str
    token: int
    notice: Notice
    seat: str | None = None  # for a reminder: the seat's JSON as it is now


@dataclass(frozen=True, slots=True)
class Record:
    key: str
    state: str
    attempts: int
    last_reply: str
    kind: str
    registration: str
    batch: str
    notice: Notice


Call = tuple[list[str], list[Any]]


def _claim_call(key: str, now: float, lease: float) -> Call:
    return (
        [keys.message(key), keys.COUNTS, keys.SENDING, keys.RETRY, keys.QUEUED],
        [keys.PREFIX, key, now, now + lease],
    )


def _claimed(key: str, reply: Any) -> Claim | None:
    # One round trip: the script returns the attempt number, the stored notice and, for a
    # reminder, the seat.
    token = int(reply[0])
    if token <= 0:
        return None
    seat = text(reply[2]) if len(reply) > 2 and reply[2] else None
    return Claim(key, token, Notice.from_json(text(reply[1])), seat)


def _finish_call(claim: Claim, state: str, reply: str, now: float, due: float) -> Call:
    if state not in ("sent", "failed", "retrying", "skipped"):
        raise ValueError(f"not a state to finish in: {state}")
    return (
        [keys.message(claim.key), keys.COUNTS, keys.SENDING, keys.RETRY],
        [keys.PREFIX, claim.key, now, claim.token, state, reply, due],
    )


def _defer_call(key: str, now: float, due: float) -> Call:
    return (
        [keys.message(key), keys.COUNTS, keys.RETRY, keys.QUEUED],
        [keys.PREFIX, key, now, due],
    )


class AsyncOutbox:
    """The transitions delivery needs, on an asyncio Redis client: while one session waits
    for Redis, the others' SMTP traffic goes on (a blocking client would stall them all)."""

    CLAIM, FINISH, DEFER = Script(_CLAIM), Script(_FINISH), Script(_DEFER)

    def __init__(self, client: redis.asyncio.Redis, *, lease_seconds: float) -> None:
        self.lease = lease_seconds
        self._calls = Pipelined(client)  # the sessions' calls share round trips

    async def claim(self, key: str, now: float) -> Claim | None:
        k, a = _claim_call(key, now, self.lease)
        return _claimed(key, await self._calls.call(self.CLAIM, k, a))

    async def finish(
        self, claim: Claim, state: str, reply: str, now: float, due: float = 0.0
    ) -> bool:
        return bool(await self.finish_soon(claim, state, reply, now, due))

    def finish_soon(
        self, claim: Claim, state: str, reply: str, now: float, due: float = 0.0
    ) -> asyncio.Future[Any]:
        """Queue a finish without waiting for it: it reaches Redis before any call queued
        after it (a falsy reply: the claim was lost)."""
        k, a = _finish_call(claim, state, reply, now, due)
        return self._calls.submit(self.FINISH, k, a)

    async def defer(self, key: str, now: float, due: float) -> bool:
        k, a = _defer_call(key, now, due)
        return bool(await self._calls.call(self.DEFER, k, a))


class Outbox:
    """Message states in Redis. All methods take `now` (epoch seconds) from the caller."""

    def __init__(self, client: redis.Redis, *, lease_seconds: float = 120.0) -> None:
        self.r = client
        self.lease = lease_seconds
        self._create = client.register_script(_CREATE)
        self._claim = client.register_script(_CLAIM)
        self._finish = client.register_script(_FINISH)
        self._defer = client.register_script(_DEFER)

    def create(self, notice: Notice, now: float, pipe: redis.client.Pipeline | None = None) -> None:
        """Add a queued message unless its key exists (then nothing changes)."""
        k = [keys.message(notice.key), keys.COUNTS, keys.QUEUED]
        a: list[str | float] = [
            keys.PREFIX,
            notice.key,
            now,
            notice.to_json(),
            notice.batch or "",
            notice.registration_id,
            notice.kind.value,
        ]
        if pipe is not None and getattr(pipe, "explicit_transaction", False):  # after MULTI
            # Inside MULTI the script goes as source (EVAL): redis-py would first ask SCRIPT
            # EXISTS, a round trip per event, and an EVALSHA Redis had forgotten would fail
            # on its own while the rest of the transaction committed.
            pipe.eval(_CREATE, len(k), *k, *a)
            return
        self._create(keys=k, args=a, client=pipe or self.r)

    def claim(self, key: str, now: float) -> Claim | None:
        """Take a message for sending, or None if it is sent, failed or held by a live claim."""
        k, a = _claim_call(key, now, self.lease)
        return _claimed(key, self._claim(keys=k, args=a))

    def finish(self, claim: Claim, state: str, reply: str, now: float, due: float = 0.0) -> bool:
        """Record the outcome of a claimed send; False if the claim was lost meanwhile."""
        k, a = _finish_call(claim, state, reply, now, due)
        return bool(self._finish(keys=k, args=a))

    def defer(self, key: str, now: float, due: float) -> bool:
        """Put an unclaimed message back until `due` without counting an attempt."""
        k, a = _defer_call(key, now, due)
        return bool(self._defer(keys=k, args=a))

    def get(self, key: str) -> Record | None:
        data = self.r.hgetall(keys.message(key))
        return self._record(key, data) if data else None

    @staticmethod
    def _record(key: str, data: dict[Any, Any]) -> Record:
        d = {text(k): text(v) for k, v in data.items()}
        return Record(
            key=key,
            state=d["state"],
            attempts=int(d["attempts"]),
            last_reply=d["last_reply"],
            kind=d["kind"],
            registration=d["registration"],
            batch=d["batch"],
            notice=Notice.from_json(d["notice"]),
        )

    def states(self, message_keys: Sequence[str]) -> dict[str, str | None]:
        pipe = self.r.pipeline(transaction=False)
        for key in message_keys:
            pipe.hget(keys.message(key), "state")
        return {
            key: (text(s) if s else None)
            for key, s in zip(message_keys, pipe.execute(), strict=True)
        }

    def counts(self, batch: str | None = None) -> dict[str, int]:
        raw = self.r.hgetall(keys.batch_counts(batch) if batch else keys.COUNTS)
        got = {text(k): int(v) for k, v in raw.items()}
        return {s: got.get(s, 0) for s in STATES}

    def due(self, index: str, *, cutoff: float, limit: int, next_at: float) -> list[str]:
        """Keys in a sweeper index (RETRY, SENDING or QUEUED) scored at or before `cutoff`.

        Their score becomes `next_at`, so each is handed out once per period even if the task
        that would take it is lost; a successful claim removes it from the index for good.
        """
        found = [text(k) for k in self.r.zrangebyscore(index, "-inf", cutoff, start=0, num=limit)]
        if found:
            self.r.zadd(index, dict.fromkeys(found, next_at), xx=True)
        return found

    def records(self, message_keys: Sequence[str]) -> list[Record]:
        pipe = self.r.pipeline(transaction=False)
        for key in message_keys:
            pipe.hgetall(keys.message(key))
        return [
            self._record(k, raw) for k, raw in zip(message_keys, pipe.execute(), strict=True) if raw
        ]

    def failed_keys(self) -> list[str]:
        return sorted(text(k) for k in self.r.smembers(keys.FAILED))

    def keys_in(self, batch: str) -> Iterable[str]:
        for k in self.r.sscan_iter(keys.batch_members(batch), count=1000):
            yield text(k)
