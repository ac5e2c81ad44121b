"""Scheduled reminder rules at their edges (time passed in, nothing waits)."""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from notifier.domain.conference import Conference, ReminderRule
from notifier.domain.schedule import due_reminders, due_time
from notifier.loading import Conferences

CPH = ZoneInfo("Europe/Copenhagen")
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def conf() -> Conference:
    return Conferences(ROOT / "conferences").get("digitaliseringstraef-2024")


def test_shipped_rules_are_seven_days_and_one_day_before_at_nine(conf: Conference) -> None:
    assert [due_time(conf, r) for r in conf.reminders] == [
        datetime(2024, 4, 15, 9, 0, tzinfo=CPH),
        datetime(2024, 4, 21, 9, 0, tzinfo=CPH),
    ]


@pytest.mark.parametrize(
    ("now", "due"),
    [
        (datetime(2024, 4, 15, 8, 59, 59, tzinfo=CPH), []),
        (datetime(2024, 4, 15, 9, 0, tzinfo=CPH), ["7-days"]),
        (datetime(2024, 4, 15, 7, 0, tzinfo=UTC), ["7-days"]),  # 9.00 CEST is 7.00 UTC
        (datetime(2024, 4, 16, 8, 59, tzinfo=CPH), ["7-days"]),
        (datetime(2024, 4, 16, 9, 0, tzinfo=CPH), []),  # a day late: missed, not sent
        (datetime(2024, 4, 21, 9, 0, tzinfo=CPH), ["1-day"]),
        (datetime(2024, 4, 22, 8, 0, tzinfo=CPH), ["1-day"]),
        (datetime(2024, 4, 23, 0, 0, tzinfo=CPH), []),  # the conference is over
    ],
)
def test_rules_are_due_in_their_window(conf: Conference, now: datetime, due: list[str]) -> None:
    assert [d.rule for d in due_reminders([conf], now)] == due


def test_the_window_ends_with_the_conference(conf: Conference) -> None:
    timed = conf.model_copy(
        update={
            "start_time": time(9),
            "end_time": time(16),
            "reminders": (ReminderRule(id="same-day", days_before=0, at=time(15, 30)),),
        }
    )
    at = datetime(2024, 4, 22, 15, 30, tzinfo=CPH)
    assert [d.rule for d in due_reminders([timed], at)] == ["same-day"]
    assert due_reminders([timed], at + timedelta(minutes=30)) == []


def test_the_event_is_derived_from_the_rule(conf: Conference) -> None:
    [due] = due_reminders([conf], datetime(2024, 4, 15, 10, 0, tzinfo=CPH))
    event = due.event()
    assert event == due_reminders([conf], datetime(2024, 4, 15, 11, 0, tzinfo=CPH))[0].event()
    assert event["batch"] == {"id": "scheduled-7-days"}
    assert event["occurred_at"] == "2024-04-15T09:00:00+02:00"


def test_naive_now_is_refused(conf: Conference) -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        due_reminders([conf], datetime(2024, 4, 15, 10, 0))
