"""Backoff for temporary delivery failures: jittered, exponential, capped. Pure."""

from __future__ import annotations

from collections.abc import Callable


def backoff(
    attempt: int, *, base: float, cap: float, rand: Callable[[], float] | None = None
) -> float:
    """Seconds to wait after failed attempt number `attempt` (1-based).

    "Equal jitter": half the exponential delay is fixed, half random, so retries spread out
    (no retry storms against a relay that just came back) but never come back at once.
    """
    # The exponent is bounded so that huge attempt numbers cannot overflow a float.
    delay = min(cap, base * 2.0 ** min(max(0, attempt - 1), 62))
    if rand is None:
        return delay
    return delay / 2 + rand() * delay / 2
