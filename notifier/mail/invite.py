"""Calendar invites (RFC 5545 objects carried by iTIP, RFC 5546): REQUEST and CANCEL.

One VEVENT per attendee and registration. The UID is derived (see notice.invite_uid) and
SEQUENCE rises with every change sent to that UID, so calendar clients apply a cancellation
or a renewed invite to the entry they already have instead of adding a second one.
"""

from __future__ import annotations

from bisect import bisect_left
from calendar import monthrange
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from functools import lru_cache
from typing import TypeVar
from zoneinfo import ZoneInfo

from icalendar import (
    Calendar,
    Event,
    Timezone,
    TimezoneDaylight,
    TimezoneStandard,
    vCalAddress,
    vText,
)
from icalendar.parser import param_value

from notifier.domain.conference import Conference
from notifier.domain.notice import InviteSpec, Person

PRODID = "-//notifier//Danish conference mail 0.1//DA"


# The VTIMEZONE is written as Outlook and Google export a zone: its current rules, as one
# STANDARD and one DAYLIGHT observance repeating yearly. MS-OXCICAL 2.1.3.1.1.19.2 says one
# STANDARD component SHOULD be exported and an importer MAY reject others, so a list of dated
# transitions (several STANDARDs, RDATEs) puts the invite at risk. The rules are those the tz
# database gives the event's year: the event happens in that year, so their transitions are
# the ones that place it right, whatever the zone did before or does later.
_WEEKDAYS = ("MO", "TU", "WE", "TH", "FR", "SA", "SU")
# RFC 5545 has DTSTART be the first occurrence of the RRULE; Google's exports start in 1970.
_RULES_FROM = 1970
_ZERO = timedelta(0)
_DAY = timedelta(days=1)
_Observance = TypeVar("_Observance", TimezoneStandard, TimezoneDaylight)


@dataclass(frozen=True)
class _Shift:
    """One change of a zone's UTC offset."""

    wall: datetime  # naive local time of the change, read on the clock before it
    before: timedelta
    after: timedelta
    name: str  # the zone's abbreviation after the change


def vtimezone(start: datetime) -> Timezone:
    """The VTIMEZONE for an event starting at `start` (aware, in a ZoneInfo zone).

    A zone that moves to summer time and back in the event's year gets one STANDARD and one
    DAYLIGHT observance, each repeating yearly on the weekday rule that year shows; any other
    zone gets a single STANDARD with the event's offset and no RRULE.
    """
    zone = start.tzinfo
    if not isinstance(zone, ZoneInfo):
        raise TypeError(f"the start of an event needs a ZoneInfo zone, not {zone!r}")
    component = Timezone()
    component.add("tzid", zone.key)
    pair = _yearly_pair(_shifts(zone, start.year))
    if pair is None:
        component.add_component(_fixed(start))
    else:
        back, forth = pair
        component.add_component(_observance(TimezoneStandard(), back))
        component.add_component(_observance(TimezoneDaylight(), forth))
    return component


def _offset(zone: ZoneInfo, moment: datetime) -> timedelta:
    return moment.astimezone(zone).utcoffset() or _ZERO  # never None in a ZoneInfo zone


def _shifts(zone: ZoneInfo, year: int) -> tuple[_Shift, ...]:
    """The zone's offset changes during `year` (in UTC), found a day at a time and then to
    the second: zoneinfo does not hand out its transitions, only offsets (looked up in the
    tz database, not the clock). No zone changes twice in a day in modern times."""
    first = datetime(year, 1, 1, tzinfo=UTC)
    days = (date(year + 1, 1, 1) - date(year, 1, 1)).days
    midnights = (first + day * _DAY for day in range(days))
    return tuple(
        _shift(zone, midnight)
        for midnight in midnights
        if _offset(zone, midnight) != _offset(zone, midnight + _DAY)
    )


