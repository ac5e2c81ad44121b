"""What events mean: seats, notices, invite UIDs and SEQUENCEs, late and repeated events.

Besides the cases, every scenario is checked against two invariants of iTIP: the SEQUENCE of a
UID only rises, and when the events are applied the only invite left standing is the current
attendee's (none once the registration is cancelled). Every arrival order is covered by
tests/unit/test_ordering.py.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from notifier.domain.conference import Conference
from notifier.domain.events import (
    RegistrationCancelled,
    RegistrationCreated,
    RegistrationSubstituted,
    parse_event,
)
from notifier.domain.itip import prepare
from notifier.domain.notice import InviteSpec, Kind, Notice, Person, invite_uid
from notifier.domain.plan import (
    Plan,
    Seat,
    plan_cancelled,
    plan_created,
    plan_substituted,
)
from notifier.errors import UnknownRegistration
from tests.events import JENS, METTE
from tests.unit.support import SLUG

T0 = datetime(2024, 2, 14, 10, 0, tzinfo=UTC)
REG = "REG-1001"
ASTRID = {"name": "Astrid Kjærgård", "email": "astrid.kjaergaard@aarhus.dk"}

Event = RegistrationCreated | RegistrationSubstituted | RegistrationCancelled


def _envelope(
    kind: str, minute: int, registration: dict[str, Any], event_id: str | None = None
) -> dict[str, Any]:
    return {
        "id": event_id or f"evt-{kind}-{minute}",
        "type": f"registration.{kind}",
        "occurred_at": (T0 + timedelta(minutes=minute)).isoformat(),
        "conference": SLUG,
        "registration": {"id": REG, **registration},
    }


def created(
    minute: int, attendee: dict[str, Any] = METTE, event_id: str | None = None
) -> RegistrationCreated:
    event = parse_event(_envelope("created", minute, {"attendee": attendee}, event_id))
    assert isinstance(event, RegistrationCreated)
    return event


def substituted(
    minute: int, previous: dict[str, Any], new: dict[str, Any], event_id: str | None = None
) -> RegistrationSubstituted:
    event = parse_event(
        _envelope("substituted", minute, {"previous_attendee": previous, "attendee": new}, event_id)
    )
    assert isinstance(event, RegistrationSubstituted)
    return event


def cancelled(minute: int, event_id: str | None = None) -> RegistrationCancelled:
    event = parse_event(_envelope("cancelled", minute, {}, event_id))
    assert isinstance(event, RegistrationCancelled)
    return event


def plan(event: Event, seat: Seat | None, conf: Conference) -> Plan:
    if isinstance(event, RegistrationCreated):
        return plan_created(event, seat, conf)
    if isinstance(event, RegistrationSubstituted):
        return plan_substituted(event, seat, conf)
    return plan_cancelled(event, seat, conf)


@dataclass
class Run:
    seat: Seat | None
    plans: list[Plan]

    @property
    def last(self) -> Plan:
        return self.plans[-1]

    @property
    def notices(self) -> list[Notice]:
        return [n for p in self.plans for n in p.notices]


def apply(conf: Conference, events: Iterable[Event], seat: Seat | None = None) -> Run:
    """Apply events in order, as the service does: a plan's seat (if any) replaces the old."""
    run = Run(seat, [])
    for event in events:
        result = plan(event, run.seat, conf)
        run.plans.append(result)
        run.seat = result.seat or run.seat
    check_invariants(conf, run, complete=seat is None)
    return run


def check_invariants(conf: Conference, run: Run, *, complete: bool = True) -> None:
    """`complete`: the run holds every mail sent for the registration (it began without a
    seat), so the holder's invite must stand; otherwise earlier mails are not known."""
    last: dict[str, InviteSpec] = {}
    for notice in run.notices:
        if notice.invite is None:
            continue
        spec = notice.invite
        if spec.uid in last:
            assert spec.sequence > last[spec.uid].sequence, f"SEQUENCE must rise: {spec}"
        last[spec.uid] = spec
    standing = {uid for uid, spec in last.items() if spec.method == "REQUEST"}
    seat = run.seat
    expected = {uid_of(conf, seat.attendee.email)} if seat and seat.status == "active" else set()
    # Without the earlier mails, only the invites this run touched are known.
    known = expected if complete else expected & last.keys()
    assert standing == known, "the standing invites are not exactly the seat holder's"


