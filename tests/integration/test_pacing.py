"""The learned send rate in Redis (store/scripts/throttle.lua, gate.lua): halved once per
burst of throttling replies, raised a little by every send, forgotten above the ceiling; and
what operators see of it (`notifier status --json`, the API's batch, /metrics)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest
import redis
import redis.asyncio

from notifier.store import keys
from notifier.store.gate import (
    FIRST_PAUSE,
    PACE_CEILING,
    PACE_START,
    PACE_STEP,
    Gate,
    Throttled,
    pacing,
)

pytestmark = pytest.mark.integration


def _run(redis_url: str, steps: Callable[[Gate], object]) -> object:
    async def go() -> object:
        client = redis.asyncio.Redis.from_url(redis_url)
        try:
            return await steps(Gate(client, 0.0))  # type: ignore[misc]
        finally:
            await client.aclose()

    return asyncio.run(go())


def test_a_burst_of_throttling_replies_halves_the_rate_once(
    redis_client: redis.Redis, redis_url: str
) -> None:
    async def burst(gate: Gate) -> list[Throttled]:
        return [await gate.throttle() for _ in range(5)]

    replies = _run(redis_url, burst)
    assert isinstance(replies, list)
    # The first sets the starting rate and a pause; those during the pause change nothing.
    assert {r.rate for r in replies} == {PACE_START}
    assert len({r.paused_until for r in replies}) == 1
    assert replies[0].pause == pytest.approx(FIRST_PAUSE, abs=0.1)
    seen = pacing(redis_client, 0.0)
    assert seen.learned == PACE_START and seen.pause_left > 0 and seen.rate == PACE_START


def test_the_pause_doubles_while_the_window_stays_closed_and_the_rate_halves(
    redis_client: redis.Redis, redis_url: str
) -> None:
    async def twice(gate: Gate) -> list[Throttled]:
        first = await gate.throttle()
        redis_client.delete(keys.PAUSE)  # the pause is over: the next send is throttled
        redis_client.hset(keys.PACE, "decreased_at", 0)  # long enough ago to halve again
        return [first, await gate.throttle()]

    replies = _run(redis_url, twice)
    assert isinstance(replies, list)
    first, second = replies
    assert second.rate == first.rate / 2
    assert second.pause == pytest.approx(2 * first.pause, abs=0.1)


def test_sends_raise_the_learned_rate_and_it_is_forgotten_above_the_ceiling(
    redis_client: redis.Redis, redis_url: str
) -> None:
    redis_client.hset(keys.PACE, "rate", 2.0)

    async def admit(gate: Gate) -> float:
        admission = await gate.admit()
        return admission.wait

    _run(redis_url, admit)
    assert float(redis_client.hget(keys.PACE, "rate") or 0) == pytest.approx(2.0 + PACE_STEP / 2)
    redis_client.hset(keys.PACE, "rate", PACE_CEILING - 0.001)
    _run(redis_url, admit)
    assert redis_client.hget(keys.PACE, "rate") is None  # unpaced again
    assert pacing(redis_client, 0.5).rate == 0.5  # the explicit cap still applies


def test_without_a_learned_rate_or_cap_the_gate_asks_redis_rarely(redis_url: str) -> None:
    """Pacing costs nothing when the relay has no quota: one round trip per `recheck`."""

    async def many(gate: Gate) -> int:
        calls = 0
        real = gate._gate

        async def counted(**kwargs: Any) -> Any:
            nonlocal calls
            calls += 1
            return await real(**kwargs)

        gate._gate = counted  # type: ignore[assignment]
        for _ in range(100):
            await gate.admit()
        return calls

    assert _run(redis_url, many) == 1
