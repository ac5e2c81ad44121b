"""The gate every send passes: a pause after a relay said "slow down", and a global rate limit.

Both live in Redis so that every worker process on every machine obeys the same pause and
shares one rate. The rate limit reserves send slots (a GCRA-style schedule): each caller
learns how long to wait for its slot, so the rate holds without polling or busy loops.
Redis's own clock is used, so workers with skewed clocks still agree.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import redis.asyncio

from notifier.store import keys, lua

_GATE, _PAUSE = lua.source("gate.lua"), lua.source("pause.lua")


@dataclass(frozen=True, slots=True)
class Admission:
    paused_until: float  # epoch seconds; 0 when not paused
    wait: float  # seconds to wait for this send's slot


class Gate:
    def __init__(
        self, client: redis.asyncio.Redis, rate_per_second: float, *, recheck: float = 0.25
    ) -> None:
        self.interval = 1.0 / rate_per_second if rate_per_second > 0 else 0.0
        self.recheck = recheck
        self._gate = client.register_script(_GATE)
        self._pause = client.register_script(_PAUSE)
        self._open_until = 0.0

    async def admit(self) -> Admission:
        # Without a rate limit only the pause matters; a pause noticed up to `recheck`
        # seconds late costs a few extra sends, asking Redis before every send costs a
        # round trip each.
        if not self.interval and time.monotonic() < self._open_until:
            return Admission(0.0, 0.0)
        paused, wait = await self._gate(keys=[keys.PAUSE, keys.RATE], args=[self.interval])
        if not float(paused):
            self._open_until = time.monotonic() + self.recheck
        return Admission(float(paused), float(wait))

    async def pause(self, seconds: float) -> float:
        """Hold every sender for `seconds` (a relay asked us to slow down)."""
        self._open_until = 0.0
        return float(await self._pause(keys=[keys.PAUSE], args=[seconds]))