def uid_of(conf: Conference, email: str) -> str:
    return invite_uid(conf.slug, REG, email, conf.sender_domain)


def kinds(notices: Sequence[Notice]) -> list[Kind]:
    return [n.kind for n in notices]


def test_created_sends_one_confirmation(conference: Conference) -> None:
    run = apply(conference, [created(0)])
    (notice,) = run.last.notices
    assert notice.kind is Kind.CONFIRMATION
    assert notice.recipient.email == METTE["email"]
    assert notice.invite == InviteSpec("REQUEST", uid_of(conference, METTE["email"]), 0)
    assert run.seat is not None
    assert (run.seat.attendee.email, run.seat.status) == (METTE["email"], "active")
    assert run.seat.as_of == T0


@pytest.mark.parametrize("email", [METTE["email"], "Mette.Sorensen@aarhus.dk"])
def test_created_twice_for_the_same_attendee_sends_nothing(
    conference: Conference, email: str
) -> None:
    run = apply(conference, [created(0), created(5, {**METTE, "email": email})])
    assert run.last.notices == ()
    # The seat remembers the second creation (a cancellation between the two must not win).
    assert run.seat is not None
    assert (run.seat.attendee.email, run.seat.status) == (METTE["email"], "active")
    assert run.seat.as_of == T0 + timedelta(minutes=5)


def test_substitution_cancels_old_invite_and_sends_a_new_one(conference: Conference) -> None:
    run = apply(conference, [created(0), substituted(10, METTE, JENS)])
    out, into, copy = run.last.notices
    confirmation = run.plans[0].notices[0]
    assert kinds(run.last.notices) == [
        Kind.SUBSTITUTION_OUT,
        Kind.SUBSTITUTION_IN,
        Kind.SUBSTITUTION_COPY,
    ]
    assert confirmation.invite is not None
    assert out.recipient.email == METTE["email"]
    assert out.successor is not None and out.successor.email == JENS["email"]
    assert out.invite == InviteSpec("CANCEL", confirmation.invite.uid, 1)
    assert into.recipient.email == JENS["email"]
    assert into.previous is not None and into.previous.email == METTE["email"]
    assert into.invite == InviteSpec("REQUEST", uid_of(conference, JENS["email"]), 0)
    assert into.invite.uid != confirmation.invite.uid
    assert copy.recipient.email == "arrangementsinfo@kl.dk"
    assert copy.invite is None
    assert run.seat is not None and run.seat.attendee.email == JENS["email"]


def test_substitution_before_creation(conference: Conference) -> None:
    run = apply(conference, [substituted(10, METTE, JENS)])
    out, into, _copy = run.last.notices
    assert out.invite == InviteSpec("CANCEL", uid_of(conference, METTE["email"]), 1)
    assert into.invite == InviteSpec("REQUEST", uid_of(conference, JENS["email"]), 0)
    assert run.seat is not None and run.seat.attendee.email == JENS["email"]


def test_creation_arriving_after_a_later_substitution_sends_nothing(
    conference: Conference,
) -> None:
    run = apply(conference, [substituted(10, METTE, JENS), created(0)])
    assert run.last.notices == ()
    assert run.last.note.startswith("newer facts already applied")
    assert run.seat is not None and run.seat.attendee.email == JENS["email"]


def test_chain_cancels_the_middle_attendee(conference: Conference) -> None:
    events: list[Event] = [
        created(0),
        substituted(10, METTE, JENS),
        substituted(20, JENS, ASTRID),
    ]
    out, into, _copy = apply(conference, events).last.notices
    assert out.recipient.email == JENS["email"]
    assert out.invite == InviteSpec("CANCEL", uid_of(conference, JENS["email"]), 1)
    assert into.invite == InviteSpec("REQUEST", uid_of(conference, ASTRID["email"]), 0)


def test_seat_passed_back_reuses_the_uid_with_a_higher_sequence(conference: Conference) -> None:
    events: list[Event] = [
        created(0),
        substituted(10, METTE, JENS),
        substituted(20, JENS, METTE),
    ]
    run = apply(conference, events)
    cancel_of_mette = run.plans[1].notices[0].invite
    into = run.last.notices[1]
    assert cancel_of_mette is not None and into.invite is not None
    assert into.invite.uid == cancel_of_mette.uid
    assert into.invite.method == "REQUEST"
    assert into.invite.sequence > cancel_of_mette.sequence


