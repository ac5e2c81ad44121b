"""prepare: the SEQUENCE and recipient of each invite mail, decided just before it is sent.

Each case starts from a seat built by the planner (tests/unit/test_plan.py's helpers), sends
its mails through prepare as the delivery does (storing the seat it returns), then looks at
the next mail. The rule itself, over random programs, is tests/unit/test_itip_properties.py.
"""

from __future__ import annotations

from datetime import time

import pytest

from notifier.domain.conference import Conference
from notifier.domain.facts import InviteFacts
from notifier.domain.itip import (
    CONFERENCE_CANCELLED,
    NO_INVITE_YET,
    NOT_HELD,
    NOTHING_TO_CANCEL,
    TOLD_CONFERENCE_CANCELLED,
    UP_TO_DATE,
    Prepared,
    before,
    prepare,
    would_update,
)
from notifier.domain.notice import InviteSpec, Kind, Notice, Person
from notifier.domain.plan import Seat
from tests.events import JENS, METTE
from tests.unit.support import SLUG
from tests.unit.test_plan import REG, Run, apply, cancelled, created, substituted, uid_of

BATCH = f"{SLUG}:update-1"


@pytest.fixture
def cancelled_conference(conference: Conference) -> Conference:
    return conference.model_copy(update={"cancelled": True, "cancellation_note": "Aflyst."})


def send_all(run: Run, conf: Conference) -> Seat:
    """Send the run's mails in order, as the delivery does: each stores its seat first."""
    seat = run.seat
    assert seat is not None
    for notice in run.notices:
        seat = prepare(notice, seat, conf).seat or seat
    return seat


def seat_kind(kind: Kind, seat: Seat, key: str = "") -> Notice:
    """A reminder, update or conference cancellation as a batch plans it: the recipient is
    the seat's attendee when planned (read again when sent)."""
    key = key or f"{kind.value}:{BATCH}:{seat.registration}"
    return Notice(key, kind, SLUG, seat.registration, seat.attendee, batch=BATCH)


def ready(result: Prepared) -> Notice:
    assert result.notice is not None, result.reason
    return result.notice


def test_a_reminder_after_an_unannounced_time_change_raises_the_sequence(
    conference: Conference, timed_conference: Conference
) -> None:
    seat = send_all(apply(conference, [created(0)]), conference)
    result = prepare(seat_kind(Kind.REMINDER, seat), seat, timed_conference)
    mail = ready(result)
    uid = uid_of(conference, METTE["email"])
    assert mail.invite == InviteSpec("REQUEST", uid, 1)
    assert mail.kind is Kind.REMINDER
    # The mail shows what changed: it says what the invite carried before.
    assert mail.changed_from == conference.invite_facts.text("REQUEST")
    assert result.seat is not None
    carried = result.seat.carried[uid]
    assert (carried.sequence, carried.facts) == (1, timed_conference.invite_facts.text("REQUEST"))


def test_the_same_facts_keep_the_sequence(conference: Conference) -> None:
    seat = send_all(apply(conference, [created(0)]), conference)
    result = prepare(seat_kind(Kind.REMINDER, seat), seat, conference)
    assert ready(result).invite == InviteSpec("REQUEST", uid_of(conference, METTE["email"]), 0)
    assert ready(result).changed_from is None
    uid = uid_of(conference, METTE["email"])
    after = result.seat or seat
    assert (after.carried[uid].sequence, after.carried[uid].facts) == (
        0,
        conference.invite_facts.text("REQUEST"),
    )
    # A mail sent again (a retry, or a resend after an unknown outcome) stays the same.
    confirmation = apply(conference, [created(0)]).notices[0]
    again = ready(prepare(confirmation, after, conference))
    assert (again.invite, again.changed_from) == (confirmation.invite, None)