def _shift(zone: ZoneInfo, midnight: datetime) -> _Shift:
    """The change during the UTC day from `midnight`."""
    before = _offset(zone, midnight)
    seconds = range(1, 86_401)

    def changed(second: int) -> bool:
        return _offset(zone, midnight + timedelta(seconds=second)) != before

    moment = midnight + timedelta(seconds=seconds[bisect_left(seconds, True, key=changed)])
    return _Shift(
        wall=(moment + before).replace(tzinfo=None),
        before=before,
        after=_offset(zone, moment),
        name=moment.astimezone(zone).tzname() or "",
    )


def _yearly_pair(shifts: tuple[_Shift, ...]) -> tuple[_Shift, _Shift] | None:
    """The year's change back to standard time and forth to summer time, if they are all it
    has. A year with other changes (a zone adopting or dropping summer time, or changing
    its offset) is not described by two yearly rules."""
    if len(shifts) != 2:
        return None
    back, forth = sorted(shifts, key=lambda shift: shift.after > shift.before)
    if forth.after <= forth.before or (back.before, back.after) != (forth.after, forth.before):
        return None
    return back, forth


def _observance(observance: _Observance, shift: _Shift) -> _Observance:
    day = shift.wall.date()
    # A day in the month's last week is read as "the last": the tz database's rules there
    # (lastSun, as in the EU) outnumber the "fourth", which one year cannot tell apart.
    nth = -1 if (day + timedelta(weeks=1)).month != day.month else (day.day + 6) // 7
    first = _nth_weekday(_RULES_FROM, day.month, day.weekday(), nth)
    observance.add("dtstart", datetime.combine(first, shift.wall.time()))
    observance.add("tzoffsetfrom", shift.before)
    observance.add("tzoffsetto", shift.after)
    observance.add("tzname", shift.name)
    byday = f"{nth}{_WEEKDAYS[day.weekday()]}"
    observance.add("rrule", {"freq": "yearly", "bymonth": day.month, "byday": byday})
    return observance


def _nth_weekday(year: int, month: int, weekday: int, nth: int) -> date:
    """The nth `weekday` (0 is Monday) of the month, or its last for nth -1."""
    if nth > 0:
        first = date(year, month, 1)
        return first + timedelta(days=(weekday - first.weekday()) % 7, weeks=nth - 1)
    last = date(year, month, monthrange(year, month)[1])
    return last - timedelta(days=(last.weekday() - weekday) % 7)


def _fixed(start: datetime) -> TimezoneStandard:
    """One STANDARD observance with the offset in force at `start`, for all time."""
    offset = start.utcoffset() or _ZERO
    observance = TimezoneStandard()
    observance.add("dtstart", datetime(_RULES_FROM, 1, 1))
    observance.add("tzoffsetfrom", offset)
    observance.add("tzoffsetto", offset)
    observance.add("tzname", start.tzname() or "")
    return observance


def _named(address: str, name: str) -> vCalAddress:
    cal_address = vCalAddress(f"mailto:{address}")
    cal_address.params["CN"] = vText(name)
    # A name ending in a backslash would otherwise be written bare, and readers take "\;"
    # as an escape: the CN would swallow the next parameter. Quoted, it cannot.
    quote_also = cal_address.params.quote_also
    cal_address.params.quote_also = {**quote_also, "CN": quote_also.get("CN", "") + "\\"}
    return cal_address


def _organizer(conference: Conference) -> vCalAddress:
    return _named(str(conference.organiser.email), conference.organiser.name)


def _timing(event: Event, conference: Conference) -> None:
    if conference.all_day:
        event.add("dtstart", conference.date)
        event.add("dtend", conference.date + timedelta(days=1))
        event.add("x-microsoft-cdo-alldayevent", "TRUE")
    else:
        event.add("dtstart", conference.starts_at)
        event.add("dtend", conference.ends_at)


