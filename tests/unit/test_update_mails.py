"""The mails of conference changes as an attendee's programs read them (issue 13).

Each mail is composed as it is sent and parsed back the way a client does: the MIME tree with
Python's email parser, the text/calendar part with icalendar and with vobject (a second,
independent parser; each builds the time zone from the VTIMEZONE alone). An update is a
REQUEST to the UID of the attendee's confirmation with a higher SEQUENCE; a conference
cancellation is a CANCEL with STATUS:CANCELLED to the same UID. The reminder's "Bemærk"
section is tested here too: it is the other mail that tells what changed.
"""

from __future__ import annotations

import importlib
import re
from dataclasses import replace
from datetime import UTC, date, datetime, time
from email import message_from_bytes, policy
from email.message import EmailMessage
from typing import Any

import pytest
from icalendar import Calendar, Event, Timezone
from markupsafe import escape  # as Jinja escapes

from notifier.domain.conference import Conference
from notifier.domain.itip import prepare
from notifier.domain.notice import InviteSpec, Kind, Notice
from notifier.domain.plan import Carried, Seat, seat_uid
from notifier.mail.compose import compose
from notifier.mail.render import Rendered, Renderer, conference_facts
from notifier.mail.samples import METTE, SAMPLE_NOW, sample_notice

# vobject has no type hints; imported by name so that its absence fails instead of skipping
vobject: Any = importlib.import_module("vobject")

NOTE = 'Vi beklager. Spørgsmål om betaling: skriv "Aflysning" & dit <tilmeldingsnummer>.'
NOTE_LINES = "Vi beklager meget.\nKL vender tilbage.\n\nVenlig hilsen fra KL's arrangementsteam"


def cancelled(conference: Conference, note: str | None = None) -> Conference:
    return conference.model_copy(update={"cancelled": True, "cancellation_note": note})


def with_sequence(notice: Notice, sequence: int) -> Notice:
    assert notice.invite is not None
    return replace(notice, invite=replace(notice.invite, sequence=sequence))


def confirmation_uid(conf: Conference) -> str:
    invite = sample_notice(Kind.CONFIRMATION, conf).invite
    assert invite is not None
    return invite.uid


def parsed(notice: Notice, conf: Conference, renderer: Renderer) -> EmailMessage:
    data = compose(notice, conf, renderer, now=SAMPLE_NOW).data
    msg = message_from_bytes(data, policy=policy.default)
    assert isinstance(msg, EmailMessage)
    return msg


def only_part(msg: EmailMessage, content_type: str) -> EmailMessage:
    parts = [p for p in msg.walk() if p.get_content_type() == content_type]
    assert len(parts) == 1, content_type
    assert isinstance(parts[0], EmailMessage)
    return parts[0]


def calendar_of(msg: EmailMessage) -> tuple[EmailMessage, bytes]:
    """The text/calendar part and its invite as bytes; the attachment must be the same."""
    part = only_part(msg, "text/calendar")
    ics = part.get_content().encode("utf-8")
    assert only_part(msg, "application/ics").get_content() == ics
    return part, ics


def one_vevent(ics: bytes) -> Event:
    events = Calendar.from_ical(ics).walk("VEVENT")
    assert len(events) == 1
    event = events[0]
    assert isinstance(event, Event)
    return event


# -- iTIP: method, status, UID, SEQUENCE -----------------------------------------------------

CASES = {
    "update": (Kind.UPDATE, "REQUEST", "CONFIRMED", "invitation.ics"),
    "conference-cancellation": (
        Kind.CONFERENCE_CANCELLATION,
        "CANCEL",
        "CANCELLED",
        "aflysning.ics",
    ),
}


def mail_for(kind: Kind, conference: Conference) -> tuple[Conference, Notice]:
    """The conference as it is when such a mail goes out, and the sample notice."""
    conf = cancelled(conference) if kind is Kind.CONFERENCE_CANCELLATION else conference
    return conf, sample_notice(kind, conf)


