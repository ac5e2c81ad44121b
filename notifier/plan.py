"""What an event means: the new state of a seat and the notices to send. Pure functions.

A seat is one registration's place at a conference: who holds it now, the invite UID and
SEQUENCE of every attendee it has been sent to, and the time of the last event applied.
Events may come late or twice; `occurred_at` decides which facts are newer.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Literal

from notifier.conference import Conference
from notifier.events import (
    RegistrationCancelled,
    RegistrationCreated,
    RegistrationSubstituted,
)
from notifier.notice import InviteSpec, Kind, Notice, Person, invite_uid
from notifier.recipients import same_address

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Seat:
    registration: str
    attendee: Person
    status: Literal["active", "cancelled"]
    as_of: datetime
    sequences: dict[str, int] = field(default_factory=dict)  # invite UID -> last SEQUENCE
    registered_at: datetime | None = None  # first fact about this registration

    def to_json(self) -> str:
        return json.dumps(
            {
                "registration": self.registration,
                "attendee": {
                    "name": self.attendee.name,
                    "email": self.attendee.email,
                    "organisation": self.attendee.organisation,
                },
                "status": self.status,
                "as_of": self.as_of.isoformat(),
                "sequences": self.sequences,
                "registered_at": (self.registered_at or self.as_of).isoformat(),
            },
            ensure_ascii=False,
            separators=(",", ":"),
        )

    @classmethod
    def from_json(cls, text: str | bytes) -> Seat:
        d = json.loads(text)
        as_of = datetime.fromisoformat(d["as_of"])
        registered = d.get("registered_at")
        return cls(
            d["registration"],
            Person(**d["attendee"]),
            d["status"],
            as_of,
            dict(d["sequences"]),
            datetime.fromisoformat(registered) if registered else as_of,
        )


@dataclass(frozen=True, slots=True)
class Plan:
    """The outcome of one event: the seat to store (None: unchanged) and the notices."""

    seat: Seat | None
    notices: tuple[Notice, ...] = ()
    note: str = ""


def _uid(conference: Conference, registration: str, person: Person) -> str:
    return invite_uid(conference.slug, registration, person.email, conference.sender_domain)


def _next_sequence(sequences: dict[str, int], uid: str) -> int:
    return sequences[uid] + 1 if uid in sequences else 0


def plan_created(event: RegistrationCreated, seat: Seat | None, conf: Conference) -> Plan:
    reg = event.registration.id
    person = Person.of(event.registration.attendee)
    if seat is not None and seat.as_of >= event.occurred_at:
        return Plan(None, note="newer facts already applied: no confirmation")
    if (
        seat is not None
        and seat.status == "active"
        and same_address(seat.attendee.email, person.email)
    ):
        return Plan(None, note="already confirmed to this attendee")
    sequences = dict(seat.sequences) if seat else {}
    uid = _uid(conf, reg, person)
    spec = InviteSpec("REQUEST", uid, _next_sequence(sequences, uid))
    sequences[uid] = spec.sequence
    notice = Notice(
        f"{event.id}:confirmation",
        Kind.CONFIRMATION,
        conf.slug,
        reg,
        person,
        invite=spec,
        occurred_at=event.occurred_at,
    )
    notices = [notice]
    if seat is not None and seat.status == "active":
        # A newer creation names someone else: the seat changed hands, so the previous
        # holder's invite is cancelled as in a substitution.
        notices.insert(
            0,
            Notice(
                f"{event.id}:out-roster",
                Kind.SUBSTITUTION_OUT,
                conf.slug,
                reg,
                seat.attendee,
                invite=_cancel_for(conf, reg, seat.attendee, sequences),
                successor=person,
                occurred_at=event.occurred_at,
            ),
        )
    registered = min(seat.registered_at or seat.as_of, event.occurred_at) if seat else None
    new_seat = Seat(
        reg, person, "active", event.occurred_at, sequences, registered or event.occurred_at
    )
    note = "creation replaced the seat's attendee" if len(notices) > 1 else ""
    return Plan(new_seat, tuple(notices), note)


def _cancel_for(
    conf: Conference, reg: str, person: Person, sequences: dict[str, int]
) -> InviteSpec:
    uid = _uid(conf, reg, person)
    # An invite we never recorded may still have been sent (by an earlier deployment or
    # before its creation event reached us): 1 outranks the original 0.
    spec = InviteSpec("CANCEL", uid, max(sequences.get(uid, 0) + 1, 1))
    sequences[uid] = spec.sequence
    return spec


def plan_substituted(event: RegistrationSubstituted, seat: Seat | None, conf: Conference) -> Plan:
    reg = event.registration.id
    leaving = Person.of(event.registration.previous_attendee)
    coming = Person.of(event.registration.attendee)
    if same_address(leaving.email, coming.email):
        return Plan(None, note="substitution to the same address: nothing to do")
    if seat is not None and seat.as_of >= event.occurred_at:
        return Plan(None, note="newer facts already applied: substitution ignored")
    if seat is not None and seat.status == "cancelled":
        return Plan(None, note="registration is cancelled: substitution ignored")
    if seat is not None and same_address(seat.attendee.email, coming.email):
        return Plan(None, note="the colleague already holds the seat: nothing to do")
    sequences = dict(seat.sequences) if seat else {}
    at = event.occurred_at
    notices = [
        Notice(
            f"{event.id}:out",
            Kind.SUBSTITUTION_OUT,
            conf.slug,
            reg,
            leaving,
            invite=_cancel_for(conf, reg, leaving, sequences),
            successor=coming,
            occurred_at=at,
        ),
    ]
    if (
        seat is not None
        and not same_address(seat.attendee.email, leaving.email)
        and not same_address(seat.attendee.email, coming.email)
    ):
        # The roster had someone else: their invite must not stay behind either.
        stray = seat.attendee
        notices.append(
            Notice(
                f"{event.id}:out-roster",
                Kind.SUBSTITUTION_OUT,
                conf.slug,
                reg,
                stray,
                invite=_cancel_for(conf, reg, stray, sequences),
                successor=coming,
                occurred_at=at,
            )
        )
    uid = _uid(conf, reg, coming)
    spec = InviteSpec("REQUEST", uid, _next_sequence(sequences, uid))
    sequences[uid] = spec.sequence
    organiser = Person(conf.organiser.name, str(conf.organiser.email))
    notices += [
        Notice(
            f"{event.id}:in",
            Kind.SUBSTITUTION_IN,
            conf.slug,
            reg,
            coming,
            invite=spec,
            previous=leaving,
            occurred_at=at,
        ),
        Notice(
            f"{event.id}:copy",
            Kind.SUBSTITUTION_COPY,
            conf.slug,
            reg,
            organiser,
            previous=leaving,
            successor=coming,
            occurred_at=at,
        ),
    ]
    note = "roster's attendee differed from previous_attendee" if len(notices) == 4 else ""
    registered = (seat.registered_at or seat.as_of) if seat else at
    return Plan(Seat(reg, coming, "active", at, sequences, registered), tuple(notices), note)


def plan_cancelled(event: RegistrationCancelled, seat: Seat | None, conf: Conference) -> Plan:
    """Cancel the current attendee's invite. Raises LookupError for an unknown registration."""
    reg = event.registration.id
    if seat is None:
        raise LookupError(f"registration {reg} is unknown: no attendee to notify")
    if seat.as_of >= event.occurred_at:
        return Plan(None, note="newer facts already applied: cancellation ignored")
    if seat.status == "cancelled":
        return Plan(None, note="already cancelled")
    sequences = dict(seat.sequences)
    spec = _cancel_for(conf, reg, seat.attendee, sequences)
    notice = Notice(
        f"{event.id}:cancel",
        Kind.CANCELLATION,
        conf.slug,
        reg,
        seat.attendee,
        invite=spec,
        occurred_at=event.occurred_at,
    )
    return Plan(
        replace(seat, status="cancelled", as_of=event.occurred_at, sequences=sequences), (notice,)
    )


def current_invite(seat: Seat, conf: Conference) -> InviteSpec:
    """The invite an active seat's attendee holds now (for reminders): same UID and SEQUENCE."""
    uid = _uid(conf, seat.registration, seat.attendee)
    return InviteSpec("REQUEST", uid, seat.sequences.get(uid, 0))
