"""What an event means: the new state of a seat and the notices to send. Pure functions.

A seat is one registration's place at a conference: who holds it now, the invite UID and
SEQUENCE of every attendee it has been sent to, and the facts (applied events) it was built
from. Events may come late, twice, or with equal `occurred_at`. The seat's state is its facts
replayed in time order, equal times in publication order (Fact.order), so an event that
arrives late ends in the same state as in time order. Each event's notices bring the invites
already sent in line with the new state: a CANCEL for an invite that no longer stands, a
REQUEST for the one that should.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any, Literal

from notifier.domain.conference import Conference
from notifier.domain.events import (
    RegistrationCancelled,
    RegistrationCreated,
    RegistrationSubstituted,
)
from notifier.domain.notice import (
    ROLE_OTHER,
    ROLE_PREVIOUS,
    ROLE_SUCCESSOR,
    TOLD_CANCEL,
    TOLD_CONFIRM,
    InviteSpec,
    Kind,
    Notice,
    Person,
    invite_uid,
)
from notifier.domain.recipients import same_address
from notifier.errors import UnknownRegistration

log = logging.getLogger(__name__)

Status = Literal["active", "cancelled"]
FactKind = Literal["created", "substituted", "cancelled", "snapshot"]


@dataclass(frozen=True, slots=True)
class Fact:
    """One applied event as its seat remembers it.

    A snapshot stands for a seat stored before seats kept their facts: its state at `as_of`,
    with nothing known about how it got there.
    """

    kind: FactKind
    at: datetime
    attendee: Person | None = None  # created, substituted: who holds the seat after it
    previous: Person | None = None  # substituted: who passed the seat on
    status: Status = "active"  # snapshot only
    # The event's place in publication order (stamped as its task left the queue), which
    # orders events of equal time; None where it is not known.
    order: int | None = None

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"kind": self.kind, "at": self.at.isoformat()}
        if self.order is not None:
            d["order"] = self.order
        if self.attendee is not None:
            d["attendee"] = _person_dict(self.attendee)
        if self.previous is not None:
            d["previous"] = _person_dict(self.previous)
        if self.kind == "snapshot":
            d["status"] = self.status
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Fact:
        return cls(
            d["kind"],
            datetime.fromisoformat(d["at"]),
            Person(**d["attendee"]) if d.get("attendee") else None,
            Person(**d["previous"]) if d.get("previous") else None,
            d.get("status", "active"),
            int(d["order"]) if d.get("order") is not None else None,
        )


def _person_dict(person: Person) -> dict[str, str | None]:
    return {"name": person.name, "email": person.email, "organisation": person.organisation}


@dataclass(frozen=True, slots=True)
class Carried:
    """What a mail last carried for one invite UID: its SEQUENCE and its facts
    (`InviteFacts.text`, method included; WITHHELD for a REQUEST not sent because the
    conference was cancelled). Recorded once the relay has the mail (its 250, or an unknown
    outcome: see store/scripts/finish.lua), with the key of that message and what the UID
    carried before it, so that a resend of the same message sends the same mail."""

    sequence: int
    facts: str
    key: str = ""
    before: str | None = None
    announces: bool = False  # recorded by an update or a conference cancellation

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"sequence": self.sequence, "facts": self.facts}
        if self.key:
            d["key"] = self.key
        if self.before is not None:
            d["before"] = self.before
        if self.announces:
            d["announces"] = True
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Carried:
        return cls(
            int(d["sequence"]),
            d["facts"],
            d.get("key", ""),
            d.get("before"),
            bool(d.get("announces", False)),
        )


WITHHELD = ""


@dataclass(frozen=True, slots=True)
class Seat:
    registration: str
    attendee: Person
    status: Status
    as_of: datetime  # the newest fact's time
    # invite UID -> the SEQUENCE planned for it by the seat's events (REQUEST or CANCEL)
    sequences: dict[str, int] = field(default_factory=dict)
    registered_at: datetime | None = None  # first fact about this registration
    facts: tuple[Fact, ...] = ()  # in arrival order; empty for a seat stored before facts
    # invite UID -> what the last mail composed for it carried
    carried: dict[str, Carried] = field(default_factory=dict)

    @property
    def history(self) -> tuple[Fact, ...]:
        """The facts, or for an old record a snapshot of its state."""
        if self.facts:
            return self.facts
        return (Fact("snapshot", self.as_of, self.attendee, status=self.status),)

    @property
    def first_registrant(self) -> Person | None:
        """Who registered the seat: the attendee of the earliest creation, or (when no creation
        arrived) whoever passed the seat on in the earliest substitution. None when the facts
        cannot tell (an old record, whose earlier facts are unknown)."""
        facts = _in_time_order(self.history)
        if any(f.kind == "snapshot" for f in facts):
            return None
        for kind in ("created", "substituted"):
            for f in facts:
                if f.kind == kind:
                    return f.attendee if kind == "created" else f.previous
        return None

    def with_people(self, change: Callable[[Person], Person]) -> Seat:
        """The seat with every person in it replaced (for anonymising)."""

        def fact(f: Fact) -> Fact:
            return replace(
                f,
                attendee=change(f.attendee) if f.attendee else None,
                previous=change(f.previous) if f.previous else None,
            )

        return replace(
            self, attendee=change(self.attendee), facts=tuple(fact(f) for f in self.facts)
        )

    def to_json(self) -> str:
        return json.dumps(
            {
                "registration": self.registration,
                "attendee": _person_dict(self.attendee),
                "status": self.status,
                "as_of": self.as_of.isoformat(),
                "sequences": self.sequences,
                "registered_at": (self.registered_at or self.as_of).isoformat(),
                "facts": [f.to_dict() for f in self.facts],
                "carried": {uid: c.to_dict() for uid, c in self.carried.items()},
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
            tuple(Fact.from_dict(f) for f in d.get("facts", ())),
            {uid: Carried.from_dict(c) for uid, c in d.get("carried", {}).items()},
        )


@dataclass(frozen=True, slots=True)
class Plan:
    """The outcome of one event: the seat to store (None: unchanged) and the notices."""

    seat: Seat | None
    notices: tuple[Notice, ...] = ()
    note: str = ""


# -- the state: facts replayed in time order -------------------------------------------------


@dataclass(frozen=True, slots=True)
class State:
    attendee: Person
    status: Status
    via: Fact  # the fact that gave the seat its attendee


def _in_time_order(facts: Iterable[Fact]) -> list[Fact]:
    """Facts in time order; equal times in publication order, then (where it is not known)
    in arrival order: sorted() is stable."""
    return sorted(facts, key=lambda f: (f.at, f.order is None, f.order or 0))


def fold(facts: Iterable[Fact]) -> State | None:
    """The seat's state after its facts, applied in time order (ties in publication
    order, then in arrival order)."""
    state: State | None = None
    for fact in _in_time_order(facts):
        state = _step(state, fact)
    return state


def _step(state: State | None, fact: Fact) -> State | None:
    if fact.kind == "cancelled":
        # A cancellation before anyone held the seat cancels nothing (it is a dead letter
        # when it arrives first).
        return replace(state, status="cancelled") if state else None
    assert fact.attendee is not None
    if fact.kind == "snapshot":
        return State(fact.attendee, fact.status, fact)
    if fact.previous is not None and same_address(fact.previous.email, fact.attendee.email):
        return state
    if state is not None and state.status == "active":
        if same_address(state.attendee.email, fact.attendee.email):
            return state  # confirmed again: nothing changes
    elif state is not None and fact.kind == "substituted":
        return state  # a cancelled registration is not revived by a substitution
    return State(fact.attendee, "active", fact)


# -- planning ---------------------------------------------------------------------------------


def _uid(conference: Conference, registration: str, person: Person) -> str:
    return invite_uid(conference.slug, registration, person.email, conference.sender_domain)


def _highest(ch: _Change, uid: str) -> int | None:
    """The highest SEQUENCE the UID has had: planned by this or earlier events, or sent."""
    carried = ch.old.carried.get(uid) if ch.old else None
    found = [
        s for s in (ch.sequences.get(uid), carried.sequence if carried else None) if s is not None
    ]
    return max(found) if found else None


def _cancel_for(ch: _Change, person: Person) -> InviteSpec:
    uid = _uid(ch.conf, ch.reg, person)
    # An invite we never recorded may still have been sent (by an earlier deployment or
    # before its creation event reached us): 1 outranks the original 0.
    spec = InviteSpec("CANCEL", uid, max((_highest(ch, uid) or 0) + 1, 1))
    ch.sequences[uid] = spec.sequence
    return spec


def _request_for(ch: _Change, person: Person) -> InviteSpec:
    uid = _uid(ch.conf, ch.reg, person)
    highest = _highest(ch, uid)
    spec = InviteSpec("REQUEST", uid, 0 if highest is None else highest + 1)
    ch.sequences[uid] = spec.sequence
    return spec


def plan_created(
    event: RegistrationCreated, seat: Seat | None, conf: Conference, order: int | None = None
) -> Plan:
    """`order`: the event's place in publication order (see Fact.order)."""
    attendee = Person.of(event.registration.attendee)
    fact = Fact("created", event.occurred_at, attendee, order=order)
    return _apply(event.id, event.registration.id, fact, seat, conf)


