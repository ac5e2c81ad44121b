"""Rendering: golden files per kind, exact subjects, accessible HTML, escaping, strictness.

Rewrite the golden files with UPDATE_GOLDEN=1 and read the diff before committing it.
"""

from __future__ import annotations

import re
from dataclasses import replace
from datetime import time
from html.parser import HTMLParser
from pathlib import Path

import jinja2
import pytest

from notifier.domain.conference import Conference
from notifier.domain.notice import Kind, Notice, Person
from notifier.loading import template_loader
from notifier.mail.render import Rendered, Renderer, conference_facts, notice_context
from notifier.mail.samples import METTE, sample_notice
from tests.unit.support import Golden

NBSP = "\u00a0"
TITLE = "Kommunernes Digitaliseringstræf '24"
DATE = "mandag den 22. april 2024"


def render(renderer: Renderer, notice: Notice, conf: Conference) -> Rendered:
    return renderer.render(
        notice.kind.value, notice_context(notice, conference_facts(conf), conf.tz)
    )


def render_kind(renderer: Renderer, kind: Kind, conf: Conference) -> Rendered:
    return render(renderer, sample_notice(kind, conf), conf)


@pytest.mark.parametrize("kind", list(Kind))
def test_golden(renderer: Renderer, conference: Conference, golden: Golden, kind: Kind) -> None:
    out = render_kind(renderer, kind, conference)
    golden.check(f"{kind}.subject", out.subject + "\n")
    golden.check(f"{kind}.txt", out.text)
    golden.check(f"{kind}.html", out.html)


def test_golden_confirmation_with_times(
    renderer: Renderer, timed_conference: Conference, golden: Golden
) -> None:
    out = render_kind(renderer, Kind.CONFIRMATION, timed_conference)
    golden.check("confirmation-timed.subject", out.subject + "\n")
    golden.check("confirmation-timed.txt", out.text)
    golden.check("confirmation-timed.html", out.html)


def test_golden_substitution_in_when_the_seat_came_back(
    renderer: Renderer, conference: Conference, golden: Golden
) -> None:
    notice = replace(sample_notice(Kind.SUBSTITUTION_IN, conference), from_colleague=False)
    out = render(renderer, notice, conference)
    golden.check("substitution_in-came-back.subject", out.subject + "\n")
    golden.check("substitution_in-came-back.txt", out.text)
    golden.check("substitution_in-came-back.html", out.html)


def test_golden_reminder_with_changes(
    renderer: Renderer, conference: Conference, golden: Golden
) -> None:
    """The reminder to someone whose invite still said 9.00–16.00: its "Bemærk" section."""
    earlier = replace(conference.invite_facts, start=time(9), end=time(16))
    notice = replace(sample_notice(Kind.REMINDER, conference), changed_from=earlier.text("REQUEST"))
    out = render(renderer, notice, conference)
    golden.check("reminder-changed.txt", out.text)
    golden.check("reminder-changed.html", out.html)


def test_golden_conference_cancellation_with_a_note(
    renderer: Renderer, conference: Conference, golden: Golden
) -> None:
    note = "Vi vender tilbage med en ny dato.\n\nHar du betalt, hører du fra os om betalingen."
    conf = conference.model_copy(update={"cancelled": True, "cancellation_note": note})
    out = render_kind(renderer, Kind.CONFERENCE_CANCELLATION, conf)
    golden.check("conference_cancellation-note.txt", out.text)
    golden.check("conference_cancellation-note.html", out.html)


@pytest.mark.parametrize(
    ("kind", "subject"),
    [
        (Kind.CONFIRMATION, f"Bekræftelse af tilmelding: {TITLE} {DATE}"),
        (Kind.REMINDER, f"Påmindelse: {TITLE} {DATE}"),
        (Kind.SUBSTITUTION_OUT, f"Deltagerskift: Din plads til {TITLE} er overdraget"),
        (Kind.SUBSTITUTION_IN, f"Deltagerskift: Du er nu tilmeldt {TITLE}"),
    ],
)
def test_subject(renderer: Renderer, conference: Conference, kind: Kind, subject: str) -> None:
    assert render_kind(renderer, kind, conference).subject == subject


@pytest.mark.parametrize("kind", [k for k in Kind if k != Kind.SUBSTITUTION_COPY])
def test_text_greets_and_signs_off(renderer: Renderer, conference: Conference, kind: Kind) -> None:
    notice = sample_notice(kind, conference)
    out = render(renderer, notice, conference)
    assert out.text.startswith(f"Kære {notice.recipient.name}\n\n")
    assert "\nMed venlig hilsen\nKL\n" in out.text


