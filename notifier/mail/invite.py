"""Calendar invites (RFC 5545 objects carried by iTIP, RFC 5546): REQUEST and CANCEL.

One VEVENT per attendee and registration. The UID is derived (see notice.invite_uid) and
SEQUENCE rises with every change sent to that UID, so calendar clients apply a cancellation
or a renewed invite to the entry they already have instead of adding a second one.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from functools import lru_cache

from icalendar import Calendar, Event, Timezone, vCalAddress, vText
from icalendar.parser import param_value

from notifier.domain.conference import Conference
from notifier.domain.notice import InviteSpec, Person

PRODID = "-//notifier//Danish conference mail 0.1//DA"


@lru_cache(maxsize=32)
def vtimezone(tzid: str, year: int) -> Timezone:
    """The VTIMEZONE for a conference year, built once per process (it is slow to build)."""
    return Timezone.from_tzid(tzid, first_date=date(year - 1, 1, 1), last_date=date(year + 1, 1, 1))


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
    # and the VTIMEZONE, which is slow to build, is the same for every mail of a
    # conference. They are the lines icalendar writes (tests compare the two for any name),
    # without building its objects, which were a large share of composing a mail.
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
        cal.add_component(vtimezone(conference.timezone, conference.date.year))
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