def test_a_confirmation_planned_before_a_cancel_is_still_sent_first(
    conference: Conference,
) -> None:
    """Nothing is skipped as superseded: the attendee who held the seat gets the
    confirmation, then its CANCEL at a higher SEQUENCE (the order at the relay is kept per
    UID by the outbox)."""
    run = apply(conference, [created(0), cancelled(30)])
    confirmation, cancellation = run.notices
    assert run.seat is not None
    sent = prepare(confirmation, run.seat, conference)
    assert ready(sent).invite == confirmation.invite
    seat = sent.seat or run.seat
    cancel = ready(prepare(cancellation, seat, conference)).invite
    assert cancel is not None and confirmation.invite is not None
    assert (cancel.method, cancel.uid) == ("CANCEL", confirmation.invite.uid)
    assert cancel.sequence > confirmation.invite.sequence


def test_a_cancel_planned_after_a_raised_sequence_is_above_it(
    conference: Conference, timed_conference: Conference
) -> None:
    seat = send_all(apply(conference, [created(0)]), conference)
    seat = prepare(seat_kind(Kind.REMINDER, seat), seat, timed_conference).seat or seat
    uid = uid_of(conference, METTE["email"])
    assert seat.carried[uid].sequence == 1  # raised at send time, never planned
    run = apply(timed_conference, [cancelled(30)], seat)
    [cancellation] = run.notices
    assert cancellation.invite == InviteSpec("CANCEL", uid, 2)
    assert run.seat is not None
    mail = ready(prepare(cancellation, run.seat, timed_conference))
    assert mail.invite == InviteSpec("CANCEL", uid, 2)
    assert mail.changed_from is None  # a planned notice tells no changes


@pytest.mark.parametrize("kind", [Kind.CONFIRMATION, Kind.SUBSTITUTION_IN, Kind.REMINDER])
def test_request_kinds_for_a_cancelled_conference_are_skipped(
    conference: Conference, cancelled_conference: Conference, kind: Kind
) -> None:
    events = [created(0)] if kind is Kind.CONFIRMATION else [substituted(10, METTE, JENS)]
    run = apply(conference, events)
    assert run.seat is not None
    if kind is Kind.REMINDER:
        notice = seat_kind(kind, run.seat)
    else:
        [notice] = [n for n in run.notices if n.kind is kind]
    result = prepare(notice, run.seat, cancelled_conference)
    assert (result.notice, result.reason) == (None, CONFERENCE_CANCELLED)
    # Nothing was carried: the attendee's invite says nothing yet
    assert before(result.seat or run.seat, cancelled_conference) is None


@pytest.mark.parametrize("kind", [Kind.CONFIRMATION, Kind.SUBSTITUTION_IN])
def test_a_request_withheld_while_cancelled_is_made_up_for_by_the_next_update(
    conference: Conference, cancelled_conference: Conference, kind: Kind
) -> None:
    events = [created(0)] if kind is Kind.CONFIRMATION else [substituted(10, METTE, JENS)]
    run = apply(conference, events)
    assert run.seat is not None
    [notice] = [n for n in run.notices if n.kind is kind]
    seat = prepare(notice, run.seat, cancelled_conference).seat or run.seat
    # The file says otherwise again (the cancellation was never announced)
    assert would_update(seat, conference)
    mail = ready(prepare(seat_kind(Kind.UPDATE, seat), seat, conference))
    assert mail.recipient == notice.recipient
    assert mail.invite is not None and mail.invite.method == "REQUEST"
    assert notice.invite is not None and mail.invite.uid == notice.invite.uid
    assert mail.changed_from is None  # they never held another version


def test_cancel_kinds_still_go_for_a_cancelled_conference(
    conference: Conference, cancelled_conference: Conference
) -> None:
    run = apply(conference, [created(0), substituted(10, METTE, JENS)])
    assert run.seat is not None
    [out] = [n for n in run.notices if n.kind is Kind.SUBSTITUTION_OUT]
    mail = ready(prepare(out, run.seat, cancelled_conference))
    assert mail.invite == InviteSpec("CANCEL", uid_of(conference, METTE["email"]), 1)


