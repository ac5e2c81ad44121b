"""The iTIP rule, applied when a mail is about to be sent. Pure functions.

Whenever a mail carries an invite whose facts differ from what that UID last carried, its
SEQUENCE is higher than any that UID has had (RFC 5546 §2.1.4: a calendar applies an invite
only if its SEQUENCE is at least the one it has, and takes a changed event at the same
SEQUENCE for no change at all).

Events plan a SEQUENCE for each invite (`Seat.sequences`). The facts, though, are read from
the conference file when the mail is composed, which may be long after planning and after an
edit nobody announced. So just before sending, each invite mail is *prepared*: its SEQUENCE is
raised above what the UID carried if the facts differ, and `Prepared.seat` holds the record
of what it carries (`Seat.carried`). The caller records it once the relay has the mail; mails
for one UID are sent one at a time, in planned order, so each is prepared against what the
one before it left. Only a REQUEST withheld while the conference is cancelled (never sent)
is recorded at once.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from notifier.domain.conference import Conference
from notifier.domain.facts import InviteFacts, Method
from notifier.domain.notice import SEAT_KINDS, InviteSpec, Kind, Notice
from notifier.domain.plan import WITHHELD, Carried, Seat, seat_uid

# Why a mail is not sent after all (recorded as the message's reply, state `skipped`).
NOT_HELD = "seat no longer held by this attendee"
CONFERENCE_CANCELLED = "the conference is cancelled: no invite is sent for it"
NO_INVITE_YET = "no invite sent yet: the mail still to come carries the current facts"
UP_TO_DATE = "the attendee's invite already carries these facts"
TOLD_CONFERENCE_CANCELLED = "the attendee has been told that the conference is cancelled"
NOTHING_TO_CANCEL = "no invite was sent to this attendee: nothing to cancel"


@dataclass(frozen=True, slots=True)
class Prepared:
    """The notice to compose (None: nothing is sent, for `reason`) and the seat to store
    first (None: unchanged)."""

    notice: Notice | None
    seat: Seat | None = None
    reason: str = ""


def prepare(notice: Notice, seat: Seat | None, conf: Conference) -> Prepared:
    """Make a claimed notice ready to send against the seat as it is now."""
    if notice.kind in SEAT_KINDS:
        return _for_holder(notice, seat, conf)
    if notice.invite is None or seat is None:
        # No invite, or a message stored before messages named their seat: as planned.
        return Prepared(notice)
    # Every mail planned for a UID goes, in its turn (none is skipped as superseded): an
    # attendee who held the seat even briefly gets the confirmation before its CANCEL, and
    # the notices that say so to others are true.
    spec = notice.invite
    if conf.cancelled and spec.method == "REQUEST":
        return _withheld(notice, seat, spec.uid, spec.sequence)
    if conf.cancelled and notice.kind is Kind.CANCELLATION:
        return _cancelled_with_conference(notice, seat, conf, spec.sequence)
    return _stamped(notice, seat, conf, spec.method, spec.sequence, show_changes=False)


def _cancelled_with_conference(
    notice: Notice, seat: Seat, conf: Conference, planned: int
) -> Prepared:
    """A registration cancelled after the conference was called off: no "your registration
    is cancelled" beside the conference's cancellation. Whoever still holds a REQUEST gets
    the conference's cancellation; whoever was told already, or got nothing, gets nothing."""
    assert notice.invite is not None
    carried = seat.carried.get(notice.invite.uid)
    if carried is None or carried.facts == WITHHELD:
        return Prepared(None, reason=NOTHING_TO_CANCEL)
    if _told(carried, conf.invite_facts.text("CANCEL"), notice):
        return Prepared(None, reason=TOLD_CONFERENCE_CANCELLED)
    ready = _stamped(notice, seat, conf, "CANCEL", planned)
    assert ready.notice is not None
    return replace(ready, notice=replace(ready.notice, kind=Kind.CONFERENCE_CANCELLATION))


def _withheld(notice: Notice, seat: Seat, uid: str, planned: int) -> Prepared:
    """Not sent while the conference is cancelled; recorded, so that an update after the
    file says otherwise again gives the attendee the invite they never got."""
    carried = seat.carried.get(uid)
    if carried is not None and carried.facts != WITHHELD:
        return Prepared(None, reason=CONFERENCE_CANCELLED)  # they hold something already
    record = Carried(max(planned, carried.sequence if carried else 0), WITHHELD, notice.key)
    return Prepared(None, _recording(seat, uid, record), CONFERENCE_CANCELLED)


