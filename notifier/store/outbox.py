"""The outbox: one Redis hash per message with its state, attempts and last SMTP reply.

States: queued -> sending -> sent | retrying | failed | skipped | unknown; retrying -> sending
again. `unknown`: the relay may have the message (no reply to the final dot) and the one
resend allowed for that has been used up, so it is not sent again.

Times that workers compare with each other (claim leases, retry due times, the sweeper's
cut-offs) are read from Redis's own clock (`TIME`) inside the scripts, so workers whose
clocks disagree still agree on whether a lease has run out. Tests may pass a store clock of
their own (`store_clock`) to move time by hand.

Every transition is one Lua script, so the state, the per-state counters (global and per
batch) and the sweeper's indexes never disagree. A message is *claimed* (moved to "sending"
with a lease) before SMTP and marked after it, so a redelivered task never sends it again;
a claim whose lease ran out (its worker died) can be taken over.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import redis
import redis.asyncio

from notifier.domain.notice import Notice
from notifier.store import keys
from notifier.store.pipelining import Pipelined, Script

STATES = ("queued", "sending", "retrying", "sent", "failed", "skipped", "unknown")
FINAL = frozenset({"sent", "failed", "skipped", "unknown"})

# The store's time: ARGV's value when a test gave one, else Redis's clock.
_CLOCK = """
local function clock(given)
  local n = tonumber(given)
  if n then return n end
  local t = redis.call('TIME')
  return tonumber(t[1]) + tonumber(t[2]) / 1e6
end
"""

_MOVE = (
    _CLOCK
    + """
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
)

# KEYS: msg, counts, queued; ARGV: prefix, bare key, now, notice, batch, registration, kind,
# store now ('' for Redis's clock)
_CREATE = (
    _CLOCK
    + """
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('HSET', KEYS[1], 'state', 'queued', 'notice', ARGV[4], 'attempts', 0,
  'created_at', ARGV[3], 'updated_at', ARGV[3], 'batch', ARGV[5],
  'registration', ARGV[6], 'kind', ARGV[7], 'last_reply', '')
redis.call('HINCRBY', KEYS[2], 'queued', 1)
if ARGV[5] ~= '' then
  redis.call('HINCRBY', ARGV[1] .. ':batch:' .. ARGV[5] .. ':counts', 'queued', 1)
  redis.call('SADD', ARGV[1] .. ':batch:' .. ARGV[5] .. ':messages', ARGV[2])
end
redis.call('ZADD', KEYS[3], clock(ARGV[8]), ARGV[2])
return 1
"""
)

# KEYS: msg, counts, sending, retry, queued; ARGV: prefix, bare key, store now, lease seconds
# Returns {attempt, notice, seat or '', earlier unknown outcomes}, or {0} / {-1}.
_CLAIM = (
    _MOVE
    + """
local now = clock(ARGV[3])
local st = redis.call('HGET', KEYS[1], 'state')
if not st then return {-1} end
if st == 'sending' then
  local lease = redis.call('HGET', KEYS[1], 'lease_until')
  if lease and tonumber(lease) > now then return {0} end
elseif st ~= 'queued' and st ~= 'retrying' then
  return {0}
end
local n = redis.call('HINCRBY', KEYS[1], 'attempts', 1)
local untl = now + tonumber(ARGV[4])
redis.call('HSET', KEYS[1], 'state', 'sending', 'updated_at', now, 'lease_until', untl)
if st ~= 'sending' then move(KEYS[1], st, 'sending') end
redis.call('ZADD', KEYS[3], untl, ARGV[2])
redis.call('ZREM', KEYS[4], ARGV[2])
redis.call('ZREM', KEYS[5], ARGV[2])
local notice = redis.call('HGET', KEYS[1], 'notice')
local unknowns = tonumber(redis.call('HGET', KEYS[1], 'unknowns') or '0')
if redis.call('HGET', KEYS[1], 'kind') ~= 'reminder' then return {n, notice, '', unknowns} end
-- A reminder goes to whoever holds the seat now: hand the seat over in the same trip.
local d = cjson.decode(notice)
local seat = redis.call('GET', ARGV[1] .. ':seat:' .. d.conference .. ':' .. d.registration_id)
return {n, notice, seat or '', unknowns}
"""
)

# KEYS: msg, counts, sending, retry, unknown; ARGV: prefix, bare key, store now, token, to,
# reply, delay (seconds, for retrying), resends allowed after an unknown outcome.
# `to` = 'unknown' becomes 'retrying' while resends are left. Returns 0 if the claim was lost,
# else 1, or 2 when an unknown outcome was turned into a retry.
_FINISH = (
    _MOVE
    + """
local st = redis.call('HGET', KEYS[1], 'state')
if st ~= 'sending' then return 0 end
if redis.call('HGET', KEYS[1], 'attempts') ~= ARGV[4] then return 0 end
local now = clock(ARGV[3])
local to = ARGV[5]
local result = 1
if to == 'unknown' then
  local seen = redis.call('HINCRBY', KEYS[1], 'unknowns', 1)
  if seen <= tonumber(ARGV[8]) then to = 'retrying'; result = 2 end
end
redis.call('HSET', KEYS[1], 'state', to, 'last_reply', ARGV[6], 'updated_at', now)
move(KEYS[1], 'sending', to)
redis.call('ZREM', KEYS[3], ARGV[2])
if to == 'failed' then redis.call('SADD', ARGV[1] .. ':failed', ARGV[2]) end
if to == 'unknown' then redis.call('SADD', KEYS[5], ARGV[2]) end
if to == 'retrying' then redis.call('ZADD', KEYS[4], now + tonumber(ARGV[7]), ARGV[2]) end
return result
"""
)