def test_an_update_with_nothing_carried_yet_waits_for_the_confirmation(
    conference: Conference, timed_conference: Conference
) -> None:
    run = apply(conference, [created(0)])
    assert run.seat is not None
    result = prepare(seat_kind(Kind.UPDATE, run.seat), run.seat, timed_conference)
    assert result == Prepared(None, reason=NO_INVITE_YET)
    assert not would_update(run.seat, timed_conference)
    # The confirmation, sent after the edit, carries the new facts at its planned SEQUENCE.
    mail = ready(prepare(run.notices[0], run.seat, timed_conference))
    assert mail.invite == InviteSpec("REQUEST", uid_of(conference, METTE["email"]), 0)


def test_an_update_for_an_invite_already_current_is_skipped(
    conference: Conference, timed_conference: Conference
) -> None:
    seat = send_all(apply(conference, [created(0)]), timed_conference)
    assert prepare(seat_kind(Kind.UPDATE, seat), seat, timed_conference) == Prepared(
        None, reason=UP_TO_DATE
    )
    assert not would_update(seat, timed_conference)
    assert before(seat, timed_conference) == timed_conference.invite_facts.text("REQUEST")


def test_an_update_after_a_change_raises_the_sequence_and_says_what_changed(
    conference: Conference, timed_conference: Conference
) -> None:
    seat = send_all(apply(conference, [created(0)]), conference)
    assert would_update(seat, timed_conference)
    result = prepare(seat_kind(Kind.UPDATE, seat), seat, timed_conference)
    mail = ready(result)
    assert (mail.kind, mail.recipient) == (Kind.UPDATE, Person(**METTE))
    assert mail.invite == InviteSpec("REQUEST", uid_of(conference, METTE["email"]), 1)
    assert mail.changed_from == conference.invite_facts.text("REQUEST")
    assert result.seat is not None and not would_update(result.seat, timed_conference)


def test_a_conference_cancellation_is_a_cancel_above_everything(
    conference: Conference, timed_conference: Conference, cancelled_conference: Conference
) -> None:
    # Planned: Mette's REQUEST 0, CANCEL 1 and REQUEST 2; sent: the last one, after an edit
    # (carried 3 > planned 2).
    run = apply(
        conference, [created(0), substituted(10, METTE, JENS), substituted(20, JENS, METTE)]
    )
    assert run.seat is not None
    uid = uid_of(conference, METTE["email"])
    assert run.seat.sequences[uid] == 2
    seat = run.seat
    seat = prepare(run.notices[-2], seat, conference).seat or seat  # REQUEST 2 to Mette
    seat = prepare(seat_kind(Kind.REMINDER, seat), seat, timed_conference).seat or seat
    assert seat.carried[uid].sequence == 3
    result = prepare(seat_kind(Kind.UPDATE, seat), seat, cancelled_conference)
    mail = ready(result)
    assert mail.kind is Kind.CONFERENCE_CANCELLATION
    assert mail.invite == InviteSpec("CANCEL", uid, 4)
    assert mail.changed_from == timed_conference.invite_facts.text("REQUEST")
    assert result.seat is not None
    after = result.seat
    # Announced again: the invite is cancelled already.
    again = prepare(
        seat_kind(Kind.CONFERENCE_CANCELLATION, after, "again"), after, cancelled_conference
    )
    assert again == Prepared(None, reason=UP_TO_DATE)
    assert not would_update(after, cancelled_conference)


def test_a_conference_cancellation_outranks_a_request_planned_but_not_recorded(
    conference: Conference, cancelled_conference: Conference
) -> None:
    run = apply(conference, [created(0)])
    assert run.seat is not None
    mail = ready(prepare(seat_kind(Kind.UPDATE, run.seat), run.seat, cancelled_conference))
    assert mail.invite == InviteSpec("CANCEL", uid_of(conference, METTE["email"]), 1)