def plan_substituted(
    event: RegistrationSubstituted,
    seat: Seat | None,
    conf: Conference,
    order: int | None = None,
) -> Plan:
    leaving = Person.of(event.registration.previous_attendee)
    coming = Person.of(event.registration.attendee)
    if same_address(leaving.email, coming.email):
        return Plan(None, note="substitution to the same address: nothing to do")
    fact = Fact("substituted", event.occurred_at, coming, leaving, order=order)
    return _apply(event.id, event.registration.id, fact, seat, conf)


def plan_cancelled(
    event: RegistrationCancelled, seat: Seat | None, conf: Conference, order: int | None = None
) -> Plan:
    """Cancel the current attendee's invite.

    Raises:
        UnknownRegistration: no seat yet (the cancellation came before the creation).
    """
    reg = event.registration.id
    if seat is None:
        raise UnknownRegistration(reg)
    fact = Fact("cancelled", event.occurred_at, order=order)
    return _apply(event.id, reg, fact, seat, conf)


@dataclass(frozen=True, slots=True)
class _Change:
    """One event's fact applied to a seat: what stood before, what stands now."""

    event_id: str
    conf: Conference
    reg: str
    fact: Fact
    old: Seat | None
    new: State
    first: Person | None
    sequences: dict[str, int]  # filled in as notices are planned

    def notice(
        self,
        suffix: str,
        kind: Kind,
        recipient: Person,
        invite: InviteSpec | None = None,
        *,
        previous: Person | None = None,
        successor: Person | None = None,
        at: datetime | None = None,
        from_colleague: bool = True,
        told: tuple[tuple[str, str], ...] | None = None,
    ) -> Notice:
        return Notice(
            f"{self.event_id}:{suffix}",
            kind,
            self.conf.slug,
            self.reg,
            recipient,
            invite,
            previous,
            successor,
            at or self.fact.at,
            from_colleague=from_colleague,
            told=told,
        )


