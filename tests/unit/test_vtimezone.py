"""The VTIMEZONE of a timed invite, in the form Outlook expects (issue 13).

Outlook and Google export a zone as one STANDARD and one DAYLIGHT observance with yearly
RRULEs; MS-OXCICAL 2.1.3.1.1.19.2 lets an importer reject anything else. The rules are derived
from the tz database for the conference's year, so every check here reads them back through
two parsers (icalendar and vobject, each building its tzinfo from the VTIMEZONE alone, not
from the TZID) and compares their offsets with zoneinfo's.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from datetime import UTC, date, datetime, time, timedelta, tzinfo
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from icalendar import Calendar, Timezone

from notifier.domain.conference import Conference
from notifier.domain.notice import Kind
from notifier.mail.invite import build_invite, vtimezone
from notifier.mail.samples import SAMPLE_NOW, sample_notice

# vobject has no type hints; imported by name so that its absence fails instead of skipping
vobject: Any = importlib.import_module("vobject")

CPH = ZoneInfo("Europe/Copenhagen")
HOUR = timedelta(hours=1)


def timed_invite(conference: Conference) -> bytes:
    notice = sample_notice(Kind.CONFIRMATION, conference)
    assert notice.invite is not None
    return build_invite(
        conference, notice.invite, notice.recipient, now=SAMPLE_NOW, description="d"
    )


def only_vtimezone(data: bytes) -> Timezone:
    zones = Calendar.from_ical(data).walk("VTIMEZONE")
    assert len(zones) == 1
    zone = zones[0]
    assert isinstance(zone, Timezone)
    return zone


def zone_calendar(tzid: str, start: datetime) -> bytes:
    """A calendar holding just the VTIMEZONE for an event at `start` (naive) in `tzid`."""
    cal = Calendar()
    cal.add("version", "2.0")
    cal.add("prodid", "-//test//")
    cal.add_component(vtimezone(start.replace(tzinfo=ZoneInfo(tzid))))
    return bytes(cal.to_ical())


# Each parser turns the VTIMEZONE's own rules into a tzinfo (both look a known TZID up in
# their zone database otherwise, which would test that instead of what was written).
def icalendar_tz(data: bytes) -> tzinfo:
    zone: tzinfo = only_vtimezone(data).to_tz(lookup_tzid=False)
    return zone


def vobject_tz(data: bytes) -> tzinfo:
    zone: tzinfo = vobject.readOne(data.decode("utf-8")).vtimezone.gettzinfo()
    return zone


def text(prop: Any) -> str:
    """A property's value as written (icalendar returns str for some types, bytes for others)."""
    value = prop.to_ical()
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


PARSERS: dict[str, Callable[[bytes], tzinfo]] = {"icalendar": icalendar_tz, "vobject": vobject_tz}


def test_copenhagen_in_outlooks_form(timed_conference: Conference) -> None:
    zone = only_vtimezone(timed_invite(timed_conference))
    assert str(zone["TZID"]) == "Europe/Copenhagen"
    assert "COMMENT" not in zone
    assert [c.name for c in zone.subcomponents] == ["STANDARD", "DAYLIGHT"]
    expected = {
        "STANDARD": ("+0200", "+0100", "CET", "19701025T030000", "FREQ=YEARLY;BYMONTH=10"),
        "DAYLIGHT": ("+0100", "+0200", "CEST", "19700329T020000", "FREQ=YEARLY;BYMONTH=3"),
    }
    for observance in zone.subcomponents:
        assert not {"RDATE", "COMMENT"} & set(observance)
        offset_from, offset_to, name, start, rule = expected[observance.name]
        assert text(observance["TZOFFSETFROM"]) == offset_from
        assert text(observance["TZOFFSETTO"]) == offset_to
        assert observance["TZNAME"] == name
        assert text(observance["DTSTART"]) == start
        parts = text(observance["RRULE"]).split(";")
        assert sorted(parts) == sorted([*rule.split(";"), "BYDAY=-1SU"])