def test_substitution_to_the_same_address_does_nothing(conference: Conference) -> None:
    same = {**METTE, "email": "METTE.SORENSEN@aarhus.dk", "name": "Mette S."}
    run = apply(conference, [created(0), substituted(10, METTE, same)])
    assert run.last.notices == ()
    assert run.last.seat is None


def test_roster_attendee_other_than_previous_also_loses_the_invite(
    conference: Conference,
) -> None:
    run = apply(conference, [created(0, ASTRID), substituted(10, METTE, JENS)])
    notices = run.last.notices
    assert kinds(notices) == [
        Kind.SUBSTITUTION_OUT,
        Kind.SUBSTITUTION_OUT,
        Kind.SUBSTITUTION_IN,
        Kind.SUBSTITUTION_COPY,
    ]
    cancelled_for = {n.recipient.email: n.invite for n in notices[:2]}
    assert cancelled_for[ASTRID["email"]] == InviteSpec(
        "CANCEL", uid_of(conference, ASTRID["email"]), 1
    )
    assert cancelled_for[METTE["email"]] == InviteSpec(
        "CANCEL", uid_of(conference, METTE["email"]), 1
    )
    assert run.last.note


def test_cancellation_cancels_the_current_invite(conference: Conference) -> None:
    run = apply(conference, [created(0), cancelled(30)])
    (notice,) = run.last.notices
    assert notice.kind is Kind.CANCELLATION
    assert notice.recipient.email == METTE["email"]
    assert notice.invite == InviteSpec("CANCEL", uid_of(conference, METTE["email"]), 1)
    assert run.seat is not None
    assert (run.seat.status, run.seat.as_of) == ("cancelled", T0 + timedelta(minutes=30))


def test_cancellation_after_substitution_reaches_the_new_attendee(
    conference: Conference,
) -> None:
    run = apply(conference, [created(0), substituted(10, METTE, JENS), cancelled(30)])
    (notice,) = run.last.notices
    assert notice.recipient.email == JENS["email"]
    assert notice.invite == InviteSpec("CANCEL", uid_of(conference, JENS["email"]), 1)


def test_cancellation_of_an_unknown_registration_raises(conference: Conference) -> None:
    with pytest.raises(UnknownRegistration, match=REG) as raised:
        plan_cancelled(cancelled(30), None, conference)
    assert raised.value.registration == REG


def test_second_cancellation_sends_nothing(conference: Conference) -> None:
    run = apply(conference, [created(0), cancelled(30), cancelled(40)])
    assert run.last.notices == ()


def test_substitution_of_a_cancelled_registration_is_ignored(conference: Conference) -> None:
    run = apply(conference, [created(0), cancelled(30), substituted(40, METTE, JENS)])
    # Only the organiser's copy, which says that nobody is sent anything.
    (copy,) = run.last.notices
    assert (copy.kind, copy.told) == (Kind.SUBSTITUTION_COPY, ())
    assert run.seat is not None and run.seat.status == "cancelled"


def test_new_creation_after_cancellation_confirms_with_a_higher_sequence(
    conference: Conference,
) -> None:
    run = apply(conference, [created(0), cancelled(30), created(40)])
    (notice,) = run.last.notices
    assert notice.invite == InviteSpec("REQUEST", uid_of(conference, METTE["email"]), 2)


@pytest.mark.parametrize(
    "late",
    [substituted(5, METTE, JENS), created(5, JENS)],
    ids=["substitution", "creation"],
)
def test_stale_events_change_nothing(conference: Conference, late: Event) -> None:
    run = apply(conference, [created(0), substituted(10, METTE, ASTRID), late])
    # A late substitution still gives the organiser a copy, which says nobody is sent
    # anything; a late creation sends nothing.
    copies = [(n.kind, n.told) for n in run.last.notices]
    if isinstance(late, RegistrationSubstituted):
        assert copies == [(Kind.SUBSTITUTION_COPY, ())]
    else:
        assert copies == []
    assert run.seat is not None
    assert (run.seat.attendee.email, run.seat.status) == (ASTRID["email"], "active")
    assert run.seat.as_of == T0 + timedelta(minutes=10)


