"""Backoff: exponential from the base, capped, and with equal jitter in [delay/2, delay)."""

from __future__ import annotations

import pytest

from notifier.domain.retry import backoff


@pytest.mark.parametrize(
    ("attempt", "expected"),
    [(1, 30), (2, 60), (3, 120), (4, 240), (5, 480), (6, 960), (7, 1800), (8, 1800), (30, 1800)],
)
def test_without_jitter_doubles_from_base_and_caps(attempt: int, expected: float) -> None:
    assert backoff(attempt, base=30, cap=1800) == expected


@pytest.mark.parametrize("attempt", [1, 2, 3, 6, 7, 12])
@pytest.mark.parametrize("r", [0.0, 0.25, 0.5, 0.999999])
def test_jitter_stays_within_half_and_full_delay(attempt: int, r: float) -> None:
    delay = backoff(attempt, base=30, cap=1800)
    jittered = backoff(attempt, base=30, cap=1800, rand=lambda: r)
    assert delay / 2 <= jittered < delay


def test_jitter_uses_the_random_value() -> None:
    low = backoff(3, base=30, cap=1800, rand=lambda: 0.0)
    high = backoff(3, base=30, cap=1800, rand=lambda: 0.5)
    assert (low, high) == (60, 90)


def test_huge_attempt_numbers_stay_at_the_cap() -> None:
    assert backoff(10_000, base=30, cap=1800) == 1800