def test_un_cancelling_sends_a_request_with_the_status_change(
    conference: Conference, cancelled_conference: Conference
) -> None:
    seat = send_all(apply(conference, [created(0)]), conference)
    off = prepare(seat_kind(Kind.CONFERENCE_CANCELLATION, seat), seat, cancelled_conference)
    assert off.seat is not None
    assert would_update(off.seat, conference)
    result = prepare(seat_kind(Kind.UPDATE, off.seat, "back"), off.seat, conference)
    mail = ready(result)
    assert mail.kind is Kind.UPDATE
    assert mail.invite == InviteSpec("REQUEST", uid_of(conference, METTE["email"]), 2)
    was, method = InviteFacts.from_text(mail.changed_from or "")
    assert (was.cancelled, method) == (True, "CANCEL")
    assert result.seat is not None and not would_update(result.seat, conference)


def test_a_reminder_for_a_cancelled_registration_is_not_sent(conference: Conference) -> None:
    run = apply(conference, [created(0), cancelled(30)])
    assert run.seat is not None
    assert prepare(seat_kind(Kind.REMINDER, run.seat), run.seat, conference) == Prepared(
        None, reason=NOT_HELD
    )
    assert prepare(seat_kind(Kind.UPDATE, run.seat), None, conference).reason == NOT_HELD


@pytest.mark.parametrize("kind", [Kind.REMINDER, Kind.UPDATE])
def test_a_seat_that_changed_hands_goes_to_the_new_holder_with_their_uid(
    conference: Conference, kind: Kind
) -> None:
    first = send_all(apply(conference, [created(0)]), conference)
    notice = seat_kind(kind, first)  # planned while Mette held the seat
    run = apply(conference, [substituted(10, METTE, JENS)], first)
    seat = send_all(run, conference)
    changed = conference.model_copy(update={"start_time": time(9, 0), "end_time": time(16, 0)})
    result = prepare(notice, seat, changed)
    mail = ready(result)
    jens = uid_of(conference, JENS["email"])
    assert mail.recipient == Person(**JENS)
    assert mail.invite == InviteSpec("REQUEST", jens, 1)
    assert result.seat is not None
    assert set(result.seat.carried) == {uid_of(conference, METTE["email"]), jens}
    assert result.seat.carried[jens].sequence == 1
    # Mette's record is untouched: her CANCEL stands.
    assert (
        result.seat.carried[uid_of(conference, METTE["email"])]
        == seat.carried[uid_of(conference, METTE["email"])]
    )
    assert result.seat.registration == REG


def test_a_registration_cancelled_after_the_conference_is_told_once(
    conference: Conference, cancelled_conference: Conference
) -> None:
    """No "your registration is cancelled" beside the conference's cancellation: a live
    invite gets the conference's cancellation; an attendee told already, or holding no
    invite, gets nothing."""
    run = apply(conference, [created(0), cancelled(30)])
    confirmation, cancellation = run.notices
    assert run.seat is not None
    live = prepare(confirmation, run.seat, conference).seat
    assert live is not None
    mail = ready(prepare(cancellation, live, cancelled_conference))
    assert (mail.kind, mail.invite and mail.invite.method) == (
        Kind.CONFERENCE_CANCELLATION,
        "CANCEL",
    )
    # Told already: the conference's cancellation reached the live invite, then the
    # registration was cancelled.
    active = apply(conference, [created(0)])
    assert active.seat is not None
    held = prepare(active.notices[0], active.seat, conference).seat
    assert held is not None
    announced = prepare(seat_kind(Kind.CONFERENCE_CANCELLATION, held), held, cancelled_conference)
    assert announced.seat is not None
    later = apply(conference, [cancelled(30)], seat=announced.seat)
    assert later.seat is not None
    assert prepare(later.notices[0], later.seat, cancelled_conference) == Prepared(
        None, reason=TOLD_CONFERENCE_CANCELLED
    )
    # Never sent an invite (the confirmation was withheld while the file said cancelled).
    assert prepare(cancellation, run.seat, cancelled_conference) == Prepared(
        None, reason=NOTHING_TO_CANCEL
    )
