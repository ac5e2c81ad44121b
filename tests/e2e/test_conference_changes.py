"""End to end (issue 13): conference changes reach every calendar.

One real worker, a private Redis, the test SMTP sink and a copy of the shipped conference file
that the test edits while the worker runs. The sequence: registrations, a substitution and a
cancellation; times set and announced; a reminder; the time changed again without an
announcement, then a reminder, then an update; the conference called off and announced; then
a reminder, an update and a registration, which must all send nothing.

What every mail's invite says is read back with icalendar. Per UID, in the order the relay
received the mails, a mail whose invite states other facts than that UID's previous one must
have a SEQUENCE above any the UID had (RFC 5546 §2.1.4), or calendars ignore the change.
"""

from __future__ import annotations

import os
import shutil
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
from icalendar import Calendar

from devtools.sink import Received
from notifier.domain.itip import UP_TO_DATE
from notifier.loading import CHECK_SECONDS
from notifier.store import keys
from notifier.store.codec import text
from notifier.store.deadletter import DeadLetter, DeadLetters
from notifier.store.outbox import Outbox
from notifier.store.status import Status, status
from tests.conftest import ROOT, wait_for
from tests.e2e.conftest import REMINDER, SHORT_LEASE, Stack
from tests.events import (
    ASTRID,
    CONFERENCE,
    JENS,
    METTE,
    cancelled,
    created,
    person,
    reminder,
    substituted,
)

pytestmark = pytest.mark.e2e

ORGANISER = "arrangementsinfo@kl.dk"
COLLEAGUE = person(5)  # takes over Mette's seat
KIM = person(4)
CURRENT = Counter({COLLEAGUE["email"]: 1, ASTRID["email"]: 1, KIM["email"]: 1})
LEFT = {METTE["email"], JENS["email"]}  # substituted out; cancelled
NOTE = "Vi har desværre måttet aflyse på grund af for få tilmeldte."
UPDATE = "Ændring: Kommunernes Digitaliseringstræf '24 mandag den 22. april 2024"
CALLED_OFF = "Aflyst: Kommunernes Digitaliseringstræf '24 mandag den 22. april 2024"
CANCELLED_REASON = f"conference {CONFERENCE} is cancelled"
NBSP = "\u00a0"  # Danish clock times keep "kl." and the time together
ANNOUNCED = f"Tid: ikke meldt ud → kl.{NBSP}9.00–16.00"
UNANNOUNCED = f"Tid: kl.{NBSP}9.00–16.00 → kl.{NBSP}10.00–16.00"


# -- reading what the relay received -----------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Invite:
    method: str
    uid: str
    sequence: int
    facts: tuple[object, ...]  # SUMMARY, DTSTART, DTEND, LOCATION, STATUS, METHOD
    start: date | datetime


@dataclass(frozen=True, slots=True)
class Mail:
    recipients: tuple[str, ...]
    subject: str
    text: str
    invite: Invite | None


def _when(value: date | datetime) -> date | datetime:
    """A DTSTART/DTEND as a comparable value: a date (all day) or an instant in UTC."""
    return value.astimezone(UTC) if isinstance(value, datetime) else value


def _invite(msg: EmailMessage) -> Invite | None:
    """The text/calendar part's invite; the .ics attachment must carry the same bytes."""
    parts = [p for p in msg.walk() if p.get_content_type() == "text/calendar"]
    attached = [p for p in msg.walk() if p.get_content_type() == "application/ics"]
    if not parts:
        assert not attached, "an .ics attachment without a text/calendar part"
        return None
    [part], [attachment] = parts, attached
    payload = part.get_payload(decode=True)
    assert isinstance(payload, bytes) and payload == attachment.get_payload(decode=True)
    cal = Calendar.from_ical(payload)
    [event] = cal.walk("VEVENT")
    method = str(cal["METHOD"])
    assert part.get_param("method") == method
    start = _when(event.decoded("DTSTART"))
    facts = (
        str(event["SUMMARY"]),
        start,
        _when(event.decoded("DTEND")),
        str(event["LOCATION"]),
        str(event["STATUS"]),
        method,
    )
    return Invite(method, str(event["UID"]), int(str(event["SEQUENCE"])), facts, start)


def _mail(item: Received) -> Mail:
    msg = message_from_bytes(item.data, policy=policy.default)
    assert isinstance(msg, EmailMessage)
    body = msg.get_body(("plain",))
    assert isinstance(body, EmailMessage)
    return Mail(item.recipients, str(msg["Subject"]), body.get_content(), _invite(msg))


def _to(mails: list[Mail]) -> Counter[str]:
    return Counter(r for m in mails for r in m.recipients)


