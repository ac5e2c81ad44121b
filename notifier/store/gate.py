"""The gate every send passes: a pause after a relay said "slow down", and a global rate limit.

Both live in Redis so that every worker process on every machine obeys the same pause and
shares one rate. The rate limit reserves send slots (a GCRA-style schedule): each caller
learns how long to wait for its slot, so the rate holds without polling or busy loops.
Redis's own clock is used, so workers with skewed clocks still agree.

The rate is the explicit cap (NOTIFIER_RATE_LIMIT, or the relay profile's) or the rate
learned from the relay's throttling replies, whichever is lower. Learning is AIMD: a
throttling reply halves the learned rate (or sets a starting rate) and pauses every sender,
each send at that rate raises it a little; once it has grown past the ceiling it is forgotten
and sending is unpaced again. While no rate applies, a process asks Redis only every
`recheck` seconds (for a pause), so pacing costs nothing with a relay that has no quota.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import redis
import redis.asyncio

from notifier.store import keys, lua

_GATE, _PAUSE = lua.source("gate.lua"), lua.source("pause.lua")
_THROTTLE = lua.source("throttle.lua")

#: The learning's parameters (see the module's docstring; the figures behind them are in
#: bench/README.md): the rate set by the first throttling reply (messages/s), the lowest it
#: may fall to, what each second of sending at the learned rate adds, and where it is
#: forgotten; the first pause after a throttling reply and the longest (seconds).
PACE_START = 1.0
PACE_FLOOR = 0.05
PACE_STEP = 0.1
PACE_CEILING = 100.0
FIRST_PAUSE = 2.0
LONGEST_PAUSE = 60.0


@dataclass(frozen=True, slots=True)
class Admission:
    paused_until: float  # epoch seconds; 0 when not paused
    wait: float  # seconds to wait for this send's slot


@dataclass(frozen=True, slots=True)
class Pacing:
    """What the senders go by now: the explicit cap and the learned rate (messages/s, None
    when none applies) and the end of a pause every sender is in (epoch seconds, Redis's
    clock; None when there is none), read at `now`."""

    cap: float | None
    learned: float | None
    paused_until: float | None
    now: float

    @property
    def rate(self) -> float | None:
        """The rate sends go at: the lower of the two, or None (as fast as the relay takes)."""
        rates = [r for r in (self.cap, self.learned) if r]
        return min(rates) if rates else None

    @property
    def pause_left(self) -> float:
        return max(0.0, (self.paused_until or 0.0) - self.now)


def pacing(client: redis.Redis, cap: float) -> Pacing:
    """The pacing every worker shares, read from Redis (`cap`: NOTIFIER_RATE_LIMIT or the
    relay profile's, 0 for none)."""
    pipe = client.pipeline(transaction=False)
    pipe.time()
    pipe.hget(keys.PACE, "rate")
    pipe.get(keys.PAUSE)
    (secs, usecs), learned, paused = pipe.execute()
    return Pacing(
        cap or None,
        float(learned) if learned else None,
        float(paused) if paused else None,
        int(secs) + int(usecs) / 1e6,
    )


@dataclass(frozen=True, slots=True)
class Throttled:
    rate: float  # the learned rate now (messages/s)
    paused_until: float  # epoch seconds (Redis's clock)
    now: float  # Redis's clock when it was set

    @property
    def pause(self) -> float:
        return max(0.0, self.paused_until - self.now)


class Gate:
    def __init__(
        self, client: redis.asyncio.Redis, rate_per_second: float, *, recheck: float = 0.25
    ) -> None:
        self.interval = 1.0 / rate_per_second if rate_per_second > 0 else 0.0
        self.recheck = recheck
        self.client = client
        self._gate = client.register_script(_GATE)
        self._pause = client.register_script(_PAUSE)
        self._throttle = client.register_script(_THROTTLE)
        self._open_until = 0.0

    async def admit(self) -> Admission:
        # Without a rate limit only the pause matters; a pause noticed up to `recheck`
        # seconds late costs a few extra sends, asking Redis before every send costs a
        # round trip each.
        if not self.interval and time.monotonic() < self._open_until:
            return Admission(0.0, 0.0)
        k = [keys.PAUSE, keys.RATE, keys.PACE]
        paused, wait, paced = await self._gate(
            keys=k, args=[self.interval, PACE_STEP, PACE_CEILING]
        )
        if not float(paused) and int(paced) == 0:
            self._open_until = time.monotonic() + self.recheck
        return Admission(float(paused), float(wait))

    async def paused_until(self) -> float:
        """The end of the pause every sender is in (epoch seconds), or 0: the pause key
        lives exactly as long as the pause."""
        found = await self.client.get(keys.PAUSE)
        return float(found) if found else 0.0

    async def throttle(self) -> Throttled:
        """A relay said we send too fast: every sender slows down and pauses (see the
        module's docstring)."""
        self._open_until = 0.0
        a = [PACE_START, PACE_FLOOR, FIRST_PAUSE, LONGEST_PAUSE]
        rate, until, now = await self._throttle(keys=[keys.PAUSE, keys.PACE], args=a)
        return Throttled(float(rate), float(until), float(now))

    async def pause(self, seconds: float) -> float:
        """Hold every sender for `seconds` (a relay asked us to slow down)."""
        self._open_until = 0.0
        return float(await self._pause(keys=[keys.PAUSE], args=[seconds]))
