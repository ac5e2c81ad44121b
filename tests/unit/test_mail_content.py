"""What every mail says: each attendee mail names the event, its Danish date, the venue and
the time when one is set, and no mail gives a contact address or a link twice.

Every kind is rendered as it is sent (`Renderer.render_notice`), for the shipped conference,
with times announced and with a telephone number, and both parts are read: the text part as
it is, the HTML part as a reader sees it (visible text and link targets).
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import replace
from datetime import time
from html.parser import HTMLParser

import pytest

from notifier.domain.conference import Conference
from notifier.domain.notice import Kind, Notice
from notifier.mail.changes import describe
from notifier.mail.render import Rendered, Renderer, conference_facts
from notifier.mail.samples import JENS, METTE, sample_notice

NBSP = "\u00a0"
TITLE = "Kommunernes Digitaliseringstræf '24"
DATE = "mandag den 22. april 2024"
VENUE = "Scandic Falkoner"
ADDRESS = "Falkoner Allé 9, 2000 Frederiksberg"
TIME = f"kl.{NBSP}9.00–16.00"
CONTACT = "arrangementsinfo@kl.dk"
PRIVACY = "https://www.kl.dk/om-kl/privatlivspolitik"
DATATILSYNET = "https://www.datatilsynet.dk"
PHONE = "+45 33 70 33 70"
NOT_ANNOUNCED = "(tidspunktet er ikke meldt ud endnu)"

ATTENDEE_KINDS = [k for k in Kind if k != Kind.SUBSTITUTION_COPY]

EMAIL = re.compile(r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+")
# A URL, or a www. address written without its scheme (not the www. inside a URL).
URL = re.compile(r"(?<![/\w.])(?:https?://|www\.)[^\s()<>\"]+")


class Visible(HTMLParser):
    """The HTML as a reader sees it: the text of the body, and where its links go."""

    def __init__(self) -> None:
        super().__init__()
        self.text: list[str] = []
        self.links: list[str] = []
        self._in_body = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self._in_body = self._in_body or tag == "body"
        if tag == "a":
            self.links += [v for k, v in attrs if k == "href" and v]

    def handle_data(self, data: str) -> None:
        if self._in_body:
            self.text.append(data)


def visible(html: str) -> tuple[str, list[str]]:
    parser = Visible()
    parser.feed(html)
    parser.close()
    return "".join(parser.text), parser.links


def addresses(text: str) -> Counter[str]:
    """Every mail address and URL the text gives, with how often."""
    urls = [u.rstrip(".,;:") for u in URL.findall(text)]
    return Counter(EMAIL.findall(text)) + Counter(urls)


CONFERENCE_VARIANTS: dict[str, dict[str, object]] = {
    "all-day": {},
    "timed": {"start_time": time(9, 0), "end_time": time(16, 0)},
    "phone": {"contact_phone": PHONE},
}


@pytest.fixture(params=list(CONFERENCE_VARIANTS))
def conf(request: pytest.FixtureRequest, conference: Conference) -> Conference:
    return conference.model_copy(update=CONFERENCE_VARIANTS[request.param])


def sent(renderer: Renderer, notice: Notice, conf: Conference) -> Rendered:
    return renderer.render_notice(notice, conference_facts(conf), conf.tz)


def expected_text_addresses(kind: Kind) -> Counter[str]:
    if kind == Kind.SUBSTITUTION_COPY:  # to the organiser: the two people, no contact line
        return Counter([METTE.email, JENS.email])
    if kind == Kind.SUBSTITUTION_IN:  # the privacy notice, which names the supervisory body
        return Counter([CONTACT, PRIVACY, "www.datatilsynet.dk"])
    return Counter([CONTACT, PRIVACY])


def expected_links(kind: Kind) -> Counter[str]:
    if kind == Kind.SUBSTITUTION_COPY:
        return Counter()
    if kind == Kind.SUBSTITUTION_IN:
        return Counter([f"mailto:{CONTACT}", PRIVACY, DATATILSYNET])
    return Counter([f"mailto:{CONTACT}", PRIVACY])


@pytest.mark.parametrize("kind", list(Kind))
def test_every_address_and_link_is_given_once(
    renderer: Renderer, conf: Conference, kind: Kind
) -> None:
    out = sent(renderer, sample_notice(kind, conf), conf)
    html_text, links = visible(out.html)
    assert addresses(out.text) == expected_text_addresses(kind)
    assert Counter(links) == expected_links(kind)
    # In the HTML the contact address is the text of its mailto link, once.
    html_emails = Counter(EMAIL.findall(html_text))
    assert html_emails == expected_text_addresses(kind) - Counter([PRIVACY, "www.datatilsynet.dk"])
    phones = 1 if conf.contact_phone and kind != Kind.SUBSTITUTION_COPY else 0
    assert (out.text.count(PHONE), html_text.count(PHONE)) == (phones, phones)


def _said(fact: str, text: str) -> int:
    """How often the text says it, also at the start of a sentence (capitalised)."""
    return text.count(fact) + (text.count(fact[0].upper() + fact[1:]) if fact[0].islower() else 0)


def without_changes(text: str, notice: Notice, conf: Conference) -> str:
    """The text without its before → now lines (an update's list of what changed), each
    of which it must give exactly once: they name the old time as well as the new one."""
    for line in describe(notice.changed_from, conf.invite_facts):
        said = f"{line.label}: {line.before} → {line.after}"
        assert text.count(said) == 1, said
        text = text.replace(said, "")
    return text


@pytest.mark.parametrize("kind", ATTENDEE_KINDS)
def test_every_attendee_mail_says_what_when_and_where(
    renderer: Renderer, conf: Conference, kind: Kind
) -> None:
    notice = sample_notice(kind, conf)
    out = sent(renderer, notice, conf)
    html_text, _ = visible(out.html)
    for part, said in (("text", out.text), ("html", html_text)):
        text = without_changes(said, notice, conf)
        for fact in (TITLE, DATE, f"{VENUE}, {ADDRESS}"):
            assert _said(fact, text) >= 1, f"{kind} {part}: {fact}"
        assert text.count(TIME) == (1 if conf.start_time else 0), f"{kind} {part}: time"
        # No time announced: the mail says so (a conference called off needs none), never
        # "hele dagen" (all day), which nobody announced.
        not_announced = conf.start_time is None and kind != Kind.CONFERENCE_CANCELLATION
        assert text.count(NOT_ANNOUNCED) == (1 if not_announced else 0), f"{kind} {part}"
        assert "hele dagen" not in text, f"{kind} {part}: all day"


def test_the_organiser_copy_names_the_event(renderer: Renderer, conf: Conference) -> None:
    out = sent(renderer, sample_notice(Kind.SUBSTITUTION_COPY, conf), conf)
    assert TITLE in out.text and TITLE in visible(out.html)[0]


@pytest.mark.parametrize("kind", [Kind.CANCELLATION, Kind.SUBSTITUTION_OUT])
def test_the_one_who_leaves_gets_no_directions(
    renderer: Renderer, conference: Conference, kind: Kind
) -> None:
    venue = conference.venue.model_copy(update={"transit": "Nærmeste metro: Frederiksberg St."})
    conf = conference.model_copy(update={"venue": venue})
    out = sent(renderer, sample_notice(kind, conf), conf)
    assert "Nærmeste metro" not in out.text
    assert "Nærmeste metro" not in out.html


def came_back(renderer: Renderer, conf: Conference) -> Rendered:
    """The substitution_in mail when the seat came back to the one who registered it first."""
    notice = replace(sample_notice(Kind.SUBSTITUTION_IN, conf), from_colleague=False)
    return sent(renderer, notice, conf)


def test_a_seat_that_came_back_carries_no_privacy_notice(
    renderer: Renderer, conf: Conference
) -> None:
    out = came_back(renderer, conf)
    html_text, links = visible(out.html)
    assert addresses(out.text) == Counter([CONTACT, PRIVACY])
    assert Counter(links) == Counter([f"mailto:{CONTACT}", PRIVACY])
    for text in (out.text, html_text):
        assert "Dataansvarlig" not in text and "Datatilsynet" not in text
        assert "Mette Sørensen (Aarhus Kommune) har givet pladsen til" in text
        assert "Du er igen tilmeldt" in text
        assert "Sådan behandler vi dine personoplysninger" in text  # the footer's link


def test_a_colleague_gets_the_privacy_notice_instead_of_the_footer(
    renderer: Renderer, conf: Conference
) -> None:
    out = sent(renderer, sample_notice(Kind.SUBSTITUTION_IN, conf), conf)
    for text in (out.text, visible(out.html)[0]):
        assert "Vi har ikke fået oplysningerne om dig fra dig selv." in text
        assert "Kilde: Mette Sørensen (Aarhus Kommune), som har overdraget sin plads" in text
        assert "Dataansvarlig: KL. Kontakt: se adressen under" in text
        assert "Sådan behandler vi dine personoplysninger" not in text