def _sequences_only_rise(mails: list[Mail]) -> None:
    """Per UID in the order received: SEQUENCE never falls, and rises above every earlier
    one whenever the invite's facts differ from the UID's previous mail."""
    last: dict[str, Invite] = {}
    highest: dict[str, int] = {}
    for n, mail in enumerate(mails):
        inv = mail.invite
        if inv is None:
            continue
        if inv.uid in last:
            top = highest[inv.uid]
            assert inv.sequence >= top, f"mail {n}: SEQUENCE {inv.sequence} after {top}"
            if inv.facts != last[inv.uid].facts:
                assert inv.sequence > top, f"mail {n}: new facts at SEQUENCE {inv.sequence}"
        last[inv.uid] = inv
        highest[inv.uid] = max(inv.sequence, highest.get(inv.uid, inv.sequence))


# -- driving the stack -----------------------------------------------------------------------


class ConferenceFile:
    """A copy of the shipped conference file, edited while the worker runs."""

    def __init__(self, folder: Path) -> None:
        folder.mkdir()
        self.path = Path(shutil.copy(ROOT / "conferences" / f"{CONFERENCE}.toml", folder))

    def edit(self, old: str, new: str) -> None:
        """Replace `old` once, then wait until every worker process reads the file again
        before what it composes next: a worker looks at a file at most every CHECK_SECONDS."""
        content = self.path.read_text(encoding="utf-8")
        assert content.count(old) == 1, old
        # Written beside it and renamed over it: a worker never reads half a file.
        draft = self.path.with_name(f".{self.path.name}.new")
        draft.write_text(content.replace(old, new), encoding="utf-8")
        os.replace(draft, self.path)
        edited = time.monotonic()
        wait_for(lambda: time.monotonic() - edited >= CHECK_SECONDS, what="the check interval")

    def add(self, lines: str) -> None:
        """Top-level keys, which TOML wants before the first table."""
        zone = 'timezone = "Europe/Copenhagen"\n'
        self.edit(zone, zone + lines)


def updated(event_id: str, at: str = "2024-04-12T10:00:00+02:00") -> dict[str, Any]:
    return {
        "id": event_id,
        "type": "conference.updated",
        "occurred_at": at,
        "conference": CONFERENCE,
    }


def _step(s: Stack, count: int, *events: dict[str, Any]) -> list[Mail]:
    """Publish the events and return the `count` mails they bring."""
    before = len(s.sink.received)
    s.publish(*events)
    return [_mail(item) for item in s.sink.wait_for(before + count, timeout=60)[before:]]


def _batch_planned(s: Stack, batch_id: str) -> Status:
    """Wait until the batch is planned; its status then."""

    def planned() -> Status | None:
        found = {text(k) for k in s.client.smembers(keys.BATCHES)}
        if f"{CONFERENCE}:{batch_id}" not in found:
            return None
        st = status(s.client, f"{CONFERENCE}:{batch_id}")
        return st if st.batch is not None and st.batch.state == "planned" else None

    got: Status = wait_for(planned, 30, f"batch {batch_id} to be planned")
    return got


def _dead_letter(s: Stack, event_id: str) -> DeadLetter:
    def found() -> DeadLetter | None:
        return next((d for d in DeadLetters(s.client).list() if d.event_id == event_id), None)

    letter: DeadLetter = wait_for(found, 30, f"a dead letter for {event_id}")
    return letter


def _seen(s: Stack, event_id: str) -> None:
    wait_for(lambda: s.client.exists(keys.event(event_id)), 30, f"event {event_id} applied")


# -- the sequence ------------------------------------------------------------------------------


def _register(s: Stack) -> list[Mail]:
    people = [METTE, JENS, ASTRID, KIM]
    confirmations = _step(
        s, 4, *(created(f"reg-{i}", f"REG-{i}", p) for i, p in enumerate(people, 1))
    )
    assert _to(confirmations) == Counter(p["email"] for p in people)
    # Mette passes her seat to a colleague; Jens cancels
    mails = _step(
        s,
        4,
        substituted("sub-1", "REG-1", METTE, COLLEAGUE),
        cancelled("cancel-2", "REG-2"),
    )
    assert _to(mails) == Counter([METTE["email"], COLLEAGUE["email"], ORGANISER, JENS["email"]])
    [copy] = [m for m in mails if ORGANISER in m.recipients]
    assert copy.invite is None  # the organiser's copy is no invite
    for m in mails:
        if set(m.recipients) & LEFT:
            assert m.invite is not None and m.invite.method == "CANCEL"
    return confirmations + mails


