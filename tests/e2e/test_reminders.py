"""End to end: reminder batches reach every current attendee exactly once, even through a
crash, and the organiser's command follows them to the end."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from datetime import date
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path

import pytest
from click.testing import CliRunner
from icalendar import Calendar

from devtools.sink import Received
from notifier.cli import main
from notifier.domain.plan import Seat
from notifier.store import keys
from notifier.store.status import status
from tests.conftest import wait_for
from tests.e2e.conftest import REMINDER, SHORT_LEASE, Stack
from tests.e2e.conftest import reminders_received as _reminders
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


def _seed(s: Stack, n: int) -> set[str]:
    """n registrations, 5 passed to colleagues, 2 cancelled; returns the current attendees."""
    s.publish(*(created(f"evt-{i}", f"REG-{i}", person(i)) for i in range(n)))
    s.sink.wait_for(n, timeout=60)
    current = {person(i)["email"] for i in range(n)}
    for i in range(5):
        colleague = person(1000 + i)
        s.publish(substituted(f"sub-{i}", f"REG-{i}", person(i), colleague))
        current = (current - {person(i)["email"]}) | {colleague["email"]}
    for i in (10, 11):
        s.publish(cancelled(f"cancel-{i}", f"REG-{i}"))
        current.discard(person(i)["email"])
    s.sink.wait_for(n + 5 * 3 + 2, timeout=60)
    return current


def test_batch_reaches_every_current_attendee_once(stack: Callable[..., Stack]) -> None:
    s = stack(**SHORT_LEASE)
    current = _seed(s, 200)
    before = len(s.sink.received)
    s.publish(reminder("rem-1", "reminder-1-week"))
    s.sink.wait_for(before + len(current), timeout=60)
    s.wait_drained()
    got = _reminders(s.sink.received)
    assert set(got) == current and set(got.values()) == {1}
    st = status(s.client, "reminder-1-week")
    assert (st.counts["sent"], st.batch and st.batch.total) == (198, 198)
    # The same batch requested again, twice at once, by another event id: nothing new
    s.publish(reminder("rem-2", "reminder-1-week"), reminder("rem-3", "reminder-1-week"))
    s.wait_past_rescue()
    assert _reminders(s.sink.received) == got


def test_two_requests_at_once_send_each_reminder_once(stack: Callable[..., Stack]) -> None:
    s = stack(**SHORT_LEASE)
    current = _seed(s, 60)
    s.publish(reminder("rem-a", "b1"), reminder("rem-b", "b1"))
    wait_for(lambda: sum(_reminders(s.sink.received).values()) >= len(current), 60, "reminders")
    s.wait_past_rescue()
    got = _reminders(s.sink.received)
    assert set(got) == current and set(got.values()) == {1}


def test_worker_killed_mid_batch_completes_without_skips(stack: Callable[..., Stack]) -> None:
    s = stack(visibility_timeout_seconds="10", claim_lease_seconds="10", smtp_timeout_seconds="2")
    current = _seed(s, 150)
    before = len(s.sink.received)
    s.sink.script.delay = 0.02  # slow enough to be caught in the middle
    s.publish(reminder("rem-k", "crash"))
    s.sink.wait_for(before + 40, timeout=60)
    s.worker.kill()
    sent_at_kill = len(s.sink.received) - before
    assert sent_at_kill < len(current), "the batch finished before the kill"
    print(f"killed after {sent_at_kill} of {len(current)} reminders")
    s.sink.script.delay = 0
    s.worker.start()
    wait_for(lambda: set(_reminders(s.sink.received)) == current, 90, "every reminder")
    s.wait_drained()
    got = _reminders(s.sink.received)
    duplicates = sum(got.values()) - len(got)
    print(f"duplicates after the kill: {duplicates}")
    # at most what was in flight: 2 processes x 4 SMTP sessions
    assert duplicates <= 8, got.most_common(3)
    st = status(s.client, "crash")
    assert st.counts["sent"] == len(current) and st.done


def test_remind_command_follows_the_batch(stack: Callable[..., Stack], tmp_path: Path) -> None:
    s = stack()
    current = _seed(s, 20)
    runner = CliRunner()
    env = {k: v for k, v in s.env.items() if k.startswith("NOTIFIER_")}
    refused = runner.invoke(main, ["remind", "digitaliseringstraef-2024"], env=env)
    assert refused.exit_code != 0
    assert "2024-04-22" in refused.output and "--allow-past" in refused.output
    dry = runner.invoke(
        main,
        [
            "remind",
            "digitaliseringstraef-2024",
            "--allow-past",
            "--dry-run",
            "--out",
            str(tmp_path / "sample.eml"),
        ],
        env=env,
    )
    assert dry.exit_code == 0, dry.output
    assert f"{len(current)} current attendee(s)" in dry.output
    sample = message_from_bytes((tmp_path / "sample.eml").read_bytes(), policy=policy.default)
    assert sample["Subject"] == REMINDER
    assert s.client.llen("notifier") == 0 and _reminders(s.sink.received) == Counter()
    done = runner.invoke(
        main, ["remind", "digitaliseringstraef-2024", "--allow-past", "--timeout", "60"], env=env
    )
    assert done.exit_code == 0, done.output
    assert "batch digitaliseringstraef-2024:reminder" in done.output
    got = _reminders(s.sink.received)
    assert set(got) == current and set(got.values()) == {1}


def _parts(item: Received) -> tuple[str, str, Calendar | None]:
    """(text, HTML, calendar or None) of a received mail."""
    msg = message_from_bytes(item.data, policy=policy.default)
    assert isinstance(msg, EmailMessage)
    text, html = msg.get_body(("plain",)), msg.get_body(("html",))
    assert isinstance(text, EmailMessage) and isinstance(html, EmailMessage)
    calendars = [p for p in msg.walk() if p.get_content_type() == "text/calendar"]
    payload = calendars[0].get_payload(decode=True) if calendars else None
    calendar = Calendar.from_ical(payload) if isinstance(payload, bytes) else None
    return text.get_content(), html.get_content(), calendar


def _requests_to(s: Stack, email: str) -> list[tuple[str, int]]:
    """(UID, SEQUENCE) of every METHOD:REQUEST invite the address received, in order."""
    found = []
    for item in s.sink.received:
        calendar = _parts(item)[2]
        if email in item.recipients and calendar is not None and calendar["METHOD"] == "REQUEST":
            event = calendar.walk("VEVENT")[0]
            found.append((str(event["UID"]), int(str(event["SEQUENCE"]))))
    return found


def test_a_reminder_carries_the_holders_standing_invite(stack: Callable[..., Stack]) -> None:
    """Inside each reminder: the invite the seat's current holder already has (the UID of the
    invite that came with the seat, the SEQUENCE the seat recorded), the conference's all-day
    date and its venue, and the Danish date and venue in both text and HTML."""
    s = stack()
    colleague = person(7)
    # REG-1: Mette passes her seat to Jens and takes it back (her invite is requested,
    # cancelled, requested again); REG-2: Astrid passes hers to a colleague for good.
    s.publish(created("evt-1", "REG-1", METTE), created("evt-4", "REG-2", ASTRID))
    s.sink.wait_for(2)
    s.publish(
        substituted("evt-2", "REG-1", METTE, JENS),
        substituted("evt-5", "REG-2", ASTRID, colleague),
    )
    s.sink.wait_for(8)
    s.publish(substituted("evt-3", "REG-1", JENS, METTE, at="2024-04-03T08:30:00+02:00"))
    s.sink.wait_for(11)
    s.wait_drained()
    holders = {"REG-1": METTE["email"], "REG-2": colleague["email"]}
    [[mette_uid], [colleague_uid]] = [
        {uid for uid, _ in _requests_to(s, e)} for e in holders.values()
    ]
    assert _requests_to(s, METTE["email"]) == [(mette_uid, 0), (mette_uid, 2)]
    assert _requests_to(s, colleague["email"]) == [(colleague_uid, 0)]
    expected = {"REG-1": (mette_uid, 2), "REG-2": (colleague_uid, 0)}

    before = len(s.sink.received)
    s.publish(reminder("rem-inside", "inside"))
    reminders = s.sink.wait_for(before + 2)[before:]
    assert sorted(r.recipients for r in reminders) == sorted((e,) for e in holders.values())
    for registration, holder in holders.items():
        [item] = [r for r in reminders if r.recipients == (holder,)]
        seat = Seat.from_json(s.client.get(keys.seat(CONFERENCE, registration)) or b"")
        uid, sequence = expected[registration]
        text, html, calendar = _parts(item)
        assert calendar is not None and str(calendar["METHOD"]) == "REQUEST"
        [event] = calendar.walk("VEVENT")
        assert (str(event["UID"]), int(str(event["SEQUENCE"]))) == (uid, seat.sequences[uid])
        assert seat.sequences[uid] == sequence
        assert str(event["ATTENDEE"]) == f"mailto:{holder}"
        assert event["DTSTART"].params["VALUE"] == "DATE"
        assert event.decoded("DTSTART") == date(2024, 4, 22)
        assert "Scandic Falkoner" in str(event["LOCATION"])
        for part in (text, html):
            assert "mandag den 22. april 2024" in part
            assert "Scandic Falkoner" in part
