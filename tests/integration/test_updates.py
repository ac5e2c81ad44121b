"""Conference updates through the Service, on real Redis and SMTP (issue 13): how update
batches are numbered and resumed, that nothing is planned or sent twice, the seat's
compare-and-set when an event lands between claim and carry, and cancelled conferences.

The conference file is a copy the test edits; the Service reads it again at every use
(check_seconds=0), so an edit takes effect at once instead of within loading.CHECK_SECONDS.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import dataclass
from email import message_from_bytes, policy
from pathlib import Path
from typing import Any

import pytest
from icalendar import Calendar

from devtools.sink import Received, Sink
from notifier.domain.itip import UP_TO_DATE
from notifier.domain.notice import Kind
from notifier.loading import Conferences
from notifier.service import Service
from notifier.store import batches as batches_module
from notifier.store import keys
from notifier.store.batches import batch_key
from notifier.store.codec import text
from notifier.store.outbox import AsyncOutbox, Claim, Turn
from notifier.store.status import status
from tests.conftest import ROOT, Clock
from tests.events import CONFERENCE, JENS, METTE, created, person, reminder, substituted

pytestmark = pytest.mark.integration

VENUE = 'name = "Scandic Falkoner"'
A = ("09:00:00", "16:00:00")
B = ("10:00:00", "15:00:00")


@dataclass(frozen=True)
class Invite:
    to: str
    method: str
    uid: str
    sequence: int
    summary: str
    start: str


def invite(received: Received) -> Invite | None:
    message = message_from_bytes(received.data, policy=policy.default)
    parts = [p for p in message.walk() if p.get_content_type() == "text/calendar"]
    if not parts:
        return None
    payload = parts[0].get_payload(decode=True)
    assert isinstance(payload, bytes)
    cal = Calendar.from_ical(payload)
    event = cal.walk("VEVENT")[0]
    return Invite(
        received.recipients[0],
        str(cal["METHOD"]),
        str(event["UID"]),
        int(str(event["SEQUENCE"])),
        str(event["SUMMARY"]),
        text(event["DTSTART"].to_ical()),
    )


def invites(sink: Sink, since: int = 0) -> list[Invite]:
    return [i for i in (invite(r) for r in sink.received[since:]) if i is not None]


class ConfFile:
    """The test's copy of the shipped conference file, rewritten from the original."""

    def __init__(self, folder: Path) -> None:
        folder.mkdir()
        self.path = Path(shutil.copy(ROOT / "conferences" / f"{CONFERENCE}.toml", folder))
        self.original = self.path.read_text(encoding="utf-8")

    def write(
        self, times: tuple[str, str] | None = None, venue: str = "", cancelled: bool = False
    ) -> None:
        head = ""  # top-level keys go before the file's first table
        if times:
            head += f"start_time = {times[0]}\nend_time = {times[1]}\n"
        if cancelled:
            head += 'cancelled = true\ncancellation_note = "Aflyst på grund af sne."\n'
        text = head + self.original
        if venue:
            text = text.replace(VENUE, f'name = "{venue}"')
        self.path.write_text(text, encoding="utf-8")


@pytest.fixture
def conf_file(tmp_path: Path) -> ConfFile:
    return ConfFile(tmp_path / "conferences")


@pytest.fixture
def svc(service: Callable[..., Service], conf_file: ConfFile) -> Service:
    made = service(conferences_dir=str(conf_file.path.parent))
    # Read the file at every use: an edit takes effect at once (nothing sent yet, so the
    # delivery made later uses this one too).
    made.conferences = Conferences(conf_file.path.parent, check_seconds=0)
    return made


def updated(event_id: str, at: str = "2024-03-01T10:00:00+01:00") -> dict[str, Any]:
    return {
        "id": event_id,
        "type": "conference.updated",
        "occurred_at": at,
        "conference": CONFERENCE,
    }


def run(svc: Service, *events: dict[str, Any]) -> None:
    for event in events:
        svc.deliver(svc.ingest(event))


def register(svc: Service, n: int) -> None:
    run(svc, *(created(f"c{i}", f"R{i}", person(i)) for i in range(n)))


def sorted_batches(svc: Service) -> list[str]:
    return sorted(text(k) for k in svc.r.smembers(keys.BATCHES))


def members(svc: Service, key: str) -> set[str]:
    return {text(k) for k in svc.r.smembers(keys.batch_members(key))}


# -- numbering ---------------------------------------------------------------------------------


