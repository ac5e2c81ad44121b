"""Danish dates, times and amounts (Dansk Sprognævn style), from aware datetimes only."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, date, datetime
from zoneinfo import ZoneInfo

import pytest

from notifier.mail import danish

CPH = ZoneInfo("Europe/Copenhagen")
NBSP = "\u00a0"


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (date(2024, 4, 22), "mandag den 22. april 2024"),
        (date(2024, 1, 1), "mandag den 1. januar 2024"),
        (date(2024, 12, 24), "tirsdag den 24. december 2024"),
        (date(2025, 8, 30), "lørdag den 30. august 2025"),
        (datetime(2024, 4, 22, 9, 0, tzinfo=CPH), "mandag den 22. april 2024"),
    ],
)
def test_long_date(value: date, expected: str) -> None:
    assert danish.long_date(value) == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (datetime(2024, 4, 22, 9, 0, tzinfo=CPH), f"kl.{NBSP}9.00"),
        (datetime(2024, 4, 22, 16, 30, tzinfo=CPH), f"kl.{NBSP}16.30"),
        (datetime(2024, 4, 22, 0, 5, tzinfo=CPH), f"kl.{NBSP}0.05"),
        # Formatted in the value's own zone, never re-interpreted as UTC.
        (datetime(2024, 4, 22, 7, 0, tzinfo=UTC), f"kl.{NBSP}7.00"),
    ],
)
def test_clock(value: datetime, expected: str) -> None:
    assert danish.clock(value) == expected


@pytest.mark.parametrize(
    ("utc", "expected"),
    [
        (datetime(2024, 3, 31, 0, 30, tzinfo=UTC), f"kl.{NBSP}1.30"),  # before spring forward
        (datetime(2024, 3, 31, 1, 30, tzinfo=UTC), f"kl.{NBSP}3.30"),  # CEST, 2.xx skipped
        (datetime(2024, 10, 27, 0, 30, tzinfo=UTC), f"kl.{NBSP}2.30"),  # first 2.30 (CEST)
        (datetime(2024, 10, 27, 1, 30, tzinfo=UTC), f"kl.{NBSP}2.30"),  # second 2.30 (CET)
        (datetime(2024, 10, 27, 2, 30, tzinfo=UTC), f"kl.{NBSP}3.30"),
    ],
)
def test_clock_across_dst_changes(utc: datetime, expected: str) -> None:
    assert danish.clock(utc.astimezone(CPH)) == expected


def test_clock_range_uses_an_en_dash() -> None:
    start = datetime(2024, 4, 22, 9, 0, tzinfo=CPH)
    end = datetime(2024, 4, 22, 16, 0, tzinfo=CPH)
    assert danish.clock_range(start, end) == f"kl.{NBSP}9.00–16.00"


@pytest.mark.parametrize(
    "call",
    [
        lambda naive: danish.clock(naive),
        lambda naive: danish.long_date(naive),
        lambda naive: danish.clock_range(naive, naive),
        lambda naive: danish.clock_range(datetime(2024, 4, 22, 9, tzinfo=CPH), naive),
    ],
    ids=["clock", "long_date", "clock_range-start", "clock_range-end"],
)
def test_naive_datetime_is_refused(call: Callable[[datetime], object]) -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        call(datetime(2024, 4, 22, 9, 0))


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (2575, f"2.575{NBSP}kr."),
        (0, f"0{NBSP}kr."),
        (950, f"950{NBSP}kr."),
        (1234567, f"1.234.567{NBSP}kr."),
    ],
)
def test_amount_has_thousands_point_no_ore_and_nbsp(value: int, expected: str) -> None:
    assert danish.amount(value) == expected


def test_number() -> None:
    assert danish.number(2575) == "2.575"


@pytest.mark.parametrize(
    ("text", "expected"),
    [("mandag den 22. april 2024", "Mandag den 22. april 2024"), ("ærø", "Ærø"), ("", "")],
)
def test_capitalise_only_touches_the_first_letter(text: str, expected: str) -> None:
    assert danish.capitalise(text) == expected
