"""The Danish before → now lines of what changed in an attendee's invite
(notifier.mail.changes), and the update mail that states exactly those lines.

Danish conventions (Dansk Sprognævn): "kl. 9.00" with a no-break space after "kl.", a period
between hours and minutes, no leading zero on the hour, and an en dash between two times.
"""

from __future__ import annotations

import re
from dataclasses import replace
from datetime import date, time
from html.parser import HTMLParser

import pytest

from notifier.domain.conference import Conference
from notifier.domain.facts import InviteFacts
from notifier.domain.notice import Kind
from notifier.mail.changes import Line, describe, time_text
from notifier.mail.render import Renderer, conference_facts
from notifier.mail.samples import sample_notice

NBSP = "\u00a0"
EN_DASH = "\u2013"
# "kl. 9.00–16.00": no leading zero, minutes after a period, an en dash, no spaces around it.
HOUR = r"(?:[1-9]|1\d|2[0-3]|0)\.[0-5]\d"
DANISH_RANGE = re.compile(rf"kl\.{NBSP}{HOUR}{EN_DASH}{HOUR}")

ALL_DAY = InviteFacts(
    summary="Kommunernes Digitaliseringstræf '24",
    date=date(2024, 4, 22),
    start=None,
    end=None,
    timezone="Europe/Copenhagen",
    venue="Scandic Falkoner",
    address="Falkoner Allé 9, 2000 Frederiksberg",
)
NINE_TO_FOUR = replace(ALL_DAY, start=time(9), end=time(16))


def lines(before: InviteFacts, after: InviteFacts) -> tuple[Line, ...]:
    return describe(before.text("REQUEST"), after)


def shown(found: tuple[Line, ...]) -> list[str]:
    return [f"{line.label}: {line.before} → {line.after}" for line in found]


def test_no_lines_without_a_before() -> None:
    assert describe(None, ALL_DAY) == ()


@pytest.mark.parametrize("facts", [ALL_DAY, NINE_TO_FOUR], ids=["all-day", "timed"])
def test_no_lines_when_the_facts_are_equal(facts: InviteFacts) -> None:
    assert describe(facts.text("REQUEST"), facts) == ()
    # The method is not a fact the attendee reads: a withdrawn invite sent again has no lines.
    assert describe(facts.text("CANCEL"), facts) == ()


@pytest.mark.parametrize(
    ("before", "after", "expected"),
    [
        (
            ALL_DAY,
            replace(ALL_DAY, summary="Digitaliseringstræf 2024"),
            "Titel: Kommunernes Digitaliseringstræf '24 → Digitaliseringstræf 2024",
        ),
        (
            ALL_DAY,
            replace(ALL_DAY, date=date(2024, 5, 7)),
            "Dato: mandag den 22. april 2024 → tirsdag den 7. maj 2024",
        ),
        (ALL_DAY, NINE_TO_FOUR, f"Tid: ikke meldt ud → kl.{NBSP}9.00–16.00"),
        (NINE_TO_FOUR, ALL_DAY, f"Tid: kl.{NBSP}9.00–16.00 → ikke meldt ud"),
        (
            NINE_TO_FOUR,
            replace(NINE_TO_FOUR, start=time(10)),
            f"Tid: kl.{NBSP}9.00–16.00 → kl.{NBSP}10.00–16.00",
        ),
        (
            NINE_TO_FOUR,
            replace(NINE_TO_FOUR, start=time(8, 30), end=time(15, 5)),
            f"Tid: kl.{NBSP}9.00–16.00 → kl.{NBSP}8.30–15.05",
        ),
        (
            ALL_DAY,
            replace(
                ALL_DAY, venue="Tivoli Hotel", address="Arni Magnussons Gade 2, 1577 København V"
            ),
            "Sted: Scandic Falkoner, Falkoner Allé 9, 2000 Frederiksberg"
            " → Tivoli Hotel, Arni Magnussons Gade 2, 1577 København V",
        ),
        (
            ALL_DAY,
            replace(ALL_DAY, address="Falkoner Allé 7, 2000 Frederiksberg"),
            "Sted: Scandic Falkoner, Falkoner Allé 9, 2000 Frederiksberg"
            " → Scandic Falkoner, Falkoner Allé 7, 2000 Frederiksberg",
        ),
        (replace(ALL_DAY, cancelled=True), ALL_DAY, "Status: aflyst → gennemføres"),
        (ALL_DAY, replace(ALL_DAY, cancelled=True), "Status: gennemføres → aflyst"),
    ],
    ids=[
        "title",
        "date",
        "all-day-to-timed",
        "timed-to-all-day",
        "start-later",
        "minutes",
        "venue",
        "address",
        "reinstated",
        "cancelled",
    ],
)
def test_each_aspect(before: InviteFacts, after: InviteFacts, expected: str) -> None:
    assert shown(lines(before, after)) == [expected]