def _for_holder(notice: Notice, seat: Seat | None, conf: Conference) -> Prepared:
    """Reminders and updates go to whoever holds the seat now, with that person's invite."""
    if seat is None or seat.status != "active":
        return Prepared(None, reason=NOT_HELD)
    holder = replace(notice, recipient=seat.attendee)
    uid = seat_uid(seat, conf)
    planned = seat.sequences.get(uid, 0)
    carried = seat.carried.get(uid)
    if conf.cancelled:
        if notice.kind is Kind.REMINDER:
            return Prepared(None, reason=CONFERENCE_CANCELLED)
        if _told(carried, conf.invite_facts.text("CANCEL"), notice):
            return Prepared(None, reason=UP_TO_DATE)
        # Above whatever was planned, as a CANCEL always is: the REQUEST planned may have
        # gone out without being recorded (a message stored before seats recorded it).
        kind = Kind.CONFERENCE_CANCELLATION
        return _stamped(replace(holder, kind=kind), seat, conf, "CANCEL", planned + 1)
    if notice.kind is not Kind.REMINDER:
        if carried is None or _cancelled_registration(carried):
            return Prepared(None, reason=NO_INVITE_YET)
        if _told(carried, conf.invite_facts.text("REQUEST"), notice):
            return Prepared(None, reason=UP_TO_DATE)
        holder = replace(holder, kind=Kind.UPDATE)
    return _stamped(holder, seat, conf, "REQUEST", planned)


def _told(carried: Carried | None, facts: str, notice: Notice) -> bool:
    """Another mail already carries these facts to the UID. (The notice's own earlier
    attempt does not count: it failed or may not have arrived, and is being retried.)"""
    return carried is not None and carried.facts == facts and carried.key != notice.key


def _stamped(
    notice: Notice,
    seat: Seat,
    conf: Conference,
    method: Method,
    planned: int,
    *,
    show_changes: bool = True,
) -> Prepared:
    uid = notice.invite.uid if notice.invite and notice.kind not in SEAT_KINDS else None
    uid = uid or seat_uid(seat, conf)
    facts = conf.invite_facts.text(method)
    carried = seat.carried.get(uid)
    sequence, before = planned, None
    if carried is not None:
        sequence = max(planned, carried.sequence + (carried.facts != facts))
        # A retry of the same message tells what the UID carried before its first attempt.
        before = carried.before if carried.key == notice.key else carried.facts
    changed_from = before if before and before != facts else None  # not WITHHELD
    ready = replace(
        notice,
        invite=InviteSpec(method, uid, sequence),
        changed_from=changed_from if show_changes else None,
    )
    if _unchanged(carried, sequence, facts, notice):
        return Prepared(ready)
    announces = notice.kind in (Kind.UPDATE, Kind.CONFERENCE_CANCELLATION)
    record = Carried(sequence, facts, notice.key, before, announces)
    return Prepared(ready, _recording(seat, uid, record))


def _unchanged(carried: Carried | None, sequence: int, facts: str, notice: Notice) -> bool:
    """Nothing to record: the UID carries these facts at this SEQUENCE already (a reminder
    repeating the invite, a retry), so the seat is not written. Unless an announcement
    recorded them and this is another mail: it must take the record over, or a retry of the
    announcement would announce again what this mail has told."""
    if carried is None or (carried.sequence, carried.facts) != (sequence, facts):
        return False
    return carried.key == notice.key or not carried.announces


def _recording(seat: Seat, uid: str, record: Carried) -> Seat:
    return replace(seat, carried={**seat.carried, uid: record})


def _cancelled_registration(carried: Carried) -> bool:
    """The UID last carried the CANCEL of its registration (not of the conference), yet the
    seat is active with this attendee: it came back to them, and the REQUEST planned for
    that is still to be sent, with the current facts. An update would only repeat it."""
    if carried.facts == WITHHELD:
        return False
    facts, method = InviteFacts.from_text(carried.facts)
    return method == "CANCEL" and not facts.cancelled


def awaits_invite(seat: Seat, conf: Conference) -> bool:
    """Whether the seat's attendee has no invite recorded yet while the seat is active: their
    confirmation is still to come, or on its way with facts read before an edit. An update
    batch gives such a seat a message too: it goes after that confirmation (the order of
    the UID) and is skipped if the confirmation carried the current facts."""
    notice = Notice("probe", Kind.UPDATE, conf.slug, seat.registration, seat.attendee)
    return prepare(notice, seat, conf).reason == NO_INVITE_YET


def would_update(seat: Seat, conf: Conference) -> bool:
    """Whether an update announced now has anything to tell this seat's attendee."""
    notice = Notice("probe", Kind.UPDATE, conf.slug, seat.registration, seat.attendee)
    return prepare(notice, seat, conf).notice is not None


def before(seat: Seat, conf: Conference) -> str | None:
    """The facts the seat's attendee's invite carries (InviteFacts.text), if any."""
    carried = seat.carried.get(seat_uid(seat, conf))
    return carried.facts if carried and carried.facts != WITHHELD else None