def _apply(event_id: str, reg: str, fact: Fact, seat: Seat | None, conf: Conference) -> Plan:
    facts = (*(seat.history if seat else ()), fact)
    new = fold(facts)
    if new is None:  # only a cancellation can leave no state, and it needs a seat
        raise UnknownRegistration(reg)
    stub = Seat(reg, new.attendee, new.status, fact.at, facts=facts)
    change = _Change(
        event_id,
        conf,
        reg,
        fact,
        seat,
        new,
        stub.first_registrant,
        dict(seat.sequences) if seat else {},
    )
    notices = [*_leaving(change), *_coming(change)]
    if fact.kind == "substituted":
        notices.append(_copy(change, notices))
    registered = seat.registered_at or seat.as_of if seat else None
    if fact.kind != "cancelled":
        registered = min(registered, fact.at) if registered else fact.at
    new_seat = replace(
        stub,
        as_of=max(f.at for f in facts),
        sequences=change.sequences,
        registered_at=registered,
        carried=dict(seat.carried) if seat else {},
    )
    return Plan(new_seat, tuple(notices), _note(change, notices))


def _standing(seat: Seat | None) -> Person | None:
    """Whose invite stands before the event: the attendee of an active seat."""
    return seat.attendee if seat is not None and seat.status == "active" else None