def test_several_changes_in_reading_order() -> None:
    """Status first (whether to come at all), then what, when and where: the order of the
    facts block below the list."""
    before = replace(NINE_TO_FOUR, cancelled=True)
    after = replace(
        NINE_TO_FOUR,
        summary="Digitaliseringstræf 2024",
        date=date(2024, 5, 7),
        start=time(10),
        venue="Tivoli Hotel",
        address="Arni Magnussons Gade 2, 1577 København V",
    )
    found = lines(before, after)
    assert [line.label for line in found] == ["Status", "Titel", "Dato", "Tid", "Sted"]
    assert [line.aspect for line in found] == ["status", "summary", "date", "time", "location"]
    # Date and time are told apart: the time line gives the times only.
    assert found[3].before == f"kl.{NBSP}9.00–16.00"
    assert found[3].after == f"kl.{NBSP}10.00–16.00"


def test_a_change_of_time_zone_alone_names_the_zones() -> None:
    """The same clock times in another zone are another moment; a line that read
    "kl. 9.00–16.00 → kl. 9.00–16.00" would claim a change it does not show."""
    after = replace(NINE_TO_FOUR, timezone="Europe/London")
    assert shown(lines(NINE_TO_FOUR, after)) == [
        f"Tid: kl.{NBSP}9.00–16.00 (Europe/Copenhagen) → kl.{NBSP}9.00–16.00 (Europe/London)"
    ]


@pytest.mark.parametrize(
    ("start", "end", "expected"),
    [
        (time(9), time(16), f"kl.{NBSP}9.00–16.00"),
        (time(8, 5), time(9, 45), f"kl.{NBSP}8.05–9.45"),
        (time(0, 30), time(23, 59), f"kl.{NBSP}0.30–23.59"),
    ],
)
def test_times_follow_danish_conventions(start: time, end: time, expected: str) -> None:
    text = time_text(replace(ALL_DAY, start=start, end=end))
    assert text == expected
    assert ":" not in text and "-" not in text and " " not in text  # no colon, hyphen, space


def test_the_danish_range_pattern_rejects_what_it_should() -> None:
    """The pattern the mail tests use is itself checked against the usual mistakes."""
    assert DANISH_RANGE.fullmatch(f"kl.{NBSP}9.00–16.00")
    for wrong in (
        f"kl.{NBSP}09.00–16.00",  # leading zero
        f"kl.{NBSP}9:00–16:00",  # colon
        f"kl.{NBSP}9.00-16.00",  # hyphen
        "kl. 9.00–16.00",  # a breakable space
        f"kl.{NBSP}9.00 – 16.00",  # spaced dash
    ):
        assert not DANISH_RANGE.fullmatch(wrong), wrong


# -- the update mail states exactly the lines ------------------------------------------------

HOSTILE_TITLE = 'Træf <b>"24"</b> & co'


class Items(HTMLParser):
    """The visible text of every <li> in the HTML, and of the <h2> headings."""

    def __init__(self) -> None:
        super().__init__()
        self.items: list[str] = []
        self.headings: list[str] = []
        self._into: list[str] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in ("li", "h2"):
            self._into = self.items if tag == "li" else self.headings
            self._into.append("")

    def handle_endtag(self, tag: str) -> None:
        if tag in ("li", "h2"):
            self._into = None

    def handle_data(self, data: str) -> None:
        if self._into is not None:
            self._into[-1] += data


def items(html: str) -> Items:
    parser = Items()
    parser.feed(html)
    parser.close()
    return parser


