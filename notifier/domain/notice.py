"""One message to one recipient: what to say, to whom, and which invite goes with it.

A Notice is plain data. It is stored in the outbox as JSON and composed into a mail at send time,
so a retry after a template fix sends the fixed text with the same Message-ID.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any, Literal

from notifier.domain.events import Attendee


class Kind(StrEnum):
    CONFIRMATION = "confirmation"
    REMINDER = "reminder"
    SUBSTITUTION_OUT = "substitution_out"
    SUBSTITUTION_IN = "substitution_in"
    SUBSTITUTION_COPY = "substitution_copy"
    CANCELLATION = "cancellation"
    UPDATE = "update"  # the conference's facts changed: the invite again, with what changed
    CONFERENCE_CANCELLATION = "conference_cancellation"  # the conference is called off


# What an organiser copy says the substitution sends (Notice.told): to whom, by role...
ROLE_PREVIOUS = "previous"  # the one the event says passed the seat on
ROLE_SUCCESSOR = "successor"  # the one the event says takes the seat
ROLE_OTHER = "other"  # someone else (the attendee the seat was registered to, or came back to)
# ... and what.
TOLD_CANCEL = "cancel"  # a notice that the seat is passed on, with a CANCEL of their invite
TOLD_CONFIRM = "confirm"  # a confirmation with an invite of their own

# Kinds that go to whoever holds the seat when they are sent, with that person's invite.
SEAT_KINDS = frozenset({Kind.REMINDER, Kind.UPDATE, Kind.CONFERENCE_CANCELLATION})


@dataclass(frozen=True, slots=True)
class Person:
    name: str
    email: str
    organisation: str | None = None

    @classmethod
    def of(cls, attendee: Attendee) -> Person:
        return cls(attendee.name, attendee.email, attendee.organisation)


@dataclass(frozen=True, slots=True)
class InviteSpec:
    """Which calendar object the mail carries: its UID, SEQUENCE and iTIP method."""

    method: Literal["REQUEST", "CANCEL"]
    uid: str
    sequence: int


@dataclass(frozen=True, slots=True)
class Notice:
    key: str
    kind: Kind
    conference: str
    registration_id: str
    recipient: Person
    invite: InviteSpec | None = None
    previous: Person | None = None
    successor: Person | None = None
    occurred_at: datetime | None = None
    batch: str | None = None
    # False on a substitution_in notice whose recipient registered the seat first (it came
    # back to them): their data did not come from a colleague, so the privacy notice about
    # data received from a colleague (GDPR art. 14) must not be shown.
    from_colleague: bool = True
    # Set when the notice is made ready to send: the facts (InviteFacts.text) the recipient's
    # invite carried before this mail, when they differ from what it carries now.
    changed_from: str | None = None
    # An organiser copy: (role, TOLD_CANCEL or TOLD_CONFIRM) for each mail the substitution
    # sends, in order; None for a copy stored before copies said so. No names: the copy
    # names the previous attendee and the successor already.
    told: tuple[tuple[str, str], ...] | None = None

    def to_json(self) -> str:
        data = asdict(self)
        data["occurred_at"] = self.occurred_at.isoformat() if self.occurred_at else None
        return json.dumps(data, ensure_ascii=False, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str | bytes) -> Notice:
        data: dict[str, Any] = json.loads(text)
        return cls(
            key=data["key"],
            kind=Kind(data["kind"]),
            conference=data["conference"],
            registration_id=data["registration_id"],
            recipient=Person(**data["recipient"]),
            invite=InviteSpec(**data["invite"]) if data.get("invite") else None,
            previous=Person(**data["previous"]) if data.get("previous") else None,
            successor=Person(**data["successor"]) if data.get("successor") else None,
            occurred_at=(
                datetime.fromisoformat(data["occurred_at"]) if data.get("occurred_at") else None
            ),
            batch=data.get("batch"),
            # Notices stored before the flag existed keep the old wording.
            from_colleague=bool(data.get("from_colleague", True)),
            changed_from=data.get("changed_from"),
            told=_told(data.get("told")),
        )


def _told(raw: Any) -> tuple[tuple[str, str], ...] | None:
    if raw is None:
        return None
    return tuple((str(role), str(what)) for role, what in raw)


def digest(*parts: str, length: int = 32) -> str:
    """A short stable hex digest of the parts (for UIDs and Message-IDs)."""
    h = hashlib.sha256("\x1f".join(parts).encode("utf-8"))
    return h.hexdigest()[:length]


def invite_uid(conference: str, registration_id: str, email: str, domain: str) -> str:
    """The UID of one attendee's invite for one registration: derived, never random.

    The address is case-folded so that a registration system's change of letter case
    does not orphan a calendar entry.
    """
    return f"{digest(conference, registration_id, email.casefold())}@{domain}"
