"""Arrival order does not matter: a registration's events end in the same seat and invites.

The events of one registration (creations, substitutions, cancellations; equal times; the
same event delivered twice) are run through the planner in an arrival order, as the service
runs them: an event id seen before is a no-op (the roster's event marker), and a cancellation
of a registration not known yet raises UnknownRegistration and becomes a dead letter. Dead
letters are replayed at the end, as `notifier dead-letters --replay-all` does once the
registration exists.

The outcome must equal the events' time order: the final seat (attendee, status) and the
standing invites (per UID, the mail with the highest SEQUENCE is a REQUEST). In both runs the
SEQUENCE of a UID only rises. Equal times are taken in the order the events were applied:
their arrival, or for a dead letter its replay.

Why the replay is part of the property: a cancellation that arrives before anyone holds the seat
cannot be applied, and keeping it as a dead letter is the contract (tests/e2e). Until it is
replayed the seat is still active; after the replay the outcome is the time order's.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from notifier.domain.conference import Conference
from notifier.domain.events import RegistrationCreated, RegistrationSubstituted
from notifier.domain.notice import InviteSpec, Notice, Person
from notifier.domain.plan import Plan, Seat
from notifier.errors import UnknownRegistration
from notifier.loading import Conferences
from tests.events import ASTRID, JENS, METTE
from tests.unit.support import CONFERENCES_DIR, SLUG
from tests.unit.test_plan import Event, cancelled, created, plan, substituted, uid_of

CONF: Conference = Conferences(CONFERENCES_DIR).get(SLUG)
# Mette again with the address in other letter case and another name: the same mailbox.
METTE_AGAIN = {**METTE, "name": "Mette S.", "email": "Mette.Sorensen@Aarhus.dk"}
PEOPLE = [METTE, JENS, ASTRID, METTE_AGAIN]


@dataclass
class Outcome:
    seat: tuple[Person, str] | None = None
    last: dict[str, InviteSpec] = field(default_factory=dict)  # UID -> the highest sent
    applied: list[Event] = field(default_factory=list)  # in the order their marker was set

    @property
    def standing(self) -> set[str]:
        return {uid for uid, spec in self.last.items() if spec.method == "REQUEST"}

    def send(self, notice: Notice) -> None:
        spec = notice.invite
        if spec is None:
            return
        before = self.last.get(spec.uid)
        assert before is None or spec.sequence > before.sequence, (before, spec)
        self.last[spec.uid] = spec


Planner = Callable[[Event, Seat | None, Conference], Plan]


def deliver(arrival: Sequence[Event], *, replay: bool, planner: Planner = plan) -> Outcome:
    """The events in this order through the planner, as the service applies them."""
    outcome = Outcome()
    seat: Seat | None = None
    dead: list[Event] = []
    marked: set[str] = set()

    def ingest(event: Event) -> None:
        nonlocal seat
        if event.id in marked:
            return  # the event marker: a replay is a no-op
        try:
            result = planner(event, seat, CONF)
        except UnknownRegistration:
            if event not in dead:
                dead.append(event)
            return
        marked.add(event.id)
        outcome.applied.append(event)
        seat = result.seat or seat
        for notice in result.notices:
            outcome.send(notice)

    for event in arrival:
        ingest(event)
    for event in list(dead) if replay else []:
        ingest(event)
    if seat is not None:
        outcome.seat = (seat.attendee, seat.status)
        holder = {uid_of(CONF, seat.attendee.email)} if seat.status == "active" else set()
        assert outcome.standing == holder, "the standing invites are not the holder's"
    return outcome


def check(arrival: Sequence[Event], planner: Planner = plan) -> None:
    got = deliver(arrival, replay=True, planner=planner)
    distinct = list({e.id: e for e in arrival}.values())
    never = [e for e in distinct if e not in got.applied]
    in_time = sorted([*got.applied, *never], key=lambda e: e.occurred_at)  # stable: ties
    # No replay here: in time order a dead letter is a cancellation before anyone held the
    # seat, and replaying it changes nothing.
    want = deliver(in_time, replay=False, planner=planner)
    assert got.seat == want.seat, "the seat differs from time order's"
    assert got.standing == want.standing, "the standing invites differ from time order's"
    meant = meaning(in_time)
    held = got.seat and (got.seat[0].email.casefold(), got.seat[1])
    assert held == meant, f"the seat is {held}, the events in time order say {meant}"


def meaning(in_time: list[Event]) -> tuple[str, str] | None:
    """What the events say in time order, read from the contract without the planner:
    (address of who holds the seat, status). A substitution to the same address changes
    nothing, one of a cancelled registration is ignored, and a cancellation before anyone held
    the seat cancels nothing."""
    holder: str | None = None
    status = "active"
    for event in in_time:
        if isinstance(event, RegistrationCreated):
            holder, status = event.registration.attendee.email.casefold(), "active"
        elif isinstance(event, RegistrationSubstituted):
            coming = event.registration.attendee.email.casefold()
            leaving = event.registration.previous_attendee.email.casefold()
            if coming != leaving and (holder is None or status == "active"):
                holder, status = coming, "active"
        elif holder is not None:
            status = "cancelled"
    return None if holder is None else (holder, status)


# -- strategies -------------------------------------------------------------------------------


@st.composite
def events(draw: st.DrawFn, max_size: int) -> list[Event]:
    """Distinct events of one registration, within a few minutes so that times often tie."""
    found: list[Event] = []
    for n in range(draw(st.integers(1, max_size))):
        minute, eid = draw(st.integers(0, 3)), f"evt-{n}"
        kind = draw(st.sampled_from(["created", "substituted", "cancelled"]))
        people = st.sampled_from(PEOPLE)
        if kind == "created":
            found.append(created(minute, draw(people), eid))
        elif kind == "substituted":
            found.append(substituted(minute, draw(people), draw(people), eid))
        else:
            found.append(cancelled(minute, eid))
    return found


@st.composite
def with_duplicates(draw: st.DrawFn, max_size: int, max_duplicates: int) -> list[Event]:
    found = draw(events(max_size))
    again = draw(st.lists(st.sampled_from(found), max_size=max_duplicates))
    return [*found, *again]


@st.composite
def arrivals(draw: st.DrawFn) -> list[Event]:
    """One arrival order of up to eight events, some delivered twice."""
    arrival = draw(with_duplicates(6, 3))
    return list(draw(st.permutations(arrival)))


def _defect_7() -> list[Event]:
    """Issue 11, defect 7: two substitutions in the same second."""
    return [
        created(0, METTE, "evt-c"),
        substituted(10, METTE, JENS, "evt-s1"),
        substituted(10, JENS, ASTRID, "evt-s2"),
    ]


def _defect_8() -> list[Event]:
    """Issue 11, defect 8: created@0, created@40 (the same person), cancelled@30."""
    return [created(0, METTE, "evt-c1"), created(40, METTE, "evt-c2"), cancelled(30, "evt-x")]


def _cancelled_first() -> list[Event]:
    """The cancellation arrives before the creation it cancels: a dead letter, replayed."""
    return [cancelled(30, "evt-x"), created(0, METTE, "evt-c"), substituted(40, METTE, JENS)]


def _dead_letter_tie() -> list[Event]:
    """The cancellation finds a seat (made by the later substitution) and ties with the
    creation that arrives after it: taken first, it cancels nothing, as in time order, where
    it comes before anyone held the seat."""
    return [
        substituted(10, JENS, ASTRID, "evt-s"),
        cancelled(5, "evt-x"),
        created(5, JENS, "evt-c"),
    ]


def _late_cancellation() -> list[Event]:
    """In time order the substitution meets a cancelled registration and is ignored."""
    return [created(0, METTE, "evt-c"), substituted(10, METTE, ASTRID, "evt-s"), cancelled(5)]


def _twice(events: list[Event]) -> list[Event]:
    return [*events, events[-1], events[0]]


def every_order(arrival: list[Event], planner: Planner = plan) -> None:
    seen: set[tuple[str, ...]] = set()
    for perm in itertools.permutations(arrival):
        key = tuple(e.id for e in perm)
        if key not in seen:
            seen.add(key)
            check(perm, planner)


@settings(max_examples=300, deadline=None)
@given(with_duplicates(4, 2))
@example(_defect_7())
@example(_defect_8())
@example(_twice(_defect_8()))
@example(_cancelled_first())
@example(_dead_letter_tie())
@example(_late_cancellation())
def test_every_arrival_order_of_a_few_events_ends_as_in_time_order(arrival: list[Event]) -> None:
    every_order(arrival)


@settings(max_examples=1000, deadline=None)
@given(arrivals())
@example(list(reversed(_defect_7())))
@example([*_defect_8(), _defect_8()[1]])
@example(_twice(_cancelled_first()))
def test_any_arrival_order_ends_as_in_time_order(arrival: list[Event]) -> None:
    check(arrival)


def _ignoring_equal_times(event: Event, seat: Seat | None, conf: Conference) -> Plan:
    """Issue 11's defect 7 put back: an event no newer than the seat's last fact is ignored."""
    if seat is not None and event.occurred_at <= seat.as_of:
        return Plan(None, note="newer facts already applied")
    return plan(event, seat, conf)


def _forgetting_no_ops(event: Event, seat: Seat | None, conf: Conference) -> Plan:
    """Issue 11's defect 8 put back: an event that sends nothing leaves the seat as it was."""
    result = plan(event, seat, conf)
    return result if result.notices else Plan(None, note=result.note)


@pytest.mark.parametrize(
    ("arrival", "planner"),
    [(_defect_7(), _ignoring_equal_times), (_defect_8(), _forgetting_no_ops)],
    ids=["defect-7", "defect-8"],
)
def test_the_property_catches_the_defects_of_issue_11(
    arrival: list[Event], planner: Planner
) -> None:
    with pytest.raises(AssertionError):
        check(arrival, planner)
    check(arrival)  # and the planner as it is passes
