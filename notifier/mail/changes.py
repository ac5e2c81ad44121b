"""What changed in an attendee's invite, in Danish: "Tid: ikke meldt ud → kl. 9.00–16.00"."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from zoneinfo import ZoneInfo

from notifier.domain.facts import Aspect, Change, InviteFacts, changes
from notifier.mail import danish

LABELS: dict[Aspect, str] = {
    "status": "Status",
    "summary": "Titel",
    "date": "Dato",
    "time": "Tid",
    "location": "Sted",
}


@dataclass(frozen=True, slots=True)
class Line:
    """One changed aspect as the mail shows it (`aspect` lets a template pick its wording)."""

    aspect: Aspect
    label: str
    before: str
    after: str


def describe(changed_from: str | None, current: InviteFacts) -> tuple[Line, ...]:
    """The lines for what the invite carried (`InviteFacts.text`, or None) against `current`,
    in the order a reader wants them (see `notifier.domain.facts.changes`)."""
    if not changed_from:  # nothing carried, or a REQUEST that was withheld
        return ()
    before, _method = InviteFacts.from_text(changed_from)
    return tuple(_line(change) for change in changes(before, current))


def _line(change: Change) -> Line:
    before = _value(change.aspect, change.before)
    after = _value(change.aspect, change.after)
    if before == after:
        # Only the time zone differs: without it the line would claim a change it does not show.
        before = f"{before} ({change.before.timezone})"
        after = f"{after} ({change.after.timezone})"
    return Line(change.aspect, LABELS[change.aspect], before, after)


def _value(aspect: Aspect, facts: InviteFacts) -> str:
    if aspect == "status":
        return "aflyst" if facts.cancelled else "gennemføres"
    if aspect == "summary":
        return facts.summary
    if aspect == "date":
        return danish.long_date(facts.date)
    if aspect == "time":
        return time_text(facts)
    return f"{facts.venue}, {facts.address}"


# An invite without times is all-day because no time was announced, not because the
# conference lasts all day: the line says so, before or after the change.
NO_TIME = "ikke meldt ud"


def time_text(facts: InviteFacts) -> str:
    """'ikke meldt ud' (no time announced) or 'kl. 9.00–16.00'."""
    if facts.start is None or facts.end is None:
        return NO_TIME
    zone = ZoneInfo(facts.timezone)
    start = datetime.combine(facts.date, facts.start, tzinfo=zone)
    return danish.clock_range(start, datetime.combine(facts.date, facts.end, tzinfo=zone))