def test_organiser_copy_is_short_and_not_addressed_to_itself(
    renderer: Renderer, conference: Conference
) -> None:
    out = render_kind(renderer, Kind.SUBSTITUTION_COPY, conference)
    assert out.text.startswith("Kopi til arrangøren: Mette Sørensen har overdraget sin plads")
    # It names the event, its date and venue like every other mail.
    assert "Hvad:    Kommunernes Digitaliseringstræf '24" in out.text
    assert "Scandic Falkoner" in out.text and "22. april 2024" in out.text
    # What the substitution sends, and nothing that was not sent.
    assert "- Mette Sørensen: besked om, at pladsen er overdraget" in out.text
    assert "- Jens Ødegaard: en bekræftelse med sin egen kalenderinvitation" in out.text
    assert "har fået" not in out.text
    assert "Kære" not in out.text and "Kære" not in out.html
    assert "KONTAKT" not in out.text and ">Kontakt<" not in out.html


@pytest.mark.parametrize("kind", [k for k in Kind if k != Kind.SUBSTITUTION_COPY])
def test_attendee_mails_link_the_privacy_policy(
    renderer: Renderer, conference: Conference, kind: Kind
) -> None:
    out = render_kind(renderer, kind, conference)
    assert "https://www.kl.dk/om-kl/privatlivspolitik" in out.text
    assert 'href="https://www.kl.dk/om-kl/privatlivspolitik"' in out.html


def _blank_line_problems(text: str) -> list[str]:
    problems = [
        f"line {n}: trailing space"
        for n, line in enumerate(text.splitlines(), 1)
        if line != line.rstrip() and line != "-- "  # "-- " is the signature delimiter
    ]
    if "\n\n\n" in text:
        problems.append("two blank lines in a row")
    if not text.endswith("\n") or text.endswith("\n\n"):
        problems.append("must end with exactly one newline")
    return problems


def _minimal(conf: Conference) -> Conference:
    """The conference without its optional facts (what to bring, transit), with a phone."""
    venue = conf.venue.model_copy(update={"transit": None})
    update = {"what_to_bring": None, "venue": venue, "contact_phone": "+45 33 70 33 70"}
    return conf.model_copy(update=update)


@pytest.mark.parametrize("minimal", [False, True], ids=["shipped", "minimal"])
@pytest.mark.parametrize("kind", list(Kind))
def test_text_blank_line_hygiene(
    renderer: Renderer, conference: Conference, kind: Kind, minimal: bool
) -> None:
    conf = _minimal(conference) if minimal else conference
    assert _blank_line_problems(render_kind(renderer, kind, conf).text) == []


@pytest.mark.parametrize("kind", [Kind.CONFIRMATION, Kind.SUBSTITUTION_IN])
def test_text_part_carries_every_fact(
    renderer: Renderer, conference: Conference, kind: Kind
) -> None:
    text = render_kind(renderer, kind, conference).text
    for fact in (
        "Mandag den 22. april 2024",
        "Scandic Falkoner, Falkoner Allé 9, 2000 Frederiksberg",
        f"2.575{NBSP}kr. ekskl. moms",
        "Tilmeldingen er bindende, men er du forhindret i at deltage",
        "arrangementsinfo@kl.dk",
        "https://www.kl.dk/om-kl/privatlivspolitik",
        "REG-1001",
    ):
        assert fact in text, fact


def test_times_appear_when_configured(renderer: Renderer, timed_conference: Conference) -> None:
    out = render_kind(renderer, Kind.CONFIRMATION, timed_conference)
    assert f"Mandag den 22. april 2024, kl.{NBSP}9.00–16.00" in out.text
    assert f"Mandag den 22. april 2024, kl.{NBSP}9.00–16.00" in out.html
    assert NOT_ANNOUNCED not in out.text


NOT_ANNOUNCED = "(tidspunktet er ikke meldt ud endnu)"


@pytest.mark.parametrize("kind", list(Kind))
def test_without_times_no_mail_says_all_day(
    renderer: Renderer, conference: Conference, kind: Kind
) -> None:
    """No time was announced: a mail says so rather than "hele dagen" (all day), and a
    conference called off needs no time at all."""
    out = render_kind(renderer, kind, conference)
    for part in (out.text, out.html, out.invite_text):
        assert "hele dagen" not in part
    says = kind != Kind.CONFERENCE_CANCELLATION
    assert (f"Mandag den 22. april 2024 {NOT_ANNOUNCED}" in out.text) is says
    assert (f"Mandag den 22. april 2024 {NOT_ANNOUNCED}" in out.html) is says
    assert f"Mandag den 22. april 2024 {NOT_ANNOUNCED}" in out.invite_text


def test_a_cancelled_conference_gives_its_date_alone(
    renderer: Renderer, conference: Conference
) -> None:
    called_off = conference.model_copy(update={"cancelled": True})
    out = render_kind(renderer, Kind.CONFERENCE_CANCELLATION, called_off)
    assert "Hvornår: Mandag den 22. april 2024\n" in out.text
    assert NOT_ANNOUNCED not in out.text + out.html + out.invite_text


