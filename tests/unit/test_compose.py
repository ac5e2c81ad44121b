"""Message assembly: MIME tree, headers, determinism, encodings, and hostile display names."""

from __future__ import annotations

import email
import email.policy
import re
from dataclasses import replace
from datetime import datetime
from email.header import decode_header, make_header
from email.message import EmailMessage
from email.utils import getaddresses
from zoneinfo import ZoneInfo

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from notifier.domain.conference import Conference
from notifier.domain.notice import Kind, Notice, Person
from notifier.domain.recipients import check_name
from notifier.mail.compose import Composed, clean_sender_name, compose
from notifier.mail.render import Renderer
from notifier.mail.samples import SAMPLE_NOW, sample_notice

SUBJECT = "Bekræftelse af tilmelding: Kommunernes Digitaliseringstræf '24 mandag den 22. april 2024"


def build(
    renderer: Renderer, conf: Conference, notice: Notice, now: datetime = SAMPLE_NOW
) -> Composed:
    return compose(notice, conf, renderer, now=now)


def parse(data: bytes) -> EmailMessage:
    message = email.message_from_bytes(data, policy=email.policy.default)
    assert isinstance(message, EmailMessage)
    return message


def confirmation(renderer: Renderer, conf: Conference) -> Composed:
    return build(renderer, conf, sample_notice(Kind.CONFIRMATION, conf))


def tree(part: EmailMessage) -> object:
    """The MIME tree as nested (content type, children) for readable comparisons."""
    if part.is_multipart():
        children = [tree(p) for p in part.iter_parts() if isinstance(p, EmailMessage)]
        return (part.get_content_type(), children)
    return part.get_content_type()


def test_structure_is_mixed_alternative_plus_attachment(
    renderer: Renderer, conference: Conference
) -> None:
    msg = parse(confirmation(renderer, conference).data)
    assert tree(msg) == (
        "multipart/mixed",
        [
            ("multipart/alternative", ["text/plain", "text/html", "text/calendar"]),
            "application/ics",
        ],
    )


def _part(msg: EmailMessage, content_type: str) -> EmailMessage:
    parts = [p for p in msg.walk() if p.get_content_type() == content_type]
    assert len(parts) == 1, content_type
    part = parts[0]
    assert isinstance(part, EmailMessage)
    return part


def test_calendar_part_and_attachment(renderer: Renderer, conference: Conference) -> None:
    msg = parse(confirmation(renderer, conference).data)
    calendar = _part(msg, "text/calendar")
    assert calendar.get_param("method") == "REQUEST"
    assert calendar.get_content_charset() == "utf-8"
    ics = calendar.get_content()
    assert "\r\nMETHOD:REQUEST\r\n" in ics
    attachment = _part(msg, "application/ics")
    assert attachment.is_attachment()
    assert attachment.get_filename() == "invitation.ics"
    assert attachment.get_content() == ics.encode("utf-8")


def test_headers(renderer: Renderer, conference: Conference) -> None:
    composed = confirmation(renderer, conference)
    msg = parse(composed.data)
    assert msg["From"] == "KL <arrangementsinfo@kl.dk>"
    assert [a.addr_spec for a in msg["To"].addresses] == ["mette.sorensen@aarhus.dk"]
    assert msg["To"].addresses[0].display_name == "Mette Sørensen"
    assert msg["Subject"] == SUBJECT
    assert composed.subject == SUBJECT
    assert msg["Date"].datetime == SAMPLE_NOW
    assert msg["Message-ID"] == composed.message_id
    assert msg["Auto-Submitted"] == "auto-generated"
    assert (composed.sender, composed.recipient) == (
        "arrangementsinfo@kl.dk",
        "mette.sorensen@aarhus.dk",
    )


def test_date_is_the_given_now_in_any_zone(renderer: Renderer, conference: Conference) -> None:
    now = datetime(2024, 4, 2, 8, 30, tzinfo=ZoneInfo("Europe/Copenhagen"))
    composed = build(renderer, conference, sample_notice(Kind.CONFIRMATION, conference), now=now)
    assert parse(composed.data)["Date"].datetime == now


def test_message_id_is_derived_from_the_key(renderer: Renderer, conference: Conference) -> None:
    notice = sample_notice(Kind.CONFIRMATION, conference)
    first = build(renderer, conference, notice)
    again = build(
        renderer, conference, notice, now=datetime(2024, 3, 1, 12, 0, tzinfo=SAMPLE_NOW.tzinfo)
    )
    other = build(renderer, conference, replace(notice, key="evt-0009:confirmation"))
    assert first.message_id == again.message_id
    assert first.message_id != other.message_id
    assert first.message_id.startswith("<") and first.message_id.endswith("@kl.dk>")


@pytest.mark.parametrize("kind", list(Kind))
def test_same_inputs_give_the_same_bytes(
    renderer: Renderer, conference: Conference, kind: Kind
) -> None:
    notice = sample_notice(kind, conference)
    assert build(renderer, conference, notice).data == build(renderer, conference, notice).data


@pytest.mark.parametrize("kind", list(Kind))
def test_lines_are_crlf_and_at_most_998_bytes(
    renderer: Renderer, conference: Conference, kind: Kind
) -> None:
    data = build(renderer, conference, sample_notice(kind, conference)).data
    assert b"\n" not in data.replace(b"\r\n", b"")
    assert b"\r" not in data.replace(b"\r\n", b"")
    assert max(len(line) for line in data.split(b"\r\n")) <= 998


