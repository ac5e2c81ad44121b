"""The outbox: one Redis hash per message with its state, attempts and last SMTP reply.

States: queued -> sending -> sent | retrying | failed | skipped | unknown | suppressed;
retrying -> sending again; sent | unknown -> bounced. `unknown`: the relay may have the message
(no reply to the final dot) and the one resend allowed for that has been used up, so it is not
sent again. `suppressed`: its address is on the suppression list, so it was settled without
SMTP. `bounced`: the relay accepted it, and a delivery report came back later saying it could
not be delivered (a hard failure).

Times that workers compare with each other (claim leases, retry due times, the sweeper's
cut-offs) are read from Redis's own clock (`TIME`) inside the scripts, so workers whose
clocks disagree still agree on whether a lease has run out. Tests may pass a store clock of
their own (`store_clock`) to move time by hand.

Every transition is one Lua script (scripts/*.lua), so the state, the per-state counters
(global and per batch) and the sweeper's indexes never disagree. A message is *claimed*
(moved to "sending" with a lease) before SMTP and marked after it, so a redelivered task
never sends it again; a claim whose lease ran out (its worker died) can be taken over.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import redis
import redis.asyncio

from notifier.bounces.token import message_id
from notifier.domain.notice import SEAT_KINDS, Notice
from notifier.store import keys, lua
from notifier.store.codec import text
from notifier.store.pipelining import Pipelined, Script
from notifier.store.webhooks import DUE as WEBHOOK_DUE
from notifier.store.webhooks import PAYLOADS as WEBHOOK_PAYLOADS

STATES = (
    "queued",
    "sending",
    "retrying",
    "sent",
    "failed",
    "skipped",
    "unknown",
    "bounced",
    "suppressed",
)
# `sent` and `unknown` are final for sending; only a delivery report moves them on (bounced).
FINAL = frozenset({"sent", "failed", "skipped", "unknown", "bounced", "suppressed"})

# Every transition's script, from scripts/*.lua (each names its KEYS and ARGV at the top).
_CREATE = lua.source("create.lua")
_CLAIM = lua.source("claim.lua")
_FINISH = lua.source("finish.lua")
_DEFER = lua.source("defer.lua")
_RENEW = lua.source("renew.lua")
_DUE = lua.source("due.lua")
_SKIP = lua.source("skip.lua")  # the retention purge's: settle an unsent message
_CARRY = lua.source("carry.lua")  # record on the seat what an invite mail carries
_BOUNCE = lua.source("bounce.lua")  # what a delivery report said after the relay's 250
_COUNT = lua.source("count.lua")  # a statistics counter (store/stats.py)
_TURN = lua.source("turn.lua")  # a reminder or update takes its turn for the holder's UID

# Key formats for messages created before their key names were stored in them (see keys.py).
_BATCH_COUNTS = keys.template(keys.batch_counts)
_SEAT = keys.template(keys.seat, 2)


StoreClock = Callable[[], float]


@dataclass(frozen=True, slots=True)
class Claim:
    key: str
    token: int
    notice: Notice
    seat: str | None = None  # the seat's JSON as it is now (messages that name their seat)
    seat_key: str = ""


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
    # The envelope recipient the finish recorded; for messages finished before it was
    # recorded, the notice's (a reminder's notice may name a placeholder: see finish.lua).
    sent_to: str = ""
    bounce_status: str = ""  # the rest: what a delivery report said, if one came
    bounce_diagnostic: str = ""
    bounce_reason: str = ""  # notifier.bounces.reason's name for it
    bounced_at: float | None = None
    delay_status: str = ""
    delay_diagnostic: str = ""
    delayed_at: float | None = None


Call = tuple[list[str], list[Any]]
FINISH_STATES = ("sent", "failed", "retrying", "skipped", "unknown", "suppressed")
MAX_DIAGNOSTIC = 1000  # a report's diagnostic is kept up to this many characters


def _stamp(store_clock: StoreClock | None) -> str | float:
    return "" if store_clock is None else store_clock()


def _claim_call(key: str, now: str | float, lease: float) -> Call:
    return (
        [keys.message(key), keys.COUNTS, keys.SENDING, keys.RETRY, keys.QUEUED],
        [key, now, lease, _BATCH_COUNTS, _SEAT],
    )


def _create_call(notice: Notice, now: float, store_now: str | float) -> Call:
    k = [keys.message(notice.key), keys.COUNTS, keys.QUEUED, keys.BOUNCE_IDS]
    k.append(keys.registration_messages(notice.conference, notice.registration_id))
    if notice.batch:
        k += [keys.batch_counts(notice.batch), keys.batch_members(notice.batch)]
    # A reminder or update goes to whoever holds the seat when it is sent, and every invite
    # records on the seat what it carried: the claim script hands the seat over.
    named = notice.kind in SEAT_KINDS or notice.invite is not None
    seat = keys.seat(notice.conference, notice.registration_id) if named else ""
    # A message whose invite UID is known when it is planned queues for that UID at once:
    # mails for one UID reach the relay in the order they were planned.
    fixed = notice.invite is not None and notice.kind not in SEAT_KINDS
    order = keys.uid_order(notice.invite.uid) if fixed and notice.invite else ""
    a: list[Any] = [
        notice.key,
        now,
        notice.to_json(),
        notice.batch or "",
        notice.registration_id,
        notice.kind.value,
        store_now,
        seat,
        message_id(notice.key),
        order,
    ]
    return k, a


def _claimed(key: str, reply: Any) -> Claim | None:
    # One round trip: the script returns the attempt number, the stored notice and, for a
    # message that names its seat, the seat and its key.
    token = int(reply[0])
    if token <= 0:
        return None
    seat = text(reply[2]) if reply[2] else None
    return Claim(key, token, Notice.from_json(text(reply[1])), seat, text(reply[3]))


@dataclass(frozen=True, slots=True)
class Settlement:
    """How a claimed send ends: the state, the reply to record (for "suppressed", the
    suppression's reason), the delay before a retry, and the envelope recipient ('' keeps
    what is stored), which a later bounce reads as the address that failed. `uid` and
    `carried` (plan.Carried's JSON): what the mail's invite carried, recorded on the seat
    only if the relay has the mail (sent, or unknown)."""

    state: str
    reply: str
    delay: float = 0.0
    recipient: str = ""
    uid: str = ""
    carried: str = ""
    uncounted: bool = False  # the relay asked us to wait: the attempt does not count


@dataclass(frozen=True, slots=True)
class Turn:
    """What taking a turn for an invite UID found: `held` (send now), `waiting` (put back
    until an earlier mail for the UID settles), or neither: the seat changed (`seat` is the
    seat now, '' once gone) or the claim was lost (`lost`). `handed_on`: a message that may
    go now because this one left another UID's list ('' for none)."""

    held: bool = False
    waiting: bool = False
    lost: bool = False
    seat: str = ""
    handed_on: str = ""


def _turn(reply: Any) -> Turn:
    code = int(reply[0])
    rest = text(reply[1]) if len(reply) > 1 and reply[1] else ""
    if code == 0:
        return Turn(seat=rest)
    return Turn(held=code == 1, waiting=code == 2, lost=code == 3, handed_on=rest)


def finished(reply: Any) -> tuple[int, str]:
    """finish.lua's reply: 0 (claim lost), 1 (recorded) or 2 (an unknown outcome became a
    retry), and the key of the message handed on for the same UID ('' for none)."""
    handed = text(reply[1]) if len(reply) > 1 and reply[1] else ""
    return int(reply[0]), handed


def _finish_call(
    claim: Claim, end: Settlement, now: str | float, resends: int, webhooks: bool = False
) -> Call:
    if end.state not in FINISH_STATES:
        raise ValueError(f"not a state to finish in: {end.state}")
    k = [keys.message(claim.key), keys.COUNTS, keys.SENDING, keys.RETRY, keys.UNKNOWN]
    k += [keys.FAILED, keys.SUPPRESSED, keys.BOUNCE_IDS, WEBHOOK_DUE, WEBHOOK_PAYLOADS]
    a: list[Any] = [claim.key, now, claim.token, end.state, end.reply, end.delay, resends]
    a += [_BATCH_COUNTS, end.recipient, message_id(claim.key), _flag(webhooks)]
    a += [end.uid, end.carried, _flag(end.uncounted)]
    return k, a


def _bounce_call(
    key: str,
    mode: str,
    status: str,
    diagnostic: str,
    now: float,
    webhooks: bool = False,
    reason: str = "",
) -> Call:
    k = [keys.message(key), keys.COUNTS, keys.BOUNCED, keys.UNKNOWN]
    k += [WEBHOOK_DUE, WEBHOOK_PAYLOADS]
    a = [key, mode, status, diagnostic[:MAX_DIAGNOSTIC], now, _BATCH_COUNTS, _flag(webhooks)]
    return k, [*a, reason]


def _flag(webhooks: bool) -> str:
    # The scripts queue a webhook delivery only for a process with webhooks configured.
    return "1" if webhooks else ""


def _defer_call(key: str, now: str | float, due: float) -> Call:
    return (
        [keys.message(key), keys.COUNTS, keys.RETRY, keys.QUEUED],
        [key, now, due, _BATCH_COUNTS],
    )


def skip(pipe: Any, key: str, notice: Notice, reply: str, now: float) -> None:
    """Queue on `pipe` the settling of an unsent message as skipped, keeping `notice` and
    `reply` (the retention purge's anonymised ones): state, counters (global and batch) and
    sweeper indexes move as in every other transition. Nothing changes if the message has
    settled or a claim whose lease runs past `now` (epoch seconds) holds it.

    The script goes as source (EVAL), so that inside MULTI it cannot fail on its own while
    the rest of the transaction commits (as an EVALSHA Redis had forgotten would).
    """
    k = [keys.message(key), keys.COUNTS, keys.QUEUED, keys.RETRY, keys.SENDING]
    pipe.eval(_SKIP, len(k), *k, key, now, notice.to_json(), reply, _BATCH_COUNTS)


class AsyncOutbox:
    """The transitions delivery needs, on an asyncio Redis client: while one session waits
    for Redis, the others' SMTP traffic goes on (a blocking client would stall them all)."""

    CLAIM, FINISH, DEFER, RENEW = Script(_CLAIM), Script(_FINISH), Script(_DEFER), Script(_RENEW)
    CARRY, COUNT, TURN = Script(_CARRY), Script(_COUNT), Script(_TURN)

    def __init__(
        self,
        client: redis.asyncio.Redis,
        *,
        lease_seconds: float,
        unknown_resends: int = 1,
        store_clock: StoreClock | None = None,
        webhooks: bool = False,
    ) -> None:
        """`webhooks`: settling a message also queues its webhook delivery (the settings'
        webhooks_enabled)."""
        self.lease = lease_seconds
        self.unknown_resends = unknown_resends
        self.store_clock = store_clock
        self.webhooks = webhooks
        self._calls = Pipelined(client)  # the sessions' calls share round trips
        # Messages whose turn came because one before them for the same UID settled.
        self.handed_on: list[str] = []

    async def claim(self, key: str) -> Claim | None:
        k, a = _claim_call(key, _stamp(self.store_clock), self.lease)
        return _claimed(key, await self._calls.call(self.CLAIM, k, a))

    async def finish(self, claim: Claim, end: Settlement) -> int:
        """0: the claim was lost; 1: recorded; 2: an unknown outcome became a retry."""
        return self.finished(await self.finish_soon(claim, end))

    def finished(self, reply: Any) -> int:
        """finish.lua's reply as finish() returns it; the message it hands on (the next one
        for the same invite UID) joins `handed_on`."""
        result, handed = finished(reply)
        if handed:
            self.handed_on.append(handed)
        return result

    def take_handed_on(self) -> list[str]:
        """The messages handed on since the last call (each once)."""
        handed, self.handed_on = list(dict.fromkeys(self.handed_on)), []
        return handed

    async def turn(self, claim: Claim, seat: str, uid: str) -> Turn:
        """Take the claimed message's turn for `uid`, the invite UID of the seat's holder
        as read from `seat` (see Turn)."""
        k = [keys.message(claim.key), claim.seat_key, keys.uid_order(uid), keys.COUNTS]
        k += [keys.SENDING, keys.QUEUED, keys.RETRY]
        a = [claim.key, seat, claim.token, _stamp(self.store_clock), _BATCH_COUNTS]
        got = _turn(await self._calls.call(self.TURN, k, a))
        if got.handed_on:
            self.handed_on.append(got.handed_on)
        return got

    def finish_soon(self, claim: Claim, end: Settlement) -> asyncio.Future[Any]:
        """Queue a finish without waiting for it: it reaches Redis before any call queued
        after it (a falsy reply: the claim was lost)."""
        now = _stamp(self.store_clock)
        k, a = _finish_call(claim, end, now, self.unknown_resends, self.webhooks)
        return self._calls.submit(self.FINISH, k, a)

    def count_reply(self, reply_class: str) -> asyncio.Future[Any]:
        """Queue one count of an SMTP outcome's class (keys.SMTP_STATS) without waiting: it
        rides in the pipeline of the finish queued after it."""
        return self._calls.submit(self.COUNT, [keys.SMTP_STATS], [reply_class])

    async def defer(self, key: str, due: float) -> bool:
        k, a = _defer_call(key, _stamp(self.store_clock), due)
        return bool(await self._calls.call(self.DEFER, k, a))

    async def carry(self, claim: Claim, expected: str | None, seat: str) -> str | None:
        """Store `seat` (what the claimed mail's invite carries) if the seat is still
        `expected`; else the seat as it is now ('' once it is gone), to prepare again."""
        reply = await self._calls.call(self.CARRY, [claim.seat_key], [expected or "", seat])
        return None if int(reply[0]) == 1 else text(reply[1])

    async def reconnect(self) -> None:
        """Drop the client's connections: the next call opens new ones (after a failover,
        a demoted primary answers READONLY on the old ones)."""
        await self._calls.client.connection_pool.disconnect()

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
        webhooks: bool = False,
    ) -> None:
        """`webhooks`: settling or bouncing a message also queues its webhook delivery (the
        settings' webhooks_enabled)."""
        self.r = client
        self.lease = lease_seconds
        self.unknown_resends = unknown_resends
        self.store_clock = store_clock
        self.webhooks = webhooks
        self._create = client.register_script(_CREATE)
        self._claim = client.register_script(_CLAIM)
        self._finish = client.register_script(_FINISH)
        self._defer = client.register_script(_DEFER)
        self._due = client.register_script(_DUE)
        self._bounce = client.register_script(_BOUNCE)

    def create(self, notice: Notice, now: float, pipe: redis.client.Pipeline | None = None) -> None:
        """Add a queued message unless its key exists (then nothing changes). `now` is the
        creation time recorded for people; the sweeper's index uses the store's clock."""
        k, a = _create_call(notice, now, _stamp(self.store_clock))
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
        now = _stamp(self.store_clock)
        k, a = _finish_call(claim, end, now, self.unknown_resends, self.webhooks)
        return finished(self._finish(keys=k, args=a))[0]

    def defer(self, key: str, due: float) -> bool:
        """Put an unclaimed message back until `due` (store time) without counting an attempt."""
        k, a = _defer_call(key, _stamp(self.store_clock), due)
        return bool(self._defer(keys=k, args=a))

    def bounce(
        self, key: str, status: str, diagnostic: str, now: float, *, reason: str = ""
    ) -> str:
        """A hard bounce for a message the relay had accepted: "bounced" when it moved from
        sent (or unknown) to bounced, or was bounced already (a second report moves
        nothing); otherwise the state found ("queued", "failed", ...; "missing" when there
        is no such message), and nothing changes. `now` is epoch seconds, kept as given.
        `reason` is the report's reason (notifier.bounces.reason), kept as bounce_reason."""
        k, a = _bounce_call(key, "bounced", status, diagnostic, now, self.webhooks, reason)
        return text(self._bounce(keys=k, args=a))

    def delay(
        self, key: str, status: str, diagnostic: str, now: float, *, reason: str = ""
    ) -> bool:
        """Record a delay report on a sent (or unknown) message; its state stays. False
        when the message is in another state or missing (nothing changes)."""
        k, a = _bounce_call(key, "delayed", status, diagnostic, now, reason=reason)
        return text(self._bounce(keys=k, args=a)) == "delayed"

    def key_for_bounce_id(self, bid: str) -> str | None:
        """The message whose return path carries this id, if the store knows it."""
        found = self.r.hget(keys.BOUNCE_IDS, bid)
        return text(found) if found is not None else None

    def get(self, key: str) -> Record | None:
        data = self.r.hgetall(keys.message(key))
        return self._record(key, data) if data else None

    @staticmethod
    def _record(key: str, data: dict[Any, Any]) -> Record:
        d = {text(k): text(v) for k, v in data.items()}
        notice = Notice.from_json(d["notice"])
        return Record(
            key=key,
            state=d["state"],
            attempts=int(d["attempts"]),
            last_reply=d["last_reply"],
            kind=d["kind"],
            registration=d["registration"],
            batch=d["batch"],
            notice=notice,
            sent_to=d.get("sent_to") or notice.recipient.email,
            bounce_status=d.get("bounce_status", ""),
            bounce_diagnostic=d.get("bounce_diagnostic", ""),
            bounce_reason=d.get("bounce_reason", ""),
            bounced_at=_number(d.get("bounced_at")),
            delay_status=d.get("delay_status", ""),
            delay_diagnostic=d.get("delay_diagnostic", ""),
            delayed_at=_number(d.get("delayed_at")),
        )

    def states(self, message_keys: Sequence[str]) -> dict[str, str | None]:
        pipe = self.r.pipeline(transaction=False)
        for key in message_keys:
            pipe.hget(keys.message(key), "state")
        return {
            key: (text(s) if s else None)
            for key, s in zip(message_keys, pipe.execute(), strict=True)
        }

    def keys_of_registrations(self, conference: str, registrations: Sequence[str]) -> list[str]:
        """Every indexed message key of these registrations (keys.registration_messages)."""
        pipe = self.r.pipeline(transaction=False)
        for registration in registrations:
            pipe.smembers(keys.registration_messages(conference, registration))
        return sorted(text(k) for members in pipe.execute() for k in members)

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

    def due_for_sweeper(self, *, limit: int, visibility: float) -> list[str]:
        """Messages to hand to a deliver task now: retries whose time has come, claims whose
        lease ran out (their worker died or stopped), and queued messages no task took (a
        crash between commit and enqueue). A queued message waits its turn in the broker;
        only one that has waited twice the visibility timeout is taken to be lost."""
        found = self.due(keys.RETRY, behind=0, limit=limit, hold=visibility)
        found += self.due(keys.SENDING, behind=0, limit=limit, hold=self.lease)
        unqueued = self.due(keys.QUEUED, behind=2 * visibility, limit=limit, hold=0)
        return found + [k for k in unqueued if k not in found]

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

    def bounced_keys(self) -> list[str]:
        return sorted(text(k) for k in self.r.smembers(keys.BOUNCED))

    def suppressed_keys(self) -> list[str]:
        return sorted(text(k) for k in self.r.smembers(keys.SUPPRESSED))

    def keys_in(self, batch: str) -> Iterable[str]:
        for k in self.r.sscan_iter(keys.batch_members(batch), count=1000):
            yield text(k)


def _number(value: str | None) -> float | None:
    return float(value) if value else None
