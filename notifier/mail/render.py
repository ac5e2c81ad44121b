"""Templates to text: subject, plain text and HTML for one notice.

The Jinja2 environment and each conference's formatted facts are built once per process
and reused for every mail (see `notifier.loading.renderer()` and `conference_facts()`). The
templates come through a jinja2 loader made at the edge, so this module reads no files itself.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import tzinfo
from functools import lru_cache
from typing import Any

import jinja2

from notifier.domain.conference import Conference
from notifier.domain.facts import InviteFacts
from notifier.domain.notice import Notice, Person
from notifier.mail import danish, skeleton
from notifier.mail.changes import Line, describe
from notifier.mail.skeleton import Skeleton, Values


@dataclass(frozen=True, slots=True)
class Rendered:
    subject: str
    text: str
    html: str
    invite_text: str


@dataclass(frozen=True, slots=True)
class PrivacyFacts:
    """What the privacy notice to a colleague (GDPR art. 14) says about the processing: the
    conference file's texts, each a sentence; None where the file has none (the notice then
    points to the privacy policy for it)."""

    controller: str
    controller_contact: str | None
    # The controller's contact is the mail's contact address: the notice refers to it.
    contact_below: bool
    dpo_contact: str | None
    purposes: str | None
    legal_basis: str | None
    recipients: str | None
    retention: str | None


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
    privacy: PrivacyFacts
    invite: InviteFacts  # what the conference's invites state now, to tell changes from
    cancelled: bool = False
    cancellation_note: str | None = None


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
        privacy=privacy_facts(conference),
        invite=conference.invite_facts,
        cancelled=conference.cancelled,
        cancellation_note=conference.cancellation_note,
    )


def privacy_facts(conference: Conference) -> PrivacyFacts:
    given = conference.privacy
    contact = given.controller_contact
    below = contact is not None and contact.lower() == str(conference.contact_email).lower()
    return PrivacyFacts(
        controller=conference.controller,
        controller_contact=None if below else sentence(contact),
        contact_below=below,
        dpo_contact=sentence(given.dpo_contact),
        purposes=sentence(given.purposes),
        legal_basis=sentence(given.legal_basis),
        recipients=sentence(given.recipients),
        retention=sentence(given.retention),
    )


def sentence(text: str | None) -> str | None:
    """A text from the conference file as a sentence of the mail: ending in a full stop."""
    if text is None or text.endswith((".", "!", "?")):
        return text
    return f"{text}."


class Renderer:
    """Renders the templates `loader` finds: <kind>/subject.txt, body.txt and body.html."""

    def __init__(self, loader: jinja2.BaseLoader) -> None:
        self.env = jinja2.Environment(
            loader=loader,
            undefined=jinja2.StrictUndefined,
            autoescape=jinja2.select_autoescape(["html"], default_for_string=False),
            trim_blocks=True,
            lstrip_blocks=True,
            keep_trailing_newline=True,
            auto_reload=False,
        )
        self.env.filters["capitalise"] = danish.capitalise
        self._invite_texts: dict[Facts, str] = {}
        self._skeletons: dict[tuple[object, ...], Skeleton | None] = {}

    def render(self, kind: str, context: Mapping[str, Any]) -> Rendered:
        """Render one kind of mail.

        Raises:
            jinja2.TemplateError: a template is missing or uses an unknown variable (a bug,
                never retried as a delivery failure).
        """
        subject, text, html = self._texts(kind, context)
        return Rendered(subject, text, html, self.invite_text(context["c"]))

    def _texts(self, kind: str, context: Mapping[str, Any]) -> tuple[str, str, str]:
        subject = self.env.get_template(f"{kind}/subject.txt").render(context)
        return (
            " ".join(subject.split()),
            tidy(self.env.get_template(f"{kind}/body.txt").render(context)),
            self.env.get_template(f"{kind}/body.html").render(context),
        )

    def render_notice(self, notice: Notice, facts: Facts, tz: tzinfo) -> Rendered:
        """What `render` gives for the notice's context, from a skeleton of its shape
        where one can be used (see notifier.mail.skeleton): the same text, much faster."""
        kind, has_invite = notice.kind.value, notice.invite is not None
        colleague = notice.from_colleague
        values = personal_values(notice, tz)
        changed = describe(notice.changed_from, facts.invite)

        told = notice.told

        def full(vals: Values) -> tuple[str, str, str]:
            context = context_of(kind, facts, has_invite, vals, colleague, changed, told)
            return self._texts(kind, context)

        # Everything the context holds besides the personal values decides the shape.
        key = (kind, facts, has_invite, colleague, changed, told, skeleton.shape(values))
        if key not in self._skeletons:
            self._skeletons[key] = skeleton.build(full, values, kind)
        found = self._skeletons[key]
        if found is not None and found.accepts(values):
            subject, text, html = found.fill(values)
        else:
            subject, text, html = full(values)
        return Rendered(subject, text, html, self.invite_text(facts))

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


def notice_context(notice: Notice, facts: Facts, tz: tzinfo) -> dict[str, Any]:
    """The variables a template sees: the conference's facts and the notice's people."""
    return context_of(
        notice.kind.value,
        facts,
        notice.invite is not None,
        personal_values(notice, tz),
        notice.from_colleague,
        describe(notice.changed_from, facts.invite),
        notice.told,
    )


def personal_values(notice: Notice, tz: tzinfo) -> list[str | None]:
    """What differs between two mails of one kind and conference, in a fixed order:
    name, email and organisation of recipient, previous and successor, then the
    registration id and the time of the change."""
    values: list[str | None] = []
    for person in (notice.recipient, notice.previous, notice.successor):
        values += (person.name, person.email, person.organisation) if person else (None,) * 3
    happened = notice.occurred_at.astimezone(tz) if notice.occurred_at else None
    values.append(notice.registration_id)
    values.append(f"{danish.long_date(happened)} {danish.clock(happened)}" if happened else None)
    return values


def _person(values: Values, at: int) -> Person | None:
    name, email, organisation = values[at : at + 3]
    return None if name is None or email is None else Person(name, email, organisation)


def context_of(
    kind: str,
    facts: Facts,
    has_invite: bool,
    values: Values,
    from_colleague: bool,
    changes: tuple[Line, ...] = (),
    told: tuple[tuple[str, str], ...] | None = None,
) -> dict[str, Any]:
    return {
        "c": facts,
        "kind": kind,
        "recipient": _person(values, 0),
        "previous": _person(values, 3),
        "successor": _person(values, 6),
        "registration_id": values[9],
        "has_invite": has_invite,
        "occurred_at": values[10],
        "from_colleague": from_colleague,
        # What the recipient's invite said before, where this mail's says otherwise.
        "changes": changes,
        # An organiser copy: (role, what) for each mail the substitution sends.
        "told": told,
    }