@pytest.mark.parametrize("sequence", [1, 7])
@pytest.mark.parametrize(("kind", "method", "status", "filename"), CASES.values(), ids=CASES.keys())
def test_the_invite_as_icalendar_reads_it(
    renderer: Renderer,
    conference: Conference,
    kind: Kind,
    method: str,
    status: str,
    filename: str,
    sequence: int,
) -> None:
    conf, notice = mail_for(kind, conference)
    data = compose(with_sequence(notice, sequence), conf, renderer, now=SAMPLE_NOW).data
    header = f'\r\nContent-Type: text/calendar; method={method}; charset="UTF-8"\r\n'
    assert data.count(header.encode()) == 1
    msg = parsed(with_sequence(notice, sequence), conf, renderer)
    part, ics = calendar_of(msg)
    assert part.get_param("method") == method
    assert only_part(msg, "application/ics").get_filename() == filename
    assert f"\r\nMETHOD:{method}\r\n".encode() in ics
    assert Calendar.from_ical(ics)["METHOD"] == method
    event = one_vevent(ics)
    assert event["STATUS"] == status
    assert event["UID"] == confirmation_uid(conf)
    assert event["SEQUENCE"] == sequence
    assert str(event["ATTENDEE"]) == f"mailto:{METTE.email}"


@pytest.mark.parametrize("sequence", [1, 7])
@pytest.mark.parametrize(("kind", "method", "status", "filename"), CASES.values(), ids=CASES.keys())
def test_the_invite_as_vobject_reads_it(
    renderer: Renderer,
    conference: Conference,
    kind: Kind,
    method: str,
    status: str,
    filename: str,
    sequence: int,
) -> None:
    conf, notice = mail_for(kind, conference)
    _part, ics = calendar_of(parsed(with_sequence(notice, sequence), conf, renderer))
    cal = vobject.readOne(ics.decode("utf-8"))
    assert cal.method.value == method
    event = cal.vevent
    assert event.status.value == status
    assert event.uid.value == confirmation_uid(conf)
    assert event.sequence.value == str(sequence)
    assert (event.dtstart.value, event.dtend.value) == (date(2024, 4, 22), date(2024, 4, 23))


# -- a timed conference: the VTIMEZONE in Outlook's form, 9.00 local = 7.00 UTC ---------------


def icalendar_tz(ics: bytes) -> Any:
    zones = Calendar.from_ical(ics).walk("VTIMEZONE")
    assert len(zones) == 1 and isinstance(zones[0], Timezone)
    return zones[0].to_tz(lookup_tzid=False)  # from the VTIMEZONE, not a zone database


def vobject_tz(ics: bytes) -> Any:
    return vobject.readOne(ics.decode("utf-8")).vtimezone.gettzinfo()


@pytest.mark.parametrize("parser", [icalendar_tz, vobject_tz], ids=["icalendar", "vobject"])
@pytest.mark.parametrize("kind", [Kind.UPDATE, Kind.CONFERENCE_CANCELLATION])
def test_a_timed_conferences_invite_carries_its_zone(
    renderer: Renderer, timed_conference: Conference, kind: Kind, parser: Any
) -> None:
    conf, notice = mail_for(kind, timed_conference)
    _part, ics = calendar_of(parsed(notice, conf, renderer))
    assert b"\r\nDTSTART;TZID=Europe/Copenhagen:20240422T090000\r\n" in ics
    assert b"\r\nDTEND;TZID=Europe/Copenhagen:20240422T160000\r\n" in ics
    zone = Calendar.from_ical(ics).walk("VTIMEZONE")[0]
    assert str(zone["TZID"]) == "Europe/Copenhagen"
    # Outlook's form: one STANDARD and one DAYLIGHT, each with a yearly rule.
    assert [c.name for c in zone.subcomponents] == ["STANDARD", "DAYLIGHT"]
    for observance, month in zip(zone.subcomponents, (10, 3), strict=True):
        rule: Any = observance["RRULE"]  # a vRecur, which the stubs do not narrow to
        assert (rule["FREQ"], rule["BYMONTH"], rule["BYDAY"]) == (["YEARLY"], [month], ["-1SU"])
    # The same VTIMEZONE as the confirmation: a client that kept that one reads the same times.
    confirmation = parsed(sample_notice(Kind.CONFIRMATION, conf), conf, renderer)
    assert _vtimezone_bytes(ics) == _vtimezone_bytes(calendar_of(confirmation)[1])
    event = vobject.readOne(ics.decode("utf-8"), transform=False).vevent
    start = vobject.icalendar.stringToDateTime(event.dtstart.value, tzinfo=parser(ics))
    assert start.astimezone(UTC) == datetime(2024, 4, 22, 7, 0, tzinfo=UTC)