def test_new_attendee_gets_the_article_14_information(
    renderer: Renderer, conference: Conference
) -> None:
    text = render_kind(renderer, Kind.SUBSTITUTION_IN, conference).text
    items = [
        "Dataansvarlig: KL.",
        "Databeskyttelsesrådgiver:",
        "Formål:",
        "Retsgrundlag:",
        "Oplysninger:",
        "Kilde: Mette Sørensen",
        "Modtagere:",
        "Opbevaring:",
        "Dine rettigheder:",
        "Datatilsynet",
    ]
    for item in items:
        assert item in text, item


def test_invite_text_separates_when_and_where(renderer: Renderer, conference: Conference) -> None:
    venue = conference.venue.model_copy(update={"transit": "Nærmeste metro: Frederiksberg St."})
    conf = conference.model_copy(update={"venue": venue})
    text = render_kind(renderer, Kind.CONFIRMATION, conf).invite_text
    assert text.split("\n\n")[:2] == [
        f"{TITLE}\nMandag den 22. april 2024 {NOT_ANNOUNCED}",
        "Scandic Falkoner, Falkoner Allé 9, 2000 Frederiksberg\nNærmeste metro: Frederiksberg St.",
    ]


class Structure(HTMLParser):
    """What the accessibility checks need to know about an HTML document."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.title = ""
        self._in_title = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))
        self._in_title = tag == "title"

    def handle_endtag(self, tag: str) -> None:
        self._in_title = False

    def handle_data(self, data: str) -> None:
        if self._in_title:
            self.title += data

    def all(self, tag: str) -> list[dict[str, str | None]]:
        return [attrs for name, attrs in self.tags if name == tag]


def _structure(html: str) -> Structure:
    parser = Structure()
    parser.feed(html)
    parser.close()
    return parser


@pytest.mark.parametrize("kind", list(Kind))
def test_html_is_accessible(renderer: Renderer, conference: Conference, kind: Kind) -> None:
    doc = _structure(render_kind(renderer, kind, conference).html)
    assert len(doc.all("h1")) == 1
    assert [a.get("lang") for a in doc.all("html")] == ["da"]
    assert any(a.get("lang") == "da" for a in doc.all("div"))
    assert doc.all("table"), "layout table expected"
    assert all(a.get("role") == "presentation" for a in doc.all("table"))
    assert doc.title.strip()
    assert not doc.all("img") or all(a.get("alt") is not None for a in doc.all("img"))


def test_html_says_the_same_danish_things(renderer: Renderer, conference: Conference) -> None:
    html = render_kind(renderer, Kind.CONFIRMATION, conference).html
    for text in ("Kære Mette Sørensen", "Med venlig hilsen<br>KL", f"2.575{NBSP}kr. ekskl. moms"):
        assert text in html, text


HOSTILE = '<script>alert(1)</script> & "x"'


def test_html_escapes_and_text_keeps_names(renderer: Renderer, conference: Conference) -> None:
    notice = replace(
        sample_notice(Kind.CONFIRMATION, conference), recipient=replace(METTE, name=HOSTILE)
    )
    out = render(renderer, notice, conference)
    assert "<script>" not in out.html
    assert "Kære &lt;script&gt;alert(1)&lt;/script&gt; &amp; &#34;x&#34;" in out.html
    assert f"Kære {HOSTILE}\n" in out.text


def test_copy_to_organiser_escapes_both_people(renderer: Renderer, conference: Conference) -> None:
    notice = replace(
        sample_notice(Kind.SUBSTITUTION_COPY, conference),
        successor=Person(HOSTILE, "jens.odegaard@aarhus.dk"),
    )
    out = render(renderer, notice, conference)
    assert "<script>" not in out.html
    assert "Til</dt>" in out.html and "&lt;script&gt;alert(1)&lt;/script&gt; &amp;" in out.html
    assert HOSTILE in out.text


TEMPLATE_FILES = ("x/subject.txt", "x/body.txt", "x/body.html", "_invite.txt")


@pytest.mark.parametrize("broken", TEMPLATE_FILES)
@pytest.mark.parametrize("reference", ["{{ no_such_variable }}", "{{ c.no_such_fact }}"])
def test_undefined_variable_raises(
    tmp_path: Path, conference: Conference, broken: str, reference: str
) -> None:
    for name in TEMPLATE_FILES:
        path = tmp_path / name
        path.parent.mkdir(exist_ok=True)
        path.write_text(reference if name == broken else "{{ c.title }}", encoding="utf-8")
    notice = sample_notice(Kind.CONFIRMATION, conference)
    context = notice_context(notice, conference_facts(conference), conference.tz)
    with pytest.raises(jinja2.UndefinedError):
        Renderer(template_loader(tmp_path)).render("x", context)


def test_subject_is_one_line(renderer: Renderer, conference: Conference) -> None:
    for kind in Kind:
        subject = render_kind(renderer, kind, conference).subject
        assert re.fullmatch(r"\S.*\S", subject), subject
