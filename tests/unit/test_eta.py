"""A batch's ETA from the rate the senders go by, a pause, or its own progress so far."""

from __future__ import annotations

import pytest

from notifier.domain.eta import eta_seconds


@pytest.mark.parametrize(
    ("remaining", "rate", "pause", "observed", "expected"),
    [
        (0, None, 0.0, None, 0.0),  # nothing left
        (100, 2.0, 0.0, 50.0, 50.0),  # a rate applies: it wins over the progress so far
        (100, 2.0, 30.0, None, 80.0),  # after the pause every sender is in
        (100, None, 0.0, 20.0, 5.0),  # unpaced: as fast as it has gone
        (100, None, 0.0, None, None),  # nothing tells
    ],
)
def test_eta(
    remaining: int, rate: float | None, pause: float, observed: float | None, expected: float | None
) -> None:
    assert eta_seconds(remaining, rate, pause, observed) == expected
