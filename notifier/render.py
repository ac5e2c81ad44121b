"""Templates to text: subject, plain text and HTML for one notice.

The Jinja2 environment and each conference's formatted facts are built once per process
and reused for every mail (see `renderer()` and `conference_facts()`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import tzinfo
from functools import lru_cache
from pathlib import Path
from typing import Any

import jinja2

from notifier import danish
from notifier.conference import Conference
from notifier.notice import Notice


@dataclass(frozen=True, slots=True)
class Rendered:
    subject: str
    text: str
    html: str
    invite_text: str


@dataclass(frozen=True, slots=True)
class Facts:
    """What every mail of a conference says, already formatted in Danish."""

    title: str
    organiser: str
    date: str
    time: str | None
    when: str
    venue_name: str
    venue_address: str
    location: str
    transit: str | None
    price: str
    terms: str
    what_to_bring: str | None
    contact_email: str
    contact_phone: str | None
    privacy_policy_url: str
    controller: str
    retention_days: int


@lru_cache(maxsize=32)
def conference_facts(conference: Conference) -> Facts:
    date_text = danish.long_date(conference.date)
    time_text = (
        None if conference.all_day else danish.clock_range(conference.starts_at, conference.ends_at)
    )
    return Facts(
        title=conference.title,
        organiser=conference.organiser.name,
        date=date_text,
        time=time_text,
        when=f"{date_text}, {time_text}" if time_text else date_text,
        venue_name=conference.venue.name,
        venue_address=conference.venue.address,
        location=conference.venue.location,
        transit=conference.venue.transit,
        price=f"{danish.amount(conference.price.amount, conference.price.currency)}"
        f" {conference.price.vat_note}",
        terms=conference.terms,
        what_to_bring=conference.what_to_bring,
        contact_email=str(conference.contact_email),
        contact_phone=conference.contact_phone,
        privacy_policy_url=str(conference.privacy_policy_url),
        controller=conference.controller,
        retention_days=conference.retention_days,
    )


class Renderer:
    """Renders the templates of one folder: <kind>/subject.txt, body.txt and body.html."""

    def __init__(self, folder: Path) -> None:
        self.env = jinja2.Environment(
            loader=jinja2.FileSystemLoader(folder),
            undefined=jinja2.StrictUndefined,
            autoescape=jinja2.select_autoescape(["html"], default_for_string=False),
            trim_blocks=True,
            lstrip_blocks=True,
            keep_trailing_newline=True,
            auto_reload=False,
        )
        self.env.filters["capitalise"] = danish.capitalise
        self._invite_texts: dict[Facts, str] = {}

    def render(self, kind: str, context: Mapping[str, Any]) -> Rendered:
        """Render one kind of mail.

        Raises:
            jinja2.TemplateError: a template is missing or uses an unknown variable (a bug,
                never retried as a delivery failure).
        """
        subject = self.env.get_template(f"{kind}/subject.txt").render(context)
        return Rendered(
            subject=" ".join(subject.split()),
            text=tidy(self.env.get_template(f"{kind}/body.txt").render(context)),
            html=self.env.get_template(f"{kind}/body.html").render(context),
            invite_text=self.invite_text(context["c"]),
        )

    def invite_text(self, facts: Facts) -> str:
        """The invite's DESCRIPTION: the same for every attendee, so rendered once."""
        if facts not in self._invite_texts:
            text = self.env.get_template("_invite.txt").render({"c": facts})
            self._invite_texts[facts] = tidy(text).strip()
        return self._invite_texts[facts]


def tidy(text: str) -> str:
    """Plain text as a reader expects it: no trailing blanks, never two empty lines in a row.

    Optional sections in the templates leave uneven blank lines behind; fixing that here once
    keeps the templates readable.
    """
    lines = [line.rstrip() if line != "-- " else line for line in text.splitlines()]
    return _BLANKS.sub("\n\n", "\n".join(lines)).strip("\n") + "\n"


_BLANKS = re.compile(r"\n{3,}")


@lru_cache(maxsize=8)
def renderer(folder: Path) -> Renderer:
    return Renderer(folder)


def notice_context(notice: Notice, facts: Facts, tz: tzinfo) -> dict[str, Any]:
    """The variables a template sees: the conference's facts and the notice's people."""
    happened = notice.occurred_at.astimezone(tz) if notice.occurred_at else None
    return {
        "c": facts,
        "kind": notice.kind.value,
        "recipient": notice.recipient,
        "previous": notice.previous,
        "successor": notice.successor,
        "registration_id": notice.registration_id,
        "has_invite": notice.invite is not None,
        "occurred_at": (
            f"{danish.long_date(happened)} {danish.clock(happened)}" if happened else None
        ),
    }