@pytest.mark.parametrize("parser", PARSERS.values(), ids=PARSERS.keys())
def test_nine_local_is_seven_utc_on_the_day(
    timed_conference: Conference, parser: Callable[[bytes], tzinfo]
) -> None:
    data = timed_invite(timed_conference)
    assert b"\r\nDTSTART;TZID=Europe/Copenhagen:20240422T090000\r\n" in data
    event = vobject.readOne(data.decode("utf-8"), transform=False).vevent
    assert event.dtstart.params["TZID"] == ["Europe/Copenhagen"]
    start = vobject.icalendar.stringToDateTime(event.dtstart.value, tzinfo=parser(data))
    assert start.astimezone(UTC) == datetime(2024, 4, 22, 7, 0, tzinfo=UTC)


@pytest.mark.parametrize("parser", PARSERS.values(), ids=PARSERS.keys())
@pytest.mark.parametrize(
    ("wall", "offset"),
    [
        (datetime(2024, 1, 1, 0, 0), 1),
        (datetime(2024, 3, 30, 9, 0), 1),
        (datetime(2024, 3, 31, 1, 59), 1),
        (datetime(2024, 3, 31, 3, 30), 2),
        (datetime(2024, 4, 22, 9, 0), 2),
        (datetime(2024, 10, 27, 2, 30), 2),  # twice that night: fold=0 is the first, in CEST
        (datetime(2024, 10, 27, 2, 30, fold=1), 1),
        (datetime(2024, 10, 27, 3, 0), 1),
        (datetime(2024, 12, 1, 9, 0), 1),
    ],
    ids=str,
)
def test_offsets_around_the_transitions(
    timed_conference: Conference,
    parser: Callable[[bytes], tzinfo],
    wall: datetime,
    offset: int,
) -> None:
    zone = parser(timed_invite(timed_conference))
    assert wall.replace(tzinfo=zone).utcoffset() == offset * HOUR
    assert wall.replace(tzinfo=CPH).utcoffset() == offset * HOUR


INSTANTS_2024 = st.datetimes(
    datetime(2024, 1, 1), datetime(2024, 12, 31, 23, 59), timezones=st.just(UTC)
)


@pytest.mark.parametrize("parser", PARSERS.values(), ids=PARSERS.keys())
@pytest.mark.parametrize(
    "tzid", ["Europe/Copenhagen", "Australia/Sydney", "America/New_York", "Asia/Tokyo"]
)
@settings(max_examples=150, deadline=None)
@given(instant=INSTANTS_2024)
def test_rules_give_zoneinfos_offset_all_year(
    parser: Callable[[bytes], tzinfo], tzid: str, instant: datetime
) -> None:
    """Every moment of the year reads the same on the invite's clock as on zoneinfo's,
    including both passes through the repeated hour (fold)."""
    zone = parser(zone_calendar(tzid, datetime(2024, 4, 22, 9, 0)))
    local = instant.astimezone(ZoneInfo(tzid))
    assert local.replace(tzinfo=zone).utcoffset() == local.utcoffset()


@pytest.mark.parametrize("parser", PARSERS.values(), ids=PARSERS.keys())
@pytest.mark.parametrize("tzid", ["Europe/Copenhagen", "Australia/Sydney", "America/New_York"])
def test_rules_give_zoneinfos_offset_every_quarter_hour_near_the_changes(
    parser: Callable[[bytes], tzinfo], tzid: str
) -> None:
    zoneinfo = ZoneInfo(tzid)
    zone = parser(zone_calendar(tzid, datetime(2024, 4, 22, 9, 0)))
    moment, end, changes = datetime(2024, 1, 1, tzinfo=UTC), datetime(2025, 1, 1, tzinfo=UTC), 0
    while moment < end:
        local = moment.astimezone(zoneinfo)
        if local.utcoffset() != (moment + 3 * HOUR).astimezone(zoneinfo).utcoffset():
            changes += 1
            for quarter in range(0, 6 * 4):
                near = (moment + quarter * HOUR / 4).astimezone(zoneinfo)
                assert near.replace(tzinfo=zone).utcoffset() == near.utcoffset(), near
        moment += 3 * HOUR
    assert changes == 2


