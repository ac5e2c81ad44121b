"""The shipped conference states only what KL announced, and a mail leaves out a section it
has no text for.

KL announced the title, the date, the venue, the price (2.575 kr. + moms), that registration
is binding with the right to send a colleague, first come first served, the contact address
and the audience. Texts nobody announced (what to bring, the nearest metro) were removed from
the file; no mail of any kind may still say them, in its text, its HTML or its invite.
"""

from __future__ import annotations

import re
from datetime import date
from email import message_from_bytes, policy
from email.message import EmailMessage

import pytest

from notifier.domain.conference import Conference
from notifier.domain.notice import Kind
from notifier.mail.compose import compose
from notifier.mail.render import Renderer
from notifier.mail.samples import SAMPLE_NOW, sample_notice

NBSP = "\u00a0"
AUDIENCE = (
    "direktører, chefer og ledere fra alle kommunens fagområder samt medarbejdere inden for it,"
    " digitalisering og teknologi"
)
TERMS = (
    "Tilmeldingen er bindende, men er du forhindret i at deltage, er du velkommen til at sende"
    " en kollega i stedet. Pladserne fordeles efter først til mølle-princippet."
)
# Words of the removed texts: "Du behøver ikke at medbringe din billet. Tag gerne din
# computer eller tablet med, ..." and "Nærmeste metro: Frederiksberg St. (M1, M2 og M3)".
REMOVED = ("medbringe", "billet", "tablet", "metro", "Frederiksberg St", "M1, M2")
BRING = "Tag en madpakke med."  # what_to_bring for the conference that has one


def test_the_shipped_file_states_what_kl_announced(conference: Conference) -> None:
    assert conference.title == "Kommunernes Digitaliseringstræf '24"
    assert conference.date == date(2024, 4, 22)
    assert (conference.start_time, conference.end_time) == (None, None)  # none announced
    assert conference.venue.location == "Scandic Falkoner, Falkoner Allé 9, 2000 Frederiksberg"
    assert conference.venue.transit is None
    assert (conference.price.amount, conference.price.currency) == (2575, "DKK")
    assert conference.price.vat_note == "ekskl. moms"  # "+ moms" in the announcement
    assert conference.terms == TERMS
    assert conference.audience == AUDIENCE
    assert conference.what_to_bring is None
    assert conference.contact_email == "arrangementsinfo@kl.dk"
    assert conference.contact_phone is None
    assert (conference.organiser.name, conference.organiser.email) == (
        "KL",
        "arrangementsinfo@kl.dk",
    )


def _parts(conf: Conference, renderer: Renderer, kind: Kind) -> dict[str, str]:
    """Every part of the composed mail as a reader's program decodes it, by content type;
    the invite unfolded and unescaped."""
    data = compose(sample_notice(kind, conf), conf, renderer, now=SAMPLE_NOW).data
    msg = message_from_bytes(data, policy=policy.default)
    assert isinstance(msg, EmailMessage)
    parts = {"subject": str(msg["Subject"])}
    for part in msg.walk():
        if part.is_multipart():
            continue
        content = part.get_content()
        text = content.decode("utf-8") if isinstance(content, bytes) else content
        if part.get_content_type() in ("text/calendar", "application/ics"):
            text = re.sub(r"\\([,;\\])", r"\1", text.replace("\r\n ", ""))
        parts[part.get_content_type()] = text
    return parts


@pytest.mark.parametrize("kind", list(Kind))
def test_no_mail_says_a_removed_text(
    renderer: Renderer, conference: Conference, kind: Kind
) -> None:
    for name, text in _parts(conference, renderer, kind).items():
        for word in REMOVED:
            assert word not in text, f"{kind} {name}: {word!r}"


@pytest.mark.parametrize("kind", [Kind.CONFIRMATION, Kind.SUBSTITUTION_IN])
def test_the_announced_terms_are_in_the_mail(
    renderer: Renderer, conference: Conference, kind: Kind
) -> None:
    parts = _parts(conference, renderer, kind)
    assert TERMS in parts["text/plain"]
    assert TERMS in parts["text/html"]
    assert f"2.575{NBSP}kr. ekskl. moms" in parts["text/plain"]


def _text_headings(text: str) -> list[tuple[str, str]]:
    """(heading, the line after it) for every section heading (a line in capitals)."""
    lines = text.splitlines()
    return [
        (line, lines[i + 1] if i + 1 < len(lines) else "")
        for i, line in enumerate(lines)
        if line.isupper() and len(line) > 2
    ]


_HTML_SECTION = re.compile(r"<h2[^>]*>([^<]*)</h2>\s*<(p|dl|ul)\b[^>]*>(.*?)</\2>", re.DOTALL)


def _html_headings(html: str) -> list[tuple[str, str]]:
    """(heading, the text of the block after it) for every <h2>: a paragraph, or a list
    (<dl>, <ul>) with the text of all its items, which is empty when it has none."""
    found = _HTML_SECTION.findall(html)
    assert len(found) == html.count("<h2"), "a heading not followed by a paragraph or list"
    return [(heading, re.sub(r"<[^>]*>", "", body).strip()) for heading, _tag, body in found]


def _with_optional_texts(conf: Conference) -> Conference:
    venue = conf.venue.model_copy(update={"transit": "Nærmeste metro: Frederiksberg St."})
    return conf.model_copy(update={"what_to_bring": BRING, "venue": venue})


@pytest.mark.parametrize("with_bring", [False, True], ids=["shipped", "with-what-to-bring"])
@pytest.mark.parametrize("kind", list(Kind))
def test_a_section_without_text_is_left_out(
    renderer: Renderer, conference: Conference, kind: Kind, with_bring: bool
) -> None:
    conf = _with_optional_texts(conference) if with_bring else conference
    parts = _parts(conf, renderer, kind)
    assert "\n\n\n" not in parts["text/plain"]  # nor does it leave its blank lines behind
    text_headings = _text_headings(parts["text/plain"])
    html_headings = _html_headings(parts["text/html"])
    assert [h for h, after in text_headings if not after.strip()] == []
    assert [h for h, after in html_headings if not after] == []
    says_bring = kind in (Kind.CONFIRMATION, Kind.SUBSTITUTION_IN, Kind.REMINDER) and with_bring
    headings = {h for h, _ in text_headings} | {h.upper() for h, _ in html_headings}
    assert bool(headings & {"PRAKTISK INFORMATION", "HUSK"}) is says_bring
    assert (BRING in parts["text/plain"]) is says_bring
    assert (BRING in parts["text/html"]) is says_bring