def test_update_batches_are_numbered_by_the_facts_announced(
    svc: Service, conf_file: ConfFile, sink: Sink
) -> None:
    register(svc, 2)
    conf_file.write(times=A)
    run(svc, updated("u1"))
    first = batch_key(CONFERENCE, "update-1")
    assert len(members(svc, first)) == 2
    # The same facts again (another event): the same batch, nothing planned twice
    assert svc.ingest(updated("u2")) == []
    assert sorted_batches(svc) == [first]
    assert len(members(svc, first)) == 2
    # New facts: the next number; back to A: a new number again, not update-1
    conf_file.write(times=B)
    run(svc, updated("u3"))
    conf_file.write(times=A)
    run(svc, updated("u4"))
    assert sorted_batches(svc) == [batch_key(CONFERENCE, f"update-{n}") for n in (1, 2, 3)]
    for n in (1, 2, 3):
        info = svc.batches.get(batch_key(CONFERENCE, f"update-{n}"))
        assert info is not None
        assert (info.kind, info.state, info.total) == (Kind.UPDATE, "planned", 2)
    # Each attendee: the confirmation, then one update per announcement, SEQUENCE rising
    for i in range(2):
        mine = [v for v in invites(sink) if v.to == person(i)["email"]]
        assert [(v.method, v.sequence, v.start) for v in mine] == [
            ("REQUEST", 0, "20240422"),
            ("REQUEST", 1, "20240422T090000"),
            ("REQUEST", 2, "20240422T100000"),
            ("REQUEST", 3, "20240422T090000"),
        ]


class Crash(Exception):
    """The planner dies after its first page."""


def test_a_half_planned_batch_whose_facts_were_superseded_is_closed_with_its_members(
    svc: Service, conf_file: ConfFile, monkeypatch: pytest.MonkeyPatch, clock: Clock
) -> None:
    register(svc, 3)
    conf_file.write(times=A)
    monkeypatch.setattr(batches_module, "PAGE", 1)  # one seat a page

    def crash(_keys: list[str]) -> None:
        raise Crash

    conf, now = svc.conferences.get(CONFERENCE), clock().timestamp()
    with pytest.raises(Crash):
        svc.batches.plan(svc.batches.open_update(conf, clock(), now), conf, now, crash)
    first = batch_key(CONFERENCE, "update-1")
    info = svc.batches.get(first)
    assert info is not None and (info.state, len(members(svc, first))) == ("planning", 1)
    # The facts change before the planner is run again: update-2 announces them
    conf_file.write(times=B)
    keys2 = svc.ingest(updated("u2"))
    assert len(keys2) == 3
    closed = svc.batches.get(first)
    assert closed is not None and (closed.state, closed.total) == ("planned", 1)
    second = svc.batches.get(batch_key(CONFERENCE, "update-2"))
    assert second is not None and (second.state, second.total) == ("planned", 3)


def test_a_conference_updated_event_delivered_twice_sends_each_update_once(
    svc: Service, conf_file: ConfFile, sink: Sink
) -> None:
    register(svc, 3)
    before = len(sink.received)
    conf_file.write(venue="Bella Center")
    event = updated("u1")
    first, again = svc.ingest(event), svc.ingest(event)  # redelivered before it was sent
    assert sorted(first) == sorted(again) and len(first) == 3
    svc.deliver(first)
    svc.deliver(again)
    run(svc, event)  # and once more after
    sent = invites(sink, before)
    assert sorted(v.to for v in sent) == sorted(person(i)["email"] for i in range(3))
    assert {(v.method, v.sequence) for v in sent} == {("REQUEST", 1)}
    assert status(svc.r, "update-1").counts["sent"] == 3


def test_planning_again_after_a_crash_is_idempotent(
    svc: Service, conf_file: ConfFile, sink: Sink, clock: Clock
) -> None:
    register(svc, 3)
    conf_file.write(times=A)
    conf = svc.conferences.get(CONFERENCE)
    now = clock().timestamp()
    info = svc.batches.open_update(conf, clock(), now)
    pages: list[list[str]] = []
    assert svc.batches.plan(info, conf, now, pages.append) == 3
    # Run again (the planner crashed before it recorded the batch as planned)
    again: list[list[str]] = []
    assert svc.batches.plan(info, conf, now, again.append) == 3
    planned = [k for page in pages for k in page]
    assert sorted(k for page in again for k in page) == sorted(planned)
    assert svc.outbox.states(planned) == dict.fromkeys(planned, "queued")
    # Opening it again resumes it: the same batch
    assert svc.batches.open_update(conf, clock(), now).key == info.key
    before = len(sink.received)
    svc.deliver(planned)
    svc.deliver(planned)
    assert len(invites(sink, before)) == 3


# -- the seat's compare-and-set ------------------------------------------------------------------