def _announce_times(s: Stack, conf: ConferenceFile) -> list[Mail]:
    conf.add("start_time = 09:00:00\nend_time = 16:00:00\n")
    updates = _step(s, 3, updated("upd-1"))
    assert _to(updates) == CURRENT
    for m in updates:
        assert m.subject == UPDATE
        assert ANNOUNCED in m.text
        assert m.invite is not None and m.invite.method == "REQUEST"
        assert m.invite.start == datetime(2024, 4, 22, 7, 0, tzinfo=UTC)  # 9:00 CEST
    reminders = _step(s, 3, reminder("rem-1", "reminder-1"))
    assert _to(reminders) == CURRENT
    for m in reminders:
        assert m.subject == REMINDER and "→" not in m.text  # nothing changed since the update
    return updates + reminders


def _unannounced_change(s: Stack, conf: ConferenceFile, earlier: list[Mail]) -> list[Mail]:
    conf.edit("\nstart_time = 09:00:00", "\nstart_time = 10:00:00")
    reminders = _step(s, 3, reminder("rem-2", "reminder-2"))
    assert _to(reminders) == CURRENT
    for m in reminders:
        assert m.subject == REMINDER and m.invite is not None
        assert m.invite.start == datetime(2024, 4, 22, 8, 0, tzinfo=UTC)  # 10:00 CEST
        _raised(m, earlier)
        assert UNANNOUNCED in m.text
    # The announcement that follows has nothing to tell: every reminder carried the new time.
    # Planning leaves out each attendee whose invite already carries the announced facts
    # (store.batches._due), so today the batch is empty; a message planned anyway (say while
    # a reminder was still on its way) must be skipped when sent, for itip.UP_TO_DATE.
    before = len(s.sink.received)
    s.publish(updated("upd-2"))
    _batch_planned(s, "update-2")
    s.wait_past_rescue()
    assert len(s.sink.received) == before
    st = status(s.client, f"{CONFERENCE}:update-2")
    assert st.done and st.counts["skipped"] == st.total, st
    outbox = Outbox(s.client)
    for record in outbox.records(sorted(outbox.keys_in(f"{CONFERENCE}:update-2"))):
        assert (record.state, record.last_reply) == ("skipped", UP_TO_DATE)
    print(f"update-2: {st.total} message(s) planned, {st.counts['skipped']} skipped")
    return reminders


def _raised(mail: Mail, earlier: list[Mail]) -> None:
    """The mail's invite is for a UID sent before, at a SEQUENCE above any it had."""
    assert mail.invite is not None
    had = [m.invite.sequence for m in earlier if m.invite and m.invite.uid == mail.invite.uid]
    assert had and mail.invite.sequence > max(had), (mail.invite, had)


def _call_off(s: Stack, conf: ConferenceFile, earlier: list[Mail]) -> list[Mail]:
    conf.add(f'cancelled = true\ncancellation_note = "{NOTE}"\n')
    mails = _step(s, 3, updated("upd-3"))
    assert _to(mails) == CURRENT
    for m in mails:
        assert m.subject == CALLED_OFF and NOTE in m.text
        assert m.invite is not None
        assert (m.invite.method, m.invite.facts[4]) == ("CANCEL", "CANCELLED")
        _raised(m, earlier)
    return mails


def _refused_after(s: Stack) -> None:
    """A reminder and a registration are dead letters naming the cancellation; an update
    announces nothing new. Nothing is sent for any of them."""
    before = len(s.sink.received)
    s.publish(reminder("rem-3", "reminder-3"))
    assert CANCELLED_REASON in _dead_letter(s, "rem-3").reason
    s.publish(updated("upd-4", at="2024-04-13T10:00:00+02:00"))
    _seen(s, "upd-4")
    s.publish(created("reg-9", "REG-9", person(9)))
    assert CANCELLED_REASON in _dead_letter(s, "reg-9").reason
    s.wait_past_rescue()
    assert len(s.sink.received) == before


def test_conference_changes_reach_every_calendar(
    stack: Callable[..., Stack], tmp_path: Path
) -> None:
    conf = ConferenceFile(tmp_path / "conferences")
    s = stack(conferences_dir=str(conf.path.parent), **SHORT_LEASE)
    mails = _register(s)
    mails += _announce_times(s, conf)
    mails += _unannounced_change(s, conf, mails)
    mails += _call_off(s, conf, mails)
    _refused_after(s)
    _sequences_only_rise(mails)
    assert mails == [_mail(item) for item in s.sink.received]  # nothing else arrived
    uids: dict[str, set[str]] = {}
    for m in mails:
        for r in m.recipients:
            if m.invite is not None:
                uids.setdefault(r, set()).add(m.invite.uid)
    # One calendar entry per person: every mail to them carried the same UID
    assert all(len(found) == 1 for found in uids.values()), uids
    # Those who left got nothing after the substitution or cancellation; each current
    # attendee one mail per step: confirmation, update, two reminders, cancellation
    assert _to(mails) == Counter(
        {METTE["email"]: 2, JENS["email"]: 2, ORGANISER: 1} | {a: 5 for a in CURRENT}
    )
