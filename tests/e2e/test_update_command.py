"""End to end: `notifier update` announces an edited conference file through a real worker to
a real SMTP sink (issue 13), and `notifier remind` refuses a cancelled conference."""

from __future__ import annotations

import subprocess
from collections import Counter
from collections.abc import Callable
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from icalendar import Calendar

from devtools.sink import Received
from notifier.cli import main
from notifier.store.status import status
from tests.conferences import announce, conference_copy
from tests.conftest import wait_for
from tests.e2e.conftest import Stack
from tests.e2e.test_redis_restart import NOTIFIER, Output
from tests.events import CONFERENCE, cancelled, created, person

pytestmark = pytest.mark.e2e

TIME_CHANGE = "Tid: ikke meldt ud → kl. 9.00–16.00"
UPDATE_BATCH = f"{CONFERENCE}:update-1"


def _started(stack: Callable[..., Stack], tmp_path: Path) -> tuple[Stack, Path]:
    """A stack whose worker reads a conference file of the test's own."""
    conf_file = conference_copy(tmp_path / "conferences")
    return stack(conferences_dir=str(conf_file.parent)), conf_file


def _register(s: Stack, n: int) -> list[str]:
    """n registrations, their confirmations delivered; returns the addresses."""
    s.publish(*(created(f"evt-{i}", f"REG-{i}", person(i)) for i in range(n)))
    s.sink.wait_for(n)
    return [person(i)["email"] for i in range(n)]


def _update(s: Stack, *args: str) -> Result:
    env = {k: v for k, v in s.env.items() if k.startswith("NOTIFIER_")}
    return CliRunner().invoke(main, ["update", CONFERENCE, *args], env=env)


def _invite(item: Received) -> tuple[str, int, str, str]:
    """(METHOD, SEQUENCE, subject, plain text) of a received mail with an invite."""
    msg = message_from_bytes(item.data, policy=policy.default)
    assert isinstance(msg, EmailMessage)
    [part] = [p for p in msg.walk() if p.get_content_type() == "text/calendar"]
    payload = part.get_payload(decode=True)
    assert isinstance(payload, bytes)
    calendar = Calendar.from_ical(payload)
    [event] = calendar.walk("VEVENT")
    body = msg.get_body(("plain",))
    assert isinstance(body, EmailMessage)
    text = body.get_content().replace("\xa0", " ")
    return str(calendar["METHOD"]), int(str(event["SEQUENCE"])), str(msg["Subject"]), text


def _updates(items: list[Received]) -> Counter[str]:
    """How many update mails (by subject) each address got."""
    return Counter(
        rcpt
        for item in items
        if _invite(item)[2].startswith("Ændring:")
        for rcpt in item.recipients
    )


def test_update_announces_new_times_once_to_every_attendee(
    stack: Callable[..., Stack], tmp_path: Path
) -> None:
    s, conf_file = _started(stack, tmp_path)
    attendees = _register(s, 3)
    # When the organiser announces times in the file (no wait: the command itself waits
    # until the workers have read an edit this fresh)
    announce(conf_file, times=True)
    refused = _update(s)
    assert refused.exit_code != 0
    assert "updates for a past conference are refused" in refused.output
    sample = tmp_path / "sample.eml"
    dry = _update(s, "--allow-past", "--dry-run", "--out", str(sample))
    assert dry.exit_code == 0, dry.output
    assert f"3 deltager(e): {TIME_CHANGE}" in dry.output.replace("\xa0", " ")
    method, sequence, subject, _ = _invite(Received("", (), sample.read_bytes()))
    assert (method, sequence) == ("REQUEST", 1) and subject.startswith("Ændring:")
    assert s.client.llen("notifier") == 0 and len(s.sink.received) == 3
    done = _update(s, "--allow-past", "--timeout", "60")
    # Then every attendee gets exactly one update, with the change and the invite's next
    # SEQUENCE, and the command reports the batch
    assert done.exit_code == 0, done.output
    assert f"3 deltager(e): {TIME_CHANGE}" in done.output.replace("\xa0", " ")
    assert "3 recipient(s) get an update" in done.output
    assert f"batch {UPDATE_BATCH}" in done.output
    assert _updates(s.sink.received) == Counter(attendees)
    for item in s.sink.received[3:]:
        method, sequence, _, text = _invite(item)
        assert (method, sequence) == ("REQUEST", 1)
        assert TIME_CHANGE in text
    # And the same command again sends nothing
    again = _update(s, "--allow-past")
    assert again.exit_code == 0, again.output
    assert "Nothing changed" in again.output
    assert s.client.llen("notifier") == 0 and len(s.sink.received) == 6