def observances(tzid: str, start: datetime) -> list[tuple[str, str, str, str, str, str]]:
    """(name, DTSTART, TZOFFSETFROM, TZOFFSETTO, TZNAME, RRULE or "") per observance."""
    return [
        (
            o.name,
            text(o["DTSTART"]),
            text(o["TZOFFSETFROM"]),
            text(o["TZOFFSETTO"]),
            str(o["TZNAME"]),
            text(o["RRULE"]) if "RRULE" in o else "",
        )
        for o in only_vtimezone(zone_calendar(tzid, start)).subcomponents
    ]


def test_a_zone_without_summer_time_has_one_standard_and_no_rule() -> None:
    assert observances("Asia/Tokyo", datetime(2024, 4, 22, 9, 0)) == [
        ("STANDARD", "19700101T000000", "+0900", "+0900", "JST", ""),
    ]


def test_a_southern_zone_falls_back_in_april_and_springs_forward_in_october() -> None:
    assert observances("Australia/Sydney", datetime(2024, 4, 22, 9, 0)) == [
        (
            "STANDARD",
            "19700405T030000",
            "+1100",
            "+1000",
            "AEST",
            "FREQ=YEARLY;BYDAY=1SU;BYMONTH=4",
        ),
        (
            "DAYLIGHT",
            "19701004T020000",
            "+1000",
            "+1100",
            "AEDT",
            "FREQ=YEARLY;BYDAY=1SU;BYMONTH=10",
        ),
    ]


def test_an_nth_weekday_rule() -> None:
    """New York: the second Sunday of March and the first of November."""
    assert observances("America/New_York", datetime(2024, 4, 22, 9, 0)) == [
        (
            "STANDARD",
            "19701101T020000",
            "-0400",
            "-0500",
            "EST",
            "FREQ=YEARLY;BYDAY=1SU;BYMONTH=11",
        ),
        ("DAYLIGHT", "19700308T020000", "-0500", "-0400", "EDT", "FREQ=YEARLY;BYDAY=2SU;BYMONTH=3"),
    ]


@pytest.mark.parametrize(
    ("start", "offset", "name"),
    [(datetime(2019, 1, 15, 9, 0), "-0200", "-02"), (datetime(2019, 6, 15, 9, 0), "-0300", "-03")],
    ids=["summer", "winter"],
)
def test_a_year_the_rules_changed_gets_the_events_own_offset(
    start: datetime, offset: str, name: str
) -> None:
    """São Paulo left summer time in February 2019: that year has no two yearly rules, and one
    STANDARD with the offset in force at the event places the event right."""
    assert observances("America/Sao_Paulo", start) == [
        ("STANDARD", "19700101T000000", offset, offset, name, ""),
    ]


def test_the_zone_is_the_conferences(timed_conference: Conference) -> None:
    sydney = timed_conference.model_copy(update={"timezone": "Australia/Sydney"})
    data = timed_invite(sydney)
    assert b"\r\nDTSTART;TZID=Australia/Sydney:20240422T090000\r\n" in data
    zone = only_vtimezone(data)
    assert str(zone["TZID"]) == "Australia/Sydney"
    assert datetime(2024, 4, 22, 9, 0, tzinfo=icalendar_tz(data)).astimezone(UTC) == datetime(
        2024, 4, 21, 23, 0, tzinfo=UTC
    )


@pytest.mark.parametrize("year", [2023, 2025, 2030])
def test_the_rules_are_the_same_from_year_to_year(year: int) -> None:
    """Derived from the conference's year, yet Copenhagen's rules are one and the same."""
    some_year = date(year, 6, 1)
    assert observances("Europe/Copenhagen", datetime.combine(some_year, time(9))) == observances(
        "Europe/Copenhagen", datetime(2024, 4, 22, 9, 0)
    )


def test_a_start_without_a_zoneinfo_zone_is_refused() -> None:
    with pytest.raises(TypeError):
        vtimezone(datetime(2024, 4, 22, 9, 0, tzinfo=UTC))