def _vtimezone_bytes(ics: bytes) -> bytes:
    found = re.search(rb"BEGIN:VTIMEZONE\r\n.*?END:VTIMEZONE\r\n", ics, re.DOTALL)
    assert found is not None
    return found.group()


def test_an_all_day_update_stays_all_day(renderer: Renderer, conference: Conference) -> None:
    _part, ics = calendar_of(parsed(sample_notice(Kind.UPDATE, conference), conference, renderer))
    assert b"\r\nDTSTART;VALUE=DATE:20240422\r\n" in ics
    assert b"VTIMEZONE" not in ics


# -- the conference cancellation: the organiser's note, and no colleague ----------------------


def rendered(renderer: Renderer, notice: Notice, conf: Conference) -> Rendered:
    return renderer.render_notice(notice, conference_facts(conf), conf.tz)


def cancellation(renderer: Renderer, conf: Conference) -> Rendered:
    return rendered(renderer, sample_notice(Kind.CONFERENCE_CANCELLATION, conf), conf)


def test_the_cancellation_note_is_in_text_and_html(
    renderer: Renderer, conference: Conference
) -> None:
    out = cancellation(renderer, cancelled(conference, NOTE))
    assert f"\n\n{NOTE}\n\n" in out.text  # a paragraph of its own
    assert f'<p style="margin:0 0 16px 0;">{escape(NOTE)}</p>' in out.html
    assert "<tilmeldingsnummer>" not in out.html


def test_no_note_leaves_nothing_behind(renderer: Renderer, conference: Conference) -> None:
    """Without a note the mail is the one with a note, less the note's paragraph."""
    with_note = cancellation(renderer, cancelled(conference, NOTE))
    without = cancellation(renderer, cancelled(conference))
    assert without.text == with_note.text.replace(f"{NOTE}\n\n", "", 1)
    note_paragraph = f'<p style="margin:0 0 16px 0;">{escape(NOTE)}</p>\n'
    assert note_paragraph in with_note.html
    assert without.html == with_note.html.replace(note_paragraph, "", 1)
    assert "None" not in without.text and "None" not in without.html


def test_a_note_of_several_paragraphs_keeps_them_in_html(
    renderer: Renderer, conference: Conference
) -> None:
    out = cancellation(renderer, cancelled(conference, NOTE_LINES))
    assert NOTE_LINES in out.text
    assert (
        '<p style="margin:0 0 16px 0;">Vi beklager meget.<br>KL vender tilbage.</p>\n'
        '<p style="margin:0 0 16px 0;">Venlig hilsen fra KL&#39;s arrangementsteam</p>'
    ) in out.html


VARIANTS = {
    "shipped": {},
    "note": {"cancellation_note": NOTE},
    "phone-and-bring": {"contact_phone": "+45 33 70 33 70", "what_to_bring": "Madpakke."},
}


@pytest.mark.parametrize("update", VARIANTS.values(), ids=VARIANTS.keys())
def test_a_conference_cancellation_never_offers_a_colleague(
    renderer: Renderer, conference: Conference, update: dict[str, object]
) -> None:
    conf = cancelled(conference).model_copy(update=update)
    out = cancellation(renderer, conf)
    for text in (out.subject, out.text, out.html):
        assert "kollega" not in text.lower()
        assert "tilmeldingen er bindende" not in text.lower()  # nor the terms that say so


