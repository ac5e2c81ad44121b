"""Calendar invites: derived UIDs, iTIP METHOD/SEQUENCE/STATUS, all-day and timed, golden .ics.

Each invite is parsed back with icalendar and, where installed, with vobject as a second,
independent parser.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from icalendar import Calendar, Parameters, vDDDTypes, vInt, vText
from icalendar.parser import Contentline
from icalendar.parser.string import _foldline

from notifier.domain.conference import Conference
from notifier.domain.notice import InviteSpec, Kind, Person, invite_uid
from notifier.mail.invite import _named, build_invite, fold
from notifier.mail.render import Renderer, conference_facts, notice_context
from notifier.mail.samples import SAMPLE_NOW, sample_notice
from tests.unit.support import SLUG, Golden

CPH = ZoneInfo("Europe/Copenhagen")
LOCATION = "Scandic Falkoner, Falkoner Allé 9, 2000 Frederiksberg"


def invite(renderer: Renderer, conf: Conference, kind: Kind, now: datetime = SAMPLE_NOW) -> bytes:
    notice = sample_notice(kind, conf)
    assert notice.invite is not None
    text = renderer.render(
        kind.value, notice_context(notice, conference_facts(conf), conf.tz)
    ).invite_text
    return build_invite(conf, notice.invite, notice.recipient, now=now, description=text)


def vevent(data: bytes) -> Any:
    events = Calendar.from_ical(data).walk("VEVENT")
    assert len(events) == 1
    return events[0]


def test_uid_is_derived_and_stable() -> None:
    uid = invite_uid(SLUG, "REG-1001", "mette.sorensen@aarhus.dk", "kl.dk")
    assert uid == invite_uid(SLUG, "REG-1001", "mette.sorensen@aarhus.dk", "kl.dk")
    assert uid == invite_uid(SLUG, "REG-1001", "Mette.Sorensen@Aarhus.DK", "kl.dk")
    assert uid.endswith("@kl.dk")


@pytest.mark.parametrize(
    "other",
    [
        ("kommunaldag-2025", "REG-1001", "mette.sorensen@aarhus.dk"),
        (SLUG, "REG-1002", "mette.sorensen@aarhus.dk"),
        (SLUG, "REG-1001", "jens.odegaard@aarhus.dk"),
    ],
    ids=["conference", "registration", "attendee"],
)
def test_uid_differs_per_conference_registration_and_attendee(other: tuple[str, str, str]) -> None:
    base = invite_uid(SLUG, "REG-1001", "mette.sorensen@aarhus.dk", "kl.dk")
    assert invite_uid(*other, "kl.dk") != base


def test_same_inputs_give_the_same_bytes(renderer: Renderer, conference: Conference) -> None:
    assert invite(renderer, conference, Kind.CONFIRMATION) == invite(
        renderer, conference, Kind.CONFIRMATION
    )


@pytest.mark.parametrize(
    ("name", "kind", "timed"),
    [
        ("invite-confirmation.ics", Kind.CONFIRMATION, False),
        ("invite-confirmation-timed.ics", Kind.CONFIRMATION, True),
        ("invite-substitution_out.ics", Kind.SUBSTITUTION_OUT, False),
    ],
)
def test_golden(
    renderer: Renderer,
    conference: Conference,
    timed_conference: Conference,
    golden: Golden,
    name: str,
    kind: Kind,
    timed: bool,
) -> None:
    golden.check(name, invite(renderer, timed_conference if timed else conference, kind))


@pytest.mark.parametrize(
    ("kind", "method", "sequence", "status"),
    [
        (Kind.CONFIRMATION, "REQUEST", 0, "CONFIRMED"),
        (Kind.SUBSTITUTION_IN, "REQUEST", 0, "CONFIRMED"),
        (Kind.SUBSTITUTION_OUT, "CANCEL", 1, "CANCELLED"),
        (Kind.CANCELLATION, "CANCEL", 1, "CANCELLED"),
    ],
)
def test_method_sequence_status(
    renderer: Renderer,
    conference: Conference,
    kind: Kind,
    method: str,
    sequence: int,
    status: str,
) -> None:
    data = invite(renderer, conference, kind)
    notice = sample_notice(kind, conference)
    assert notice.invite is not None
    event = vevent(data)
    assert Calendar.from_ical(data)["METHOD"] == method
    assert event["SEQUENCE"] == sequence
    assert event["STATUS"] == status
    assert event["UID"] == notice.invite.uid


def test_dtstamp_is_the_given_now_in_utc(renderer: Renderer, conference: Conference) -> None:
    now = datetime(2024, 2, 14, 10, 2, 11, tzinfo=CPH)  # 09:02:11 UTC
    data = invite(renderer, conference, Kind.CONFIRMATION, now=now)
    assert b"\r\nDTSTAMP:20240214T090211Z\r\n" in data
    assert vevent(data)["DTSTAMP"].dt == now


def test_all_day_event(renderer: Renderer, conference: Conference) -> None:
    data = invite(renderer, conference, Kind.CONFIRMATION)
    assert b"\r\nDTSTART;VALUE=DATE:20240422\r\n" in data
    assert b"\r\nDTEND;VALUE=DATE:20240423\r\n" in data
    assert b"VTIMEZONE" not in data
    event = vevent(data)
    assert event["DTSTART"].dt == date(2024, 4, 22)
    assert event["DTEND"].dt == date(2024, 4, 23)


def test_timed_event_carries_its_timezone(renderer: Renderer, timed_conference: Conference) -> None:
    data = invite(renderer, timed_conference, Kind.CONFIRMATION)
    assert b"\r\nDTSTART;TZID=Europe/Copenhagen:20240422T090000\r\n" in data
    assert b"\r\nDTEND;TZID=Europe/Copenhagen:20240422T160000\r\n" in data
    zones = Calendar.from_ical(data).walk("VTIMEZONE")
    assert [str(z["TZID"]) for z in zones] == ["Europe/Copenhagen"]
    start = vevent(data)["DTSTART"].dt
    assert start == datetime(2024, 4, 22, 7, 0, tzinfo=UTC)
    assert start.utcoffset() == timedelta(hours=2)


@pytest.mark.parametrize("kind", [Kind.CONFIRMATION, Kind.SUBSTITUTION_IN, Kind.SUBSTITUTION_OUT])
def test_only_the_recipient_attends_and_kl_organises(
    renderer: Renderer, conference: Conference, kind: Kind
) -> None:
    data = invite(renderer, conference, kind)
    recipient = sample_notice(kind, conference).recipient
    assert data.count(b"\r\nATTENDEE") == 1
    event = vevent(data)
    attendee = event["ATTENDEE"]
    assert str(attendee) == f"mailto:{recipient.email}"
    assert attendee.params["CN"] == recipient.name
    assert str(event["ORGANIZER"]) == "mailto:arrangementsinfo@kl.dk"
    assert event["ORGANIZER"].params["CN"] == "KL"
    assert b"\r\nORGANIZER;CN=KL:mailto:arrangementsinfo@kl.dk\r\n" in data


def test_location_summary_and_description(renderer: Renderer, conference: Conference) -> None:
    data = invite(renderer, conference, Kind.CONFIRMATION)
    assert (
        b"\r\nLOCATION:Scandic Falkoner\\, Falkoner All\xc3\xa9 9\\, 2000 Frederiksberg\r\n" in data
    )
    event = vevent(data)
    assert event["LOCATION"] == LOCATION
    assert event["SUMMARY"] == "Kommunernes Digitaliseringstræf '24"
    assert "Mandag den 22. april 2024" in event["DESCRIPTION"]
    # The same for every attendee: calendars get shared, so nothing personal is in it
    assert "REG-1001" not in event["DESCRIPTION"]


@pytest.mark.parametrize("timed", [False, True], ids=["all-day", "timed"])
def test_lines_are_crlf_and_folded_at_75_octets(
    renderer: Renderer, conference: Conference, timed_conference: Conference, timed: bool
) -> None:
    data = invite(renderer, timed_conference if timed else conference, Kind.SUBSTITUTION_IN)
    assert data.endswith(b"\r\n")
    assert b"\n" not in data.replace(b"\r\n", b"")
    assert max(len(line) for line in data.split(b"\r\n")) <= 75


@pytest.mark.parametrize("timed", [False, True], ids=["all-day", "timed"])
def test_vobject_reads_the_same_invite(
    renderer: Renderer, conference: Conference, timed_conference: Conference, timed: bool
) -> None:
    vobject = pytest.importorskip("vobject")
    conf = timed_conference if timed else conference
    cal = vobject.readOne(invite(renderer, conf, Kind.CONFIRMATION).decode("utf-8"))
    event = cal.vevent
    assert cal.method.value == "REQUEST"
    assert event.uid.value == invite_uid(SLUG, "REG-1001", "mette.sorensen@aarhus.dk", "kl.dk")
    assert event.sequence.value == "0"
    assert event.location.value == LOCATION
    assert event.dtstamp.value == SAMPLE_NOW
    assert [a.value for a in event.contents["attendee"]] == ["mailto:mette.sorensen@aarhus.dk"]
    assert event.organizer.params["CN"] == ["KL"]
    if timed:
        assert event.dtstart.value == datetime(2024, 4, 22, 9, 0, tzinfo=CPH)
        assert event.dtstart.value.utcoffset() == timedelta(hours=2)
        assert event.dtend.value == datetime(2024, 4, 22, 16, 0, tzinfo=CPH)
    else:
        assert (event.dtstart.value, event.dtend.value) == (date(2024, 4, 22), date(2024, 4, 23))


LINE_CHARS = st.characters(blacklist_characters="\r\n", blacklist_categories=["Cs"])


@settings(max_examples=500, deadline=None)
@given(st.text(LINE_CHARS | st.sampled_from("\\^;,æ€𝄞"), max_size=400))
def test_folding_is_icalendars(line: str) -> None:
    assert fold(line) == _foldline(line).encode("utf-8")


def icalendar_lines(spec: InviteSpec, person: Person, now: datetime) -> list[str]:
    """The recipient's four lines as icalendar's objects write them (what the fast path
    must reproduce)."""
    att = _named(person.email, person.name)
    for name, value in (
        ("CUTYPE", "INDIVIDUAL"),
        ("ROLE", "REQ-PARTICIPANT"),
        ("PARTSTAT", "NEEDS-ACTION"),
        ("RSVP", "FALSE"),
    ):
        att.params[name] = value
    return [
        str(Contentline.from_parts("UID", Parameters(), vText(spec.uid))),
        str(Contentline.from_parts("SEQUENCE", Parameters(), vInt(spec.sequence))),
        str(Contentline.from_parts("DTSTAMP", Parameters(), vDDDTypes(now.astimezone(UTC)))),
        str(Contentline.from_parts("ATTENDEE", att.params, att)),
    ]


NAME_CHARS = st.characters(blacklist_categories=["Cs"]) | st.sampled_from(" '\\^\";:,\n")


@settings(max_examples=400, deadline=None)
@given(
    name=st.text(NAME_CHARS, min_size=1, max_size=60),
    email=st.emails(),
    uid=st.text(NAME_CHARS, min_size=1, max_size=60),
    sequence=st.integers(0, 10_000),
    now=st.datetimes(timezones=st.just(UTC)),
)
def test_recipient_lines_are_icalendars(
    conference: Conference, name: str, email: str, uid: str, sequence: int, now: datetime
) -> None:
    spec, person = InviteSpec("REQUEST", uid, sequence), Person(name, email)
    ics = build_invite(conference, spec, person, now=now, description="d").decode("utf-8")
    expected = "".join(f"{line}\r\n" for line in icalendar_lines(spec, person, now))
    unfolded = ics.replace("\r\n ", "")
    assert expected.replace("\r\n ", "") in unfolded
