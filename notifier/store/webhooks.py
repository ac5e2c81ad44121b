"""Pending webhook deliveries in Redis: a zset of due times and a hash of payloads.

A delivery is queued by the same script that moves its message to sent, failed or
suppressed (finish.lua) or to bounced (bounce.lua), when the settling process has webhooks
configured, so a crash between the two cannot lose one. Its id is derived from the message
key and the state ('msg_' + SHA-1 of both), so it is stable across retries and restarts.

A sender claims due deliveries under a lease (scripts/webhook_claim.lua: the due time becomes
the lease's end, so a dead sender's deliveries come back), then settles each one with the
claim's token (scripts/webhook_settle.lua): done, retried later, or given up and kept in the
dead hash. Times are on Redis's clock unless a test passes a store clock.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import redis

from notifier.store import keys, lua
from notifier.store.codec import text

__all__ = ["DEAD", "DUE", "PAYLOADS", "Claimed", "Pending", "webhook_id"]

DUE = keys.WEBHOOK_DUE
PAYLOADS = keys.WEBHOOK_PAYLOADS
ATTEMPTS = keys.WEBHOOK_ATTEMPTS
DEAD = keys.WEBHOOK_DEAD
STATS = keys.WEBHOOK_STATS

_CLAIM = lua.source("webhook_claim.lua")
_SETTLE = lua.source("webhook_settle.lua")

StoreClock = Callable[[], float]


def webhook_id(message_key: str, state: str) -> str:
    """The id the scripts give the delivery of `message_key` reaching `state`."""
    return "msg_" + hashlib.sha1(f"{message_key}\n{state}".encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class Claimed:
    """A delivery this sender holds until `lease` runs out; `token` settles it."""

    id: str
    token: int
    payload: dict[str, Any]
    now: float  # the store's time at the claim


class Pending:
    """The pending deliveries, on a redis-py client."""

    def __init__(self, client: redis.Redis, *, store_clock: StoreClock | None = None) -> None:
        self.r = client
        self.store_clock = store_clock
        self._claim = client.register_script(_CLAIM)
        self._settle = client.register_script(_SETTLE)

    def _now(self) -> str | float:
        return "" if self.store_clock is None else self.store_clock()

    def claim(self, *, limit: int, lease: float) -> list[Claimed]:
        """Up to `limit` due deliveries, each now held for `lease` seconds."""
        reply = self._claim(keys=[DUE, PAYLOADS, ATTEMPTS], args=[self._now(), limit, lease])
        now = float(text(reply[0]))
        out = []
        for i in range(1, len(reply), 3):
            payload = json.loads(text(reply[i + 2]))
            out.append(Claimed(text(reply[i]), int(reply[i + 1]), payload, now))
        return out

    def done(self, claim: Claimed) -> bool:
        """The receiver took it: removed. False when the claim was lost meanwhile."""
        return self._settle_call(claim, "done", 0.0, "")

    def retry(self, claim: Claimed, delay: float) -> bool:
        """Due again `delay` seconds from now (store time)."""
        return self._settle_call(claim, "retry", delay, "")

    def give_up(self, claim: Claimed, record: dict[str, Any]) -> bool:
        """Kept in the dead hash with `record` (what an operator needs), and counted."""
        return self._settle_call(claim, "dead", 0.0, json.dumps(record, ensure_ascii=False))

    def _settle_call(self, claim: Claimed, mode: str, delay: float, record: str) -> bool:
        k = [DUE, PAYLOADS, ATTEMPTS, DEAD, STATS]
        a: list[str | float] = [claim.id, claim.token, mode, self._now(), delay, record]
        return bool(self._settle(keys=k, args=a))

    def pending(self) -> int:
        return int(self.r.zcard(DUE))

    def dead(self) -> dict[str, dict[str, Any]]:
        return {text(k): json.loads(text(v)) for k, v in self.r.hgetall(DEAD).items()}

    def stats(self) -> dict[str, int]:
        raw = {text(k): int(v) for k, v in self.r.hgetall(STATS).items()}
        return {"pending": self.pending(), **{n: raw.get(n, 0) for n in ("delivered", "given_up")}}
