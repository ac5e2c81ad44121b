"""What a calendar invite states: the facts whose change must raise its SEQUENCE.

RFC 5546 §2.1.4 has the organiser raise SEQUENCE whenever the start, end, location or status
of an event changes (the summary too, by common practice: Outlook and Google both do). An
invite's facts are those, plus its iTIP method. Each seat records, per invite UID, the facts
that UID last carried as canonical text (`InviteFacts.text`), so that a mail composed later can
tell whether its invite says something new.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import date, time
from functools import lru_cache
from typing import Literal

Method = Literal["REQUEST", "CANCEL"]


@dataclass(frozen=True, slots=True)
class InviteFacts:
    summary: str
    date: date
    start: time | None  # None: an all-day event
    end: time | None
    timezone: str
    venue: str
    address: str
    cancelled: bool = False  # the conference itself is cancelled

    @property
    def all_day(self) -> bool:
        return self.start is None

    def text(self, method: Method) -> str:
        """Canonical text of what an invite with these facts and `method` carries: two
        invites say the same thing exactly when their texts are equal."""
        return _text(self, method)

    def _text(self, method: Method) -> str:
        return json.dumps(
            {
                "method": method,
                "summary": self.summary,
                "date": self.date.isoformat(),
                "start": self.start.isoformat() if self.start else None,
                "end": self.end.isoformat() if self.end else None,
                "timezone": self.timezone,
                "venue": self.venue,
                "address": self.address,
                "cancelled": self.cancelled,
            },
            ensure_ascii=False,
            sort_keys=True,
            separators=(",", ":"),
        )

    @classmethod
    def from_text(cls, text: str) -> tuple[InviteFacts, Method]:
        d = json.loads(text)
        facts = cls(
            d["summary"],
            date.fromisoformat(d["date"]),
            time.fromisoformat(d["start"]) if d["start"] else None,
            time.fromisoformat(d["end"]) if d["end"] else None,
            d["timezone"],
            d["venue"],
            d["address"],
            bool(d["cancelled"]),
        )
        return facts, d["method"]


@lru_cache(maxsize=64)
def _text(facts: InviteFacts, method: Method) -> str:
    # Asked for every mail with an invite, and the same few facts every time.
    return facts._text(method)


Aspect = Literal["summary", "date", "time", "location", "status"]


@dataclass(frozen=True, slots=True)
class Change:
    """One aspect of the invite that differs: what the attendee's invite said, and what it
    says after the change."""

    aspect: Aspect
    before: InviteFacts
    after: InviteFacts


def changes(before: InviteFacts, after: InviteFacts) -> tuple[Change, ...]:
    """The aspects in which `after` differs from `before`, in the order a reader wants them."""
    differs: dict[Aspect, bool] = {
        "status": before.cancelled != after.cancelled,
        "summary": before.summary != after.summary,
        "date": before.date != after.date,
        "time": (before.start, before.end, before.timezone)
        != (after.start, after.end, after.timezone),
        "location": (before.venue, before.address) != (after.venue, after.address),
    }
    return tuple(Change(aspect, before, after) for aspect, d in differs.items() if d)