def test_late_cancellation_before_a_substitution_cancels_the_seat(
    conference: Conference,
) -> None:
    """In time order the substitution at 10 met a cancelled registration and was ignored, so
    the registration ends cancelled, and Astrid's invite (sent when the substitution came
    first) is cancelled."""
    run = apply(conference, [created(0), substituted(10, METTE, ASTRID), cancelled(5)])
    (notice,) = run.last.notices
    assert notice.kind is Kind.CANCELLATION
    assert notice.recipient.email == ASTRID["email"]
    assert notice.invite == InviteSpec("CANCEL", uid_of(conference, ASTRID["email"]), 1)
    assert run.seat is not None
    assert (run.seat.attendee.email, run.seat.status) == (METTE["email"], "cancelled")


def test_substitution_with_an_equal_time_follows_the_one_before(conference: Conference) -> None:
    """Issue 11, defect 7: Mette -> Jens and Jens -> Astrid in the same second."""
    events: list[Event] = [
        created(0),
        substituted(10, METTE, JENS, "evt-a"),
        substituted(10, JENS, ASTRID, "evt-b"),
    ]
    run = apply(conference, events)
    out, into, _copy = run.last.notices
    assert out.recipient.email == JENS["email"]
    assert out.invite == InviteSpec("CANCEL", uid_of(conference, JENS["email"]), 1)
    assert into.recipient.email == ASTRID["email"]
    assert into.invite == InviteSpec("REQUEST", uid_of(conference, ASTRID["email"]), 0)
    assert run.seat is not None and run.seat.attendee.email == ASTRID["email"]


def test_creation_that_changes_nothing_still_outranks_an_older_cancellation(
    conference: Conference,
) -> None:
    """Issue 11, defect 8: in time order Mette is cancelled at 30 and registers again at 40."""
    run = apply(conference, [created(0), created(40, event_id="evt-again"), cancelled(30)])
    assert [p.notices for p in run.plans[1:]] == [(), ()]
    assert run.seat is not None
    assert (run.seat.attendee.email, run.seat.status) == (METTE["email"], "active")


def test_creation_with_another_attendee_leaves_no_stale_invite(conference: Conference) -> None:
    apply(conference, [created(0), created(5, JENS)])


def test_planning_is_pure(conference: Conference) -> None:
    seat = apply(conference, [created(0)]).seat
    assert seat is not None
    before = dict(seat.sequences)
    event = substituted(10, METTE, JENS)
    assert plan_substituted(event, seat, conference) == plan_substituted(event, seat, conference)
    plan_cancelled(cancelled(30), seat, conference)
    assert seat.sequences == before


def test_notice_keys_are_distinct_and_derived_from_the_event(conference: Conference) -> None:
    run = apply(conference, [created(0, ASTRID), substituted(10, METTE, JENS)])
    keys = [n.key for n in run.notices]
    assert keys == [
        "evt-created-0:confirmation",
        "evt-substituted-10:out",
        "evt-substituted-10:out-roster",
        "evt-substituted-10:in",
        "evt-substituted-10:copy",
    ]


def _reminder_invite(seat: Seat, conference: Conference) -> InviteSpec | None:
    probe = Notice("r", Kind.REMINDER, conference.slug, seat.registration, seat.attendee)
    ready = prepare(probe, seat, conference).notice
    return ready.invite if ready else None


def test_reminder_carries_the_current_invite(conference: Conference) -> None:
    first = apply(conference, [created(0)]).seat
    swapped = apply(conference, [created(0), substituted(10, METTE, JENS)]).seat
    back = apply(
        conference, [created(0), substituted(10, METTE, JENS), substituted(20, JENS, METTE)]
    ).seat
    assert first is not None and swapped is not None and back is not None
    mette, jens = uid_of(conference, METTE["email"]), uid_of(conference, JENS["email"])
    assert _reminder_invite(first, conference) == InviteSpec("REQUEST", mette, 0)
    assert _reminder_invite(swapped, conference) == InviteSpec("REQUEST", jens, 0)
    assert _reminder_invite(back, conference) == InviteSpec("REQUEST", mette, 2)


def test_notices_survive_json(conference: Conference) -> None:
    run = apply(conference, [created(0), substituted(10, METTE, JENS), cancelled(30)])
    for notice in run.notices:
        assert Notice.from_json(notice.to_json()) == notice


def test_registration_time_is_the_first_fact(conference: Conference) -> None:
    run = apply(conference, [created(0), substituted(10, METTE, JENS), cancelled(30)])
    assert run.seat is not None
    assert run.seat.registered_at == T0