def text(value: bytes | str | object) -> str:
    """A Redis reply as str (the client returns bytes; its type hints allow str too)."""
    return value.decode() if isinstance(value, bytes) else str(value)


# KEYS: msg, counts, retry, queued; ARGV: prefix, bare key, store now, due (store time)
_DEFER = (
    _MOVE
    + """
local st = redis.call('HGET', KEYS[1], 'state')
if st ~= 'queued' and st ~= 'retrying' then return 0 end
redis.call('HSET', KEYS[1], 'state', 'retrying', 'updated_at', clock(ARGV[3]))
if st ~= 'retrying' then move(KEYS[1], st, 'retrying') end
redis.call('ZADD', KEYS[3], ARGV[4], ARGV[2])
redis.call('ZREM', KEYS[4], ARGV[2])
return 1
"""
)

# KEYS: msg, sending; ARGV: bare key, store now, token, lease seconds. A claim still held
# by this attempt gets a new lease (a send waiting long for the final dot stays ours).
_RENEW = (
    _CLOCK
    + """
if redis.call('HGET', KEYS[1], 'state') ~= 'sending' then return 0 end
if redis.call('HGET', KEYS[1], 'attempts') ~= ARGV[3] then return 0 end
local untl = clock(ARGV[2]) + tonumber(ARGV[4])
redis.call('HSET', KEYS[1], 'lease_until', untl)
redis.call('ZADD', KEYS[2], untl, ARGV[1])
return 1
"""
)

# KEYS: a sweeper index; ARGV: store now, look back (s), limit, hold (s). The members scored
# at or before now - look back; their score becomes now + hold.
_DUE = (
    _CLOCK
    + """
local now = clock(ARGV[1])
local found = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now - tonumber(ARGV[2]),
  'LIMIT', 0, tonumber(ARGV[3]))
for _, k in ipairs(found) do redis.call('ZADD', KEYS[1], 'XX', now + tonumber(ARGV[4]), k) end
return found
"""
)


StoreClock = Callable[[], float]


@dataclass(frozen=True, slots=True)
class Claim:
    key: str
    token: int
    notice: Notice
    seat: str | None = None  # for a reminder: the seat's JSON as it is now
    unknowns: int = 0  # earlier attempts whose outcome was unknown


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
FINISH_STATES = ("sent", "failed", "retrying", "skipped", "unknown")


def _stamp(store_clock: StoreClock | None) -> str | float:
    return "" if store_clock is None else store_clock()


def _claim_call(key: str, now: str | float, lease: float) -> Call:
    return (
        [keys.message(key), keys.COUNTS, keys.SENDING, keys.RETRY, keys.QUEUED],
        [keys.PREFIX, key, now, lease],
    )


def _claimed(key: str, reply: Any) -> Claim | None:
    # One round trip: the script returns the attempt number, the stored notice, for a
    # reminder the seat, and how many earlier attempts ended unknown.
    token = int(reply[0])
    if token <= 0:
        return None
    seat = text(reply[2]) if reply[2] else None
    return Claim(key, token, Notice.from_json(text(reply[1])), seat, int(reply[3]))


@dataclass(frozen=True, slots=True)
class Settlement:
    """How a claimed send ends: the state, the reply to record, the delay before a retry."""

    state: str
    reply: str
    delay: float = 0.0


def _finish_call(claim: Claim, end: Settlement, now: str | float, resends: int) -> Call:
    if end.state not in FINISH_STATES:
        raise ValueError(f"not a state to finish in: {end.state}")
    return (
        [keys.message(claim.key), keys.COUNTS, keys.SENDING, keys.RETRY, keys.UNKNOWN],
        [keys.PREFIX, claim.key, now, claim.token, end.state, end.reply, end.delay, resends],
    )


def _defer_call(key: str, now: str | float, due: float) -> Call:
    return (
        [keys.message(key), keys.COUNTS, keys.RETRY, keys.QUEUED],
        [keys.PREFIX, key, now, due],
    )