def test_a_conference_cancellation_lists_no_changes(
    renderer: Renderer, conference: Conference
) -> None:
    """Sent, it carries what the invite said before (the conference taking place); the
    status line "gennemføres → aflyst" would only repeat the heading."""
    conf = cancelled(conference)
    notice = replace(
        sample_notice(Kind.CONFERENCE_CANCELLATION, conf),
        changed_from=conference.invite_facts.text("REQUEST"),
    )
    out = rendered(renderer, notice, conf)
    assert out == cancellation(renderer, conf)
    assert "→" not in out.text


# -- the reminder's "Bemærk" section ---------------------------------------------------------

BEMAERK = "BEMÆRK: DER ER SKET ÆNDRINGER SIDEN DIN SENESTE KALENDERINVITATION"


def timed_before(conf: Conference) -> str:
    """What the invite said before an all-day conference announced no times: 9.00–16.00."""
    return replace(conf.invite_facts, start=time(9), end=time(16)).text("REQUEST")


@pytest.mark.parametrize("changed_from", ["none", "equal"])
def test_a_reminder_without_changes_has_no_bemaerk(
    renderer: Renderer, conference: Conference, changed_from: str
) -> None:
    before = conference.invite_facts.text("REQUEST") if changed_from == "equal" else None
    notice = replace(sample_notice(Kind.REMINDER, conference), changed_from=before)
    out = rendered(renderer, notice, conference)
    assert "BEMÆRK" not in out.text and "Bemærk" not in out.html
    assert "→" not in out.text and "<ul" not in out.html
    assert "Tilføj den til din kalender" in out.text  # the plain invitation's note


def test_a_reminder_with_changes_says_what_changed(
    renderer: Renderer, conference: Conference
) -> None:
    notice = replace(
        sample_notice(Kind.REMINDER, conference), changed_from=timed_before(conference)
    )
    out = rendered(renderer, notice, conference)
    section = out.text.split(f"\n{BEMAERK}\n", 1)[1].split("\n\n", 1)[0]
    assert section == "Tid: kl.\u00a09.00–16.00 → ikke meldt ud"
    assert "Bemærk: Der er sket ændringer siden din seneste kalenderinvitation</h2>" in out.html
    assert "<del>kl.\u00a09.00–16.00</del> → <strong>ikke meldt ud</strong>" in out.html
    assert "den opdaterede kalenderinvitation" in out.text  # the update's calendar note


def seat_carrying(conf: Conference, facts: str) -> Seat:
    uid = seat_uid(Seat("REG-1001", METTE, "active", SAMPLE_NOW), conf)
    return Seat("REG-1001", METTE, "active", SAMPLE_NOW, {uid: 0}, carried={uid: Carried(0, facts)})


@pytest.mark.parametrize("moved", [False, True], ids=["same-facts", "times-dropped"])
def test_a_prepared_reminder_shows_bemaerk_exactly_when_the_invite_said_otherwise(
    renderer: Renderer, conference: Conference, moved: bool
) -> None:
    """Through the iTIP rule as delivery runs it: the seat records what Mette's invite
    carried; the reminder shows the section, and raises the SEQUENCE, only if that differs."""
    carried = timed_before(conference) if moved else conference.invite_facts.text("REQUEST")
    ready = prepare(
        sample_notice(Kind.REMINDER, conference), seat_carrying(conference, carried), conference
    ).notice
    assert ready is not None and ready.kind is Kind.REMINDER
    assert ready.invite == InviteSpec("REQUEST", confirmation_uid(conference), int(moved))
    out = rendered(renderer, ready, conference)
    assert (BEMAERK in out.text) is moved
    assert ("Bemærk:" in out.html) is moved
