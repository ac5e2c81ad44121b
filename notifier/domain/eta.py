"""When a batch will be done: from the rate it is sent at and a pause it is in. Pure."""

from __future__ import annotations


def eta_seconds(
    remaining: int, rate: float | None, pause_left: float, observed: float | None
) -> float | None:
    """Seconds until `remaining` messages are sent: at `rate` (the explicit cap or the rate
    learned from the relay, messages/s) after the pause, or, when no rate applies, at the
    rate the batch has been sent at so far (`observed`). None when nothing tells."""
    if remaining <= 0:
        return 0.0
    per_second = rate or observed
    if not per_second:
        return None
    return max(0.0, pause_left) + remaining / per_second