def _holds(person: Person | None, other: Person | None) -> bool:
    return person is not None and other is not None and same_address(person.email, other.email)


def _leaving(ch: _Change) -> list[Notice]:
    """CANCELs for invites that no longer stand."""
    notices: list[Notice] = []
    fact, new, seqs = ch.fact, ch.new, ch.sequences
    holder = _standing(ch.old)
    successor = new.attendee if new.status == "active" else None
    if (
        fact.kind == "substituted"
        and new.via == fact
        and fact.previous is not None
        and not _holds(fact.previous, holder)
        and _uid(ch.conf, ch.reg, fact.previous) not in seqs
    ):
        # The one passing the seat on never got an invite from us, yet may hold one.
        spec = _cancel_for(ch, fact.previous)
        out = Kind.SUBSTITUTION_OUT
        notices.append(ch.notice("out", out, fact.previous, invite=spec, successor=fact.attendee))
    if holder is None or _holds(holder, successor):
        return notices
    spec = _cancel_for(ch, holder)
    if successor is None:
        notices.append(ch.notice("cancel", Kind.CANCELLATION, holder, invite=spec))
    else:
        suffix = (
            "out" if fact.kind == "substituted" and _holds(holder, fact.previous) else "out-roster"
        )
        notices.append(
            ch.notice(suffix, Kind.SUBSTITUTION_OUT, holder, invite=spec, successor=successor)
        )
    return notices


def _coming(ch: _Change) -> list[Notice]:
    """A REQUEST for the invite that should stand, if it does not stand yet."""
    new = ch.new
    if new.status != "active" or _holds(_standing(ch.old), new.attendee):
        return []
    spec = _request_for(ch, new.attendee)
    via = new.via
    if via.kind != "substituted" or via.previous is None:
        return [ch.notice("confirmation", Kind.CONFIRMATION, new.attendee, invite=spec)]
    # The mail describes the substitution that brought the attendee in, which may be an
    # earlier event than this one (when this one arrived late and changed the outcome).
    return [
        ch.notice(
            "in",
            Kind.SUBSTITUTION_IN,
            new.attendee,
            spec,
            previous=via.previous,
            at=via.at,
            # The seat came back to whoever registered it: their data came from them.
            from_colleague=not _holds(ch.first, new.attendee),
        )
    ]


def _copy(ch: _Change, notices: list[Notice]) -> Notice:
    """The organiser's copy of a substitution: who passed the seat to whom, and what this
    event sends to whom. Every substitution gets one, also one that arrived late and sends
    nobody anything."""
    organiser = Person(ch.conf.organiser.name, str(ch.conf.organiser.email))
    fact = ch.fact
    told = tuple(
        (
            _role(n.recipient, fact),
            TOLD_CANCEL if n.kind is Kind.SUBSTITUTION_OUT else TOLD_CONFIRM,
        )
        for n in notices
        if n.kind in (Kind.SUBSTITUTION_OUT, Kind.SUBSTITUTION_IN)
    )
    return ch.notice(
        "copy",
        Kind.SUBSTITUTION_COPY,
        organiser,
        previous=ch.fact.previous,
        successor=ch.fact.attendee,
        told=told,
    )


def _role(person: Person, fact: Fact) -> str:
    """Who a person is in a substitution, as its organiser copy names them."""
    if _holds(person, fact.previous):
        return ROLE_PREVIOUS
    return ROLE_SUCCESSOR if _holds(person, fact.attendee) else ROLE_OTHER


def _note(ch: _Change, notices: list[Notice]) -> str:
    if not notices:
        if ch.old is not None and ch.fact.at < ch.old.as_of:
            return "newer facts already applied: remembered, seat unchanged"
        return "seat unchanged: fact remembered"
    if sum(n.kind is Kind.SUBSTITUTION_OUT for n in notices) > 1:
        return "roster's attendee differed from previous_attendee"
    return ""


def seat_uid(seat: Seat, conf: Conference) -> str:
    """The UID of the invite the seat's attendee holds (or held)."""
    return _uid(conf, seat.registration, seat.attendee)