def build_invite(
    conference: Conference,
    spec: InviteSpec,
    attendee: Person,
    *,
    now: datetime,
    description: str,
) -> bytes:
    """The iCalendar object for one attendee, as bytes (CRLF lines, folded, UTF-8).

    `now` becomes DTSTAMP; nothing here reads the clock.
    """
    head, tail = _shared(conference, spec.method, description)
    # Only the recipient's four properties are written per mail; the rest of the calendar,
    # VTIMEZONE included, is the same for every mail of a conference. They are the lines
    # icalendar writes (tests compare the two for any name), without building its objects,
    # which were a large share of composing a mail.
    lines = [
        f"UID:{vText(spec.uid).to_ical().decode('utf-8')}",
        f"SEQUENCE:{spec.sequence:d}",
        f"DTSTAMP:{_utc_stamp(now)}",
        attendee_line(attendee),
    ]
    return head + b"".join(fold(line) + b"\r\n" for line in lines) + tail


def _utc_stamp(moment: datetime) -> str:
    t = moment.astimezone(UTC)  # strftime's %Y would not pad a year before 1000
    return f"{t.year:04d}{t.month:02d}{t.day:02d}T{t.hour:02d}{t.minute:02d}{t.second:02d}Z"


# The recipient's ATTENDEE parameters after CN, in icalendar's (sorted) order. No RSVP: the
# registration is already binding, and replies would flood the organiser (the reason pretix
# left ORGANIZER out altogether).
_ATTENDEE_TAIL = ";CUTYPE=INDIVIDUAL;PARTSTAT=NEEDS-ACTION;ROLE=REQ-PARTICIPANT;RSVP=FALSE"
_QUOTE_CN = " '\\"  # icalendar quotes a CN with a space or apostrophe; _named adds backslash


def attendee_line(person: Person) -> str:
    """The ATTENDEE content line (unfolded) icalendar writes for the person as a
    `vCalAddress` from `_named` with these parameters (compared in the tests)."""
    cn = param_value(person.name, always_quote=any(c in person.name for c in _QUOTE_CN))
    return f"ATTENDEE;CN={cn}{_ATTENDEE_TAIL}:mailto:{person.email}"


_ESCAPES = frozenset(b"\\^")


def fold(line: str) -> bytes:
    """A content line folded exactly as icalendar folds it (RFC 5545 3.1): pieces of at most
    74 octets, never inside a UTF-8 sequence, and never right after a backslash or caret,
    so that an escape stays whole. icalendar's own folding looks at every character and
    was a large share of composing a mail."""
    data = line.encode("utf-8")
    if len(data) < 75:
        return data
    pieces = []
    start = 0
    while len(data) - start > 74:
        cut = start + 74
        while data[cut] & 0xC0 == 0x80:  # a UTF-8 continuation byte: cut before its character
            cut -= 1
        if data[cut - 1] in _ESCAPES:
            cut -= 1
        pieces.append(data[start:cut])
        start = cut
    pieces.append(data[start:])
    return b"\r\n ".join(pieces)


_END = b"END:VEVENT\r\n"


@lru_cache(maxsize=64)
def _shared(conference: Conference, method: str, description: str) -> tuple[bytes, bytes]:
    """What every invite of a conference and method shares: before and after the
    recipient's properties, split inside the VEVENT."""
    cal = Calendar()
    cal.add("prodid", PRODID)
    cal.add("version", "2.0")
    cal.add("calscale", "GREGORIAN")
    cal.add("method", method)
    if not conference.all_day:
        cal.add_component(vtimezone(conference.starts_at))
    event = Event()
    _timing(event, conference)
    event.add("summary", conference.title)
    event.add("location", conference.venue.location)
    event.add("description", description)
    event.add("organizer", _organizer(conference))
    event.add("status", "CONFIRMED" if method == "REQUEST" else "CANCELLED")
    event.add("transp", "OPAQUE")
    event.add("class", "PUBLIC")
    cal.add_component(event)
    whole = bytes(cal.to_ical())
    cut = whole.index(_END)
    return whole[:cut], whole[cut:]
