"""Scheduled reminders: which configured reminder rules are due at a given time. Pure.

A rule ("7 days before at 9.00 Copenhagen time") is due from its due time until a day later
or the end of the conference, whichever comes first. Its batch id is derived from the rule,
so it fires once however often beat asks; its cutoff is the due time, so someone who
registers after it does not get that reminder retroactively (pretix #3757).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from notifier.domain.conference import Conference, ReminderRule

CATCH_UP = timedelta(days=1)


@dataclass(frozen=True, slots=True)
class DueReminder:
    conference: str
    rule: str
    due_at: datetime

    @property
    def batch_id(self) -> str:
        return f"scheduled-{self.rule}"

    def event(self) -> dict[str, Any]:
        """The reminder.requested event for this rule; its occurred_at is the due time."""
        return {
            "id": f"schedule:{self.conference}:{self.rule}",
            "type": "reminder.requested",
            "occurred_at": self.due_at.isoformat(),
            "conference": self.conference,
            "batch": {"id": self.batch_id},
        }


def due_time(conf: Conference, rule: ReminderRule) -> datetime:
    day = conf.date - timedelta(days=rule.days_before)
    return datetime.combine(day, rule.at, tzinfo=conf.tz)


def due_reminders(conferences: Iterable[Conference], now: datetime) -> list[DueReminder]:
    """Every rule whose time has come and not yet gone, at `now` (timezone-aware)."""
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    found = []
    for conf in conferences:
        for rule in conf.reminders:
            at = due_time(conf, rule)
            if at <= now < min(at + CATCH_UP, conf.ends_at):
                found.append(DueReminder(conf.slug, rule.id, at))
    return found