def text_section(text: str, heading: str) -> list[str]:
    """The lines under a capitalised heading of the text part, up to the next blank line."""
    after = text.split(f"\n{heading}\n", 1)[1]
    return after.split("\n\n", 1)[0].splitlines()


def before_and_now(conference: Conference) -> tuple[Conference, Conference]:
    """The conference as the attendee's invite had it, and after an edit of its title, date,
    time and venue (with characters HTML must escape in the old title)."""
    before = conference.model_copy(update={"title": HOSTILE_TITLE})
    venue = conference.venue.model_copy(
        update={"name": "Tivoli Hotel", "street": "Arni Magnussons Gade 2", "postcode": "1577"}
    )
    now = conference.model_copy(
        update={
            "date": date(2024, 5, 7),
            "start_time": time(10),
            "end_time": time(16),
            "venue": venue,
        }
    )
    return before, now


EXPECTED_LINES = [
    f"Titel: {HOSTILE_TITLE} → Kommunernes Digitaliseringstræf '24",
    "Dato: mandag den 22. april 2024 → tirsdag den 7. maj 2024",
    f"Tid: ikke meldt ud → kl.{NBSP}10.00–16.00",
    "Sted: Scandic Falkoner, Falkoner Allé 9, 2000 Frederiksberg"
    " → Tivoli Hotel, Arni Magnussons Gade 2, 1577 Frederiksberg",
]


def test_an_update_mail_states_exactly_the_lines(
    renderer: Renderer, conference: Conference
) -> None:
    before, now = before_and_now(conference)
    notice = replace(
        sample_notice(Kind.UPDATE, now), changed_from=before.invite_facts.text("REQUEST")
    )
    out = renderer.render_notice(notice, conference_facts(now), now.tz)
    assert text_section(out.text, "HVAD ER ÆNDRET") == EXPECTED_LINES
    html = items(out.html)
    assert html.items == EXPECTED_LINES  # the facts block is a <dl>: these are all the items
    assert "Hvad er ændret" in html.headings
    # The old title is text, never markup.
    assert "<b>" not in out.html
    assert "Træf &lt;b&gt;&#34;24&#34;&lt;/b&gt; &amp; co" in out.html
    assert f"{HOSTILE_TITLE} →" in out.text
    # Every time the mail gives is written the Danish way.
    for text in (out.text, "\n".join(html.items)):
        clock_times = re.findall(r"\bkl\.\s\S*", text)  # "kl." before any space, not kl.dk
        assert clock_times == [f"kl.{NBSP}10.00–16.00"] * len(clock_times)
        assert all(DANISH_RANGE.fullmatch(t) for t in clock_times)


def test_an_update_with_nothing_to_list_has_no_empty_list(
    renderer: Renderer, conference: Conference
) -> None:
    """An invite withdrawn earlier (its last mail was a CANCEL with the same facts) is sent
    again as an update: the mail then lists no changes and claims none."""
    notice = replace(
        sample_notice(Kind.UPDATE, conference), changed_from=conference.invite_facts.text("CANCEL")
    )
    out = renderer.render_notice(notice, conference_facts(conference), conference.tz)
    assert "HVAD ER ÆNDRET" not in out.text and "Hvad er ændret" not in out.html
    assert "<ul" not in out.html and "→" not in out.text
    assert "ændringer" not in out.text
    assert "Her er din kalenderinvitation til Kommunernes Digitaliseringstræf '24 igen" in out.text


def test_a_reinstated_conference_says_so(renderer: Renderer, conference: Conference) -> None:
    cancelled = conference.model_copy(update={"cancelled": True})
    notice = replace(
        sample_notice(Kind.UPDATE, conference), changed_from=cancelled.invite_facts.text("CANCEL")
    )
    out = renderer.render_notice(notice, conference_facts(conference), conference.tz)
    assert text_section(out.text, "HVAD ER ÆNDRET") == ["Status: aflyst → gennemføres"]
    assert items(out.html).items == ["Status: aflyst → gennemføres"]
    for text in (out.text, out.html):
        assert "bliver alligevel afholdt" in text
        # "still valid" would contradict the cancellation the attendee was sent.
        assert "gælder stadig" not in text