def test_seat_survives_json(conference: Conference) -> None:
    seat = apply(conference, [created(0), substituted(10, METTE, JENS)]).seat
    assert seat is not None
    assert Seat.from_json(seat.to_json()) == seat


def _coming(run: Run) -> Notice:
    (into,) = [n for n in run.last.notices if n.kind is Kind.SUBSTITUTION_IN]
    return into


def test_a_seat_passed_back_to_its_first_registrant_is_not_from_a_colleague(
    conference: Conference,
) -> None:
    events: list[Event] = [created(0), substituted(10, METTE, JENS)]
    there = apply(conference, events)
    back = apply(
        conference, [*events, substituted(20, JENS, {**METTE, "email": "METTE.Sorensen@aarhus.dk"})]
    )
    assert _coming(there).from_colleague is True
    assert _coming(back).from_colleague is False
    assert back.seat is not None and back.seat.first_registrant == Person(**METTE)


def test_without_the_creation_the_first_registrant_is_who_passed_the_seat_on(
    conference: Conference,
) -> None:
    run = apply(
        conference,
        [
            substituted(10, METTE, JENS),
            substituted(20, JENS, ASTRID),
            substituted(30, ASTRID, METTE),
        ],
    )
    assert _coming(apply(conference, [substituted(10, METTE, JENS)])).from_colleague is True
    assert _coming(run).from_colleague is False
    # The creation arriving late names the first registrant instead.
    late = apply(conference, [created(0, ASTRID)], run.seat)
    assert late.seat is not None and late.seat.first_registrant == Person(**ASTRID)


def test_notice_json_without_the_flag_is_from_a_colleague(conference: Conference) -> None:
    into = _coming(apply(conference, [substituted(10, METTE, JENS)]))
    old = json.loads(into.to_json())
    del old["from_colleague"]
    assert Notice.from_json(json.dumps(old)).from_colleague is True
    back = replace(into, from_colleague=False)
    assert Notice.from_json(back.to_json()) == back


def test_a_seat_stored_before_facts_loads_and_goes_on(conference: Conference) -> None:
    """A record written by the previous version: no facts, no registered_at."""
    old = {
        "registration": REG,
        "attendee": {**JENS, "organisation": JENS.get("organisation")},
        "status": "active",
        "as_of": (T0 + timedelta(minutes=10)).isoformat(),
        "sequences": {uid_of(conference, METTE["email"]): 1, uid_of(conference, JENS["email"]): 0},
    }
    seat = Seat.from_json(json.dumps(old))
    assert (seat.attendee.email, seat.status, seat.facts) == (JENS["email"], "active", ())
    assert seat.registered_at == seat.as_of
    assert seat.first_registrant is None  # unknown: the privacy notice stays
    stale = plan_cancelled(cancelled(5), seat, conference)
    assert stale.notices == ()
    run = apply(conference, [substituted(20, JENS, METTE)], seat)
    out, into, _copy = run.last.notices
    assert out.invite == InviteSpec("CANCEL", uid_of(conference, JENS["email"]), 1)
    assert into.invite == InviteSpec("REQUEST", uid_of(conference, METTE["email"]), 2)
    assert into.from_colleague is True
    assert run.seat is not None and Seat.from_json(run.seat.to_json()) == run.seat


def test_with_people_replaces_everyone_the_seat_remembers(conference: Conference) -> None:
    seat = apply(conference, [created(0), substituted(10, METTE, JENS)]).seat
    assert seat is not None
    nobody = Person("Anonym", "anonym@example.invalid")
    text = seat.with_people(lambda _: nobody).to_json()
    for person in (METTE, JENS):
        assert person["email"] not in text and person["name"] not in text


def test_equal_times_apply_in_publication_order_whatever_the_arrival(
    conference: Conference,
) -> None:
    """A swap G -> H, then H -> G at the same minute, published in that order: Mette holds
    the seat at the end, also when the second arrives (is applied) first."""
    first = created(0)
    there, back = (
        substituted(10, METTE, JENS, "evt-there"),
        substituted(10, JENS, METTE, "evt-back"),
    )
    conf = conference
    seat = plan_created(first, None, conf, order=1).seat
    for events in ([(there, 2), (back, 3)], [(back, 3), (there, 2)]):
        current = seat
        for event, order in events:
            current = plan_substituted(event, current, conf, order=order).seat or current
        assert current is not None
        assert (current.attendee.email, current.status) == (METTE["email"], "active")
        assert current.facts[0].order == 1