def test_a_reminder_whose_seat_changes_hands_after_the_claim_waits_for_the_new_holder(
    svc: Service, conf_file: ConfFile, sink: Sink, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The seat changes hands between the claim and the reminder's turn: the turn finds the
    seat changed, the reminder goes to the new holder, and only after his confirmation,
    which was planned first for his invite UID."""
    run(svc, created("c1", "R1", METTE))
    conf_file.write(times=A)  # not announced: the reminder raises the SEQUENCE
    [key] = svc.ingest(reminder("rem", "b1"))
    real_turn = AsyncOutbox.turn
    turns: list[Turn] = []
    substitution_keys: list[str] = []

    async def turn(self: AsyncOutbox, claim: Claim, seat: str, uid: str) -> Turn:
        if not turns:  # the seat changes hands after the claim read it
            substitution_keys.extend(svc.ingest(substituted("s1", "R1", METTE, JENS)))
        found = await real_turn(self, claim, seat, uid)
        turns.append(found)
        return found

    monkeypatch.setattr(AsyncOutbox, "turn", turn)
    before = len(sink.received)
    svc.deliver([key])
    # The first turn found the seat changed; the second, for Jens's UID, waits behind his
    # confirmation: nothing is sent, and the reminder is queued without a counted attempt.
    assert [(t.held, t.waiting, bool(t.seat)) for t in turns] == [
        (False, False, True),
        (False, True, False),
    ]
    assert len(sink.received) == before
    record = svc.outbox.get(key)
    assert record is not None and (record.state, record.attempts) == ("queued", 0)
    # The substitution's mails; Jens's confirmation settling hands the reminder on, and it
    # goes in the same call, after it.
    svc.deliver(substitution_keys)
    sent = [(v.to, v.method, v.sequence) for v in invites(sink, before)]
    assert sorted(sent[:2]) == sorted(
        [(METTE["email"], "CANCEL", 1), (JENS["email"], "REQUEST", 0)]
    )
    assert sent[2:] == [(JENS["email"], "REQUEST", 0)]
    assert invites(sink, before)[-1].start == "20240422T090000"
    jens_confirmation = next(
        i for i, v in enumerate(invites(sink, before)) if v.to == JENS["email"]
    )
    assert jens_confirmation < 2
    record = svc.outbox.get(key)
    assert record is not None and record.state == "sent"


def test_a_registration_for_a_cancelled_conference_is_a_dead_letter(
    svc: Service, conf_file: ConfFile, sink: Sink
) -> None:
    register(svc, 1)
    before = len(sink.received)
    conf_file.write(cancelled=True)
    assert svc.ingest(created("late", "R9", person(9))) == []
    assert svc.ingest(substituted("swap", "R0", person(0), person(8))) == []
    assert svc.ingest(reminder("rem", "b1")) == []
    letters = {d.event_id: d for d in svc.dead.list()}
    assert sorted(letters) == ["late", "rem", "swap"]
    for letter in letters.values():
        assert letter.fields == ("conference",)
        assert f"conference {CONFERENCE} is cancelled" in letter.reason
    assert "no confirmation is sent" in letters["late"].reason
    assert svc.roster.seat(CONFERENCE, "R9") is None
    seat = svc.roster.seat(CONFERENCE, "R0")
    assert seat is not None and seat.attendee.email == person(0)["email"]
    assert not svc.r.keys(keys.message("late*")) and not svc.r.keys(keys.message("swap*"))
    assert len(sink.received) == before


# -- defects found by tests/unit/test_itip_properties.py -------------------------------------------
# Both failed before the fixes made while these tests were written: the seat records which
# message carried what, and an announcement resumes a batch only while it still stands.


def test_an_update_retried_after_a_temporary_failure_is_sent(
    svc: Service, conf_file: ConfFile, sink: Sink, clock: Clock
) -> None:
    register(svc, 1)
    conf_file.write(times=A)
    sink.script.data.append("451 4.3.0 try again later")
    keys_ = svc.ingest(updated("u1"))
    svc.deliver(keys_)
    assert svc.outbox.states(keys_) == dict.fromkeys(keys_, "retrying")
    clock.advance(5)
    svc.deliver(svc.due())
    record = svc.outbox.get(keys_[0])
    assert record is not None
    assert record.last_reply != UP_TO_DATE
    assert [(v.method, v.sequence) for v in invites(sink)] == [("REQUEST", 0), ("REQUEST", 1)]


def test_an_unannounced_edit_that_a_mail_carried_is_corrected_when_reverted(
    svc: Service, conf_file: ConfFile, sink: Sink
) -> None:
    register(svc, 1)
    conf_file.write(times=A)
    run(svc, updated("u1"))
    conf_file.write(times=B)  # by mistake, not announced; a reminder carries it
    run(svc, reminder("rem", "b1"))
    conf_file.write(times=A)  # put back, and announced
    run(svc, updated("u2"))
    last = invites(sink)[-1]
    assert (last.to, last.start) == (person(0)["email"], "20240422T090000")