class AsyncOutbox:
    """The transitions delivery needs, on an asyncio Redis client: while one session waits
    for Redis, the others' SMTP traffic goes on (a blocking client would stall them all)."""

    CLAIM, FINISH, DEFER, RENEW = Script(_CLAIM), Script(_FINISH), Script(_DEFER), Script(_RENEW)

    def __init__(
        self,
        client: redis.asyncio.Redis,
        *,
        lease_seconds: float,
        unknown_resends: int = 1,
        store_clock: StoreClock | None = None,
    ) -> None:
        self.lease = lease_seconds
        self.unknown_resends = unknown_resends
        self.store_clock = store_clock
        self._calls = Pipelined(client)  # the sessions' calls share round trips

    async def claim(self, key: str) -> Claim | None:
        k, a = _claim_call(key, _stamp(self.store_clock), self.lease)
        return _claimed(key, await self._calls.call(self.CLAIM, k, a))

    async def finish(self, claim: Claim, end: Settlement) -> int:
        """0: the claim was lost; 1: recorded; 2: an unknown outcome became a retry."""
        return int(await self.finish_soon(claim, end))

    def finish_soon(self, claim: Claim, end: Settlement) -> asyncio.Future[Any]:
        """Queue a finish without waiting for it: it reaches Redis before any call queued
        after it (a falsy reply: the claim was lost)."""
        k, a = _finish_call(claim, end, _stamp(self.store_clock), self.unknown_resends)
        return self._calls.submit(self.FINISH, k, a)

    async def defer(self, key: str, due: float) -> bool:
        k, a = _defer_call(key, _stamp(self.store_clock), due)
        return bool(await self._calls.call(self.DEFER, k, a))

    async def renew(self, claim: Claim) -> bool:
        """Extend a claim this attempt still holds; False once it is settled or lost."""
        k = [keys.message(claim.key), keys.SENDING]
        a = [claim.key, _stamp(self.store_clock), claim.token, self.lease]
        return bool(await self._calls.call(self.RENEW, k, a))


class Outbox:
    """Message states in Redis. Times come from Redis's clock unless a store clock is given."""

    def __init__(
        self,
        client: redis.Redis,
        *,
        lease_seconds: float = 120.0,
        unknown_resends: int = 1,
        store_clock: StoreClock | None = None,
    ) -> None:
        self.r = client
        self.lease = lease_seconds
        self.unknown_resends = unknown_resends
        self.store_clock = store_clock
        self._create = client.register_script(_CREATE)
        self._claim = client.register_script(_CLAIM)
        self._finish = client.register_script(_FINISH)
        self._defer = client.register_script(_DEFER)
        self._due = client.register_script(_DUE)

    def create(self, notice: Notice, now: float, pipe: redis.client.Pipeline | None = None) -> None:
        """Add a queued message unless its key exists (then nothing changes). `now` is the
        creation time recorded for people; the sweeper's index uses the store's clock."""
        k = [keys.message(notice.key), keys.COUNTS, keys.QUEUED]
        a: list[str | float] = [
            keys.PREFIX,
            notice.key,
            now,
            notice.to_json(),
            notice.batch or "",
            notice.registration_id,
            notice.kind.value,
            _stamp(self.store_clock),
        ]
        if pipe is not None and getattr(pipe, "explicit_transaction", False):  # after MULTI
            # Inside MULTI the script goes as source (EVAL): redis-py would first ask SCRIPT
            # EXISTS, a round trip per event, and an EVALSHA Redis had forgotten would fail
            # on its own while the rest of the transaction committed.
            pipe.eval(_CREATE, len(k), *k, *a)
            return
        self._create(keys=k, args=a, client=pipe or self.r)

    def claim(self, key: str) -> Claim | None:
        """Take a message for sending, or None if it is sent, failed or held by a live claim."""
        k, a = _claim_call(key, _stamp(self.store_clock), self.lease)
        return _claimed(key, self._claim(keys=k, args=a))

    def finish(self, claim: Claim, end: Settlement) -> int:
        """Record the outcome of a claimed send; 0 if the claim was lost meanwhile."""
        k, a = _finish_call(claim, end, _stamp(self.store_clock), self.unknown_resends)
        return int(self._finish(keys=k, args=a))

    def defer(self, key: str, due: float) -> bool:
        """Put an unclaimed message back until `due` (store time) without counting an attempt."""
        k, a = _defer_call(key, _stamp(self.store_clock), due)
        return bool(self._defer(keys=k, args=a))

    def now(self) -> float:
        """The store's time: Redis's clock, or the test's store clock."""
        if self.store_clock is not None:
            return self.store_clock()
        seconds, micros = self.r.time()
        return float(seconds) + micros / 1e6

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

    def due(self, index: str, *, behind: float, limit: int, hold: float) -> list[str]:
        """Keys in a sweeper index (RETRY, SENDING or QUEUED) scored at or before the store's
        now minus `behind`.

        Their score becomes now + `hold`, so each is handed out once per period even if the
        task that would take it is lost; a successful claim removes it from the index.
        """
        found = self._due(keys=[index], args=[_stamp(self.store_clock), behind, limit, hold])
        return [text(k) for k in found]

    def unknown_keys(self) -> list[str]:
        return sorted(text(k) for k in self.r.smembers(keys.UNKNOWN))

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