def test_danish_letters_round_trip(renderer: Renderer, conference: Conference) -> None:
    msg = parse(confirmation(renderer, conference).data)
    text = _part(msg, "text/plain")
    html = _part(msg, "text/html")
    for part in (text, html):
        assert part.get_content_charset() == "utf-8"
        content = part.get_content()
        for word in ("Kære Mette Sørensen", "bekræftet", "Tilføj", "Falkoner Allé", "åbn"):
            assert word in content, word
    assert "VILKÅR" in text.get_content()


def test_copy_to_organiser_has_no_invite(renderer: Renderer, conference: Conference) -> None:
    msg = parse(build(renderer, conference, sample_notice(Kind.SUBSTITUTION_COPY, conference)).data)
    assert tree(msg) == ("multipart/alternative", ["text/plain", "text/html"])
    assert b"VCALENDAR" not in msg.as_bytes()


def test_seat_transfer_cancels_the_invite(renderer: Renderer, conference: Conference) -> None:
    msg = parse(build(renderer, conference, sample_notice(Kind.SUBSTITUTION_OUT, conference)).data)
    calendar = _part(msg, "text/calendar")
    assert calendar.get_param("method") == "CANCEL"
    assert "\r\nMETHOD:CANCEL\r\n" in calendar.get_content()
    assert _part(msg, "application/ics").get_filename() == "aflysning.ics"


@pytest.mark.parametrize(
    "name",
    [
        'Sørensen, Mette "M" <boss@evil.dk>',
        'Ole "Bent" Hansen, KL',
        "Anders And <anders@andeby.dk>, bcc@evil.dk",
        "Æble; Grød: \\ Ø",
        "Ænne (kommentar) Øster",
        "Mette Sørensen-Kjærgaard Østergaard Bøgelund-Mikkelsen",
    ],
    ids=[
        "quotes-comma-angle-non-ascii",
        "quotes-comma",
        "two-addresses",
        "specials",
        "comment",
        "long",
    ],
)
def test_hostile_display_name_stays_one_address(
    renderer: Renderer, conference: Conference, name: str
) -> None:
    notice = sample_notice(Kind.CONFIRMATION, conference)
    notice = replace(notice, recipient=replace(notice.recipient, name=name))
    data = build(renderer, conference, notice).data
    addresses = parse(data)["To"].addresses
    assert [a.addr_spec for a in addresses] == ["mette.sorensen@aarhus.dk"]
    assert _decoded_to(data) == [(name, "mette.sorensen@aarhus.dk")]


def _decoded_to(data: bytes) -> list[tuple[str, str]]:
    """The To addresses with RFC 2047 display names decoded per RFC 2047 section 6.2.

    Not via policy.default: its parser puts a space between adjacent encoded-words in a
    display name (CPython gh-128110), which would blame compose for a parser bug.
    """
    raw = email.message_from_bytes(data, policy=email.policy.compat32)["To"]
    return [
        (str(make_header(decode_header(name))), address)
        for name, address in getaddresses([re.sub(r"\r?\n(?=[ \t])", "", str(raw))])
    ]


def test_non_ascii_mailbox_uses_smtputf8(renderer: Renderer, conference: Conference) -> None:
    notice = sample_notice(Kind.CONFIRMATION, conference)
    notice = replace(notice, recipient=Person("Søren Ærø", "søren@aarhus.dk"))
    composed = build(renderer, conference, notice)
    assert composed.smtputf8 is True
    msg = email.message_from_string(composed.data.decode("utf-8"), policy=email.policy.default)
    assert [a.addr_spec for a in msg["To"].addresses] == ["søren@aarhus.dk"]
    assert msg["To"].addresses[0].display_name == "Søren Ærø"


def test_international_domain_is_punycode_in_the_envelope(
    renderer: Renderer, conference: Conference
) -> None:
    notice = sample_notice(Kind.CONFIRMATION, conference)
    notice = replace(notice, recipient=Person("Mette Sørensen", "mette@ærø.dk"))
    composed = build(renderer, conference, notice)
    assert [a.addr_spec for a in parse(composed.data)["To"].addresses] == ["mette@xn--r-3fa9c.dk"]
    # An ASCII local part needs no SMTPUTF8 once the domain is in its A-label form.
    assert (composed.smtputf8, composed.recipient) == (False, "mette@xn--r-3fa9c.dk")


@pytest.mark.parametrize(
    ("name", "cleaned"),
    [
        ("KL", "KL"),
        ('KL: "Arrangementer", Weidekampsgade', "KL Arrangementer Weidekampsgade"),
        ("KL <arrangementsinfo@kl.dk>", "KL arrangementsinfokl.dk"),
        ("Kommunernes   Landsforening ; KL\\", "Kommunernes Landsforening KL"),
        ("Æ" * 100, "Æ" * 75),
    ],
)
def test_clean_sender_name(name: str, cleaned: str) -> None:
    assert clean_sender_name(name) == cleaned
    assert not set('@:,"') & set(clean_sender_name(name))


NAME_CHARACTERS = "abcæøåÆØÅé中 \"',<>@:;()\\=?._-"


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(st.text(alphabet=NAME_CHARACTERS, min_size=1, max_size=90))
def test_any_valid_display_name_stays_one_address(
    renderer: Renderer, conference: Conference, name: str
) -> None:
    try:
        name = check_name(name)
    except ValueError:
        assume(False)
    notice = sample_notice(Kind.CONFIRMATION, conference)
    data = build(renderer, conference, replace(notice, recipient=Person(name, "m@aarhus.dk"))).data
    assert [a.addr_spec for a in parse(data)["To"].addresses] == ["m@aarhus.dk"]
    # A phrase's runs of spaces are folding white space: one space is the same name.
    assert [(" ".join(n.split()), a) for n, a in _decoded_to(data)] == [
        (" ".join(name.split()), "m@aarhus.dk")
    ]