def test_a_refused_recipient_makes_update_exit_1(
    stack: Callable[..., Stack], tmp_path: Path
) -> None:
    s, conf_file = _started(stack, tmp_path)
    attendees = _register(s, 3)
    s.sink.script.rcpt[attendees[1]] = "550 5.1.1 mailbox unavailable"
    announce(conf_file, times=True)
    done = _update(s, "--allow-past", "--timeout", "60")
    assert done.exit_code == 1, done.output
    assert "550 5.1.1" in done.output  # the failed table (which wraps the reply at 80 columns)
    [failure] = status(s.client, UPDATE_BATCH).failures
    assert (failure.recipient, failure.reply) == (attendees[1], "550 5.1.1 mailbox unavailable")
    assert _updates(s.sink.received) == Counter([attendees[0], attendees[2]])


def test_a_cancelled_conference_is_cancelled_in_every_calendar(
    stack: Callable[..., Stack], tmp_path: Path
) -> None:
    s, conf_file = _started(stack, tmp_path)
    attendees = _register(s, 3)
    s.publish(cancelled("cancel-2", "REG-2"))
    s.sink.wait_for(4)  # the registration's own cancellation
    announce(conf_file, cancelled=True)
    done = _update(s, "--allow-past", "--timeout", "60")
    assert done.exit_code == 0, done.output
    assert "cancellation of the conference (METHOD:CANCEL): 2 recipient(s)" in done.output
    assert "Status: gennemføres → aflyst" in done.output
    called_off = s.sink.received[4:]
    assert sorted(r for item in called_off for r in item.recipients) == attendees[:2]
    assert {_invite(item)[:2] for item in called_off} == {("CANCEL", 1)}
    # Then reminders are refused, saying why, and nothing is published
    env = {k: v for k, v in s.env.items() if k.startswith("NOTIFIER_")}
    remind = CliRunner().invoke(main, ["remind", CONFERENCE, "--allow-past"], env=env)
    assert remind.exit_code != 0
    assert "is cancelled (cancelled = true in its file): no reminders are sent" in remind.output
    assert s.client.llen("notifier") == 0 and len(s.sink.received) == 6


def test_update_waits_for_its_batch_through_a_redis_restart(
    stack: Callable[..., Stack], tmp_path: Path
) -> None:
    """Redis goes away after the event is published and before any worker planned it: the
    command says it reconnects, and goes on once Redis (from its AOF) and a worker are back."""
    conf_file = conference_copy(tmp_path / "conferences")
    s = stack(appendonly=True, conferences_dir=str(conf_file.parent))
    attendees = _register(s, 3)
    s.worker.stop()
    announce(conf_file, times=True)
    env = {**s.env, "COLUMNS": "200", "PYTHONUNBUFFERED": "1"}
    cmd = [NOTIFIER, "update", CONFERENCE, "--allow-past", "--timeout", "120"]
    with subprocess.Popen(
        cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    ) as update:
        out = Output(update)
        wait_for(lambda: "waiting for a worker" in out.text(), 60, "update to publish")
        s.redis_server.kill()
        wait_for(lambda: "reconnecting" in out.text(), 60, "update to say it reconnects")
        assert update.poll() is None, out.text()
        s.redis_server.start()
        s.worker.start()
        update.wait(180)
    output = out.join()
    assert update.returncode == 0, output
    assert "Traceback" not in output, output
    assert "Redis answers again" in output
    assert f"batch {UPDATE_BATCH}" in output
    assert _updates(s.sink.received) == Counter(attendees)
