"""End to end: an event on the queue becomes exactly one Danish confirmation with an invite."""

from __future__ import annotations

import json
from collections.abc import Callable
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path

import pytest
from click.testing import CliRunner
from icalendar import Calendar

from notifier.cli import main
from tests.conftest import wait_for
from tests.e2e.conftest import SHORT_LEASE, Stack
from tests.events import created

pytestmark = pytest.mark.e2e

SUBJECT = "Bekræftelse af tilmelding: Kommunernes Digitaliseringstræf '24 mandag den 22. april 2024"


def _parse(data: bytes) -> EmailMessage:
    msg = message_from_bytes(data, policy=policy.default)
    assert isinstance(msg, EmailMessage)
    return msg


def _calendar(msg: EmailMessage) -> Calendar:
    parts = [p for p in msg.walk() if p.get_content_type() == "text/calendar"]
    assert len(parts) == 1
    assert parts[0].get_param("method") == "REQUEST"
    payload = parts[0].get_payload(decode=True)
    assert isinstance(payload, bytes)
    return Calendar.from_ical(payload)


def test_registration_becomes_one_confirmation(stack: Callable[..., Stack]) -> None:
    # Given a running worker
    s = stack()
    # When a registration is published
    s.publish(created("evt-e2e-1", "REG-1001"))
    # Then exactly one message reaches the SMTP server, to the attendee only
    [received] = s.sink.wait_for(1)
    assert received.recipients == ("mette.sorensen@aarhus.dk",)
    assert received.sender == "arrangementsinfo@kl.dk"
    msg = _parse(received.data)
    assert msg["Subject"] == SUBJECT
    assert msg["To"].addresses[0].display_name == "Mette Sørensen"
    assert msg["Auto-Submitted"] == "auto-generated"
    assert msg["Message-ID"].endswith("@kl.dk>")
    text = msg.get_body(preferencelist=("plain",))
    html = msg.get_body(preferencelist=("html",))
    assert text is not None and html is not None
    assert "Kære Mette Sørensen" in text.get_content()
    assert "Med venlig hilsen" in text.get_content()
    assert "Scandic Falkoner, Falkoner Allé 9, 2000 Frederiksberg" in text.get_content()
    assert 'lang="da"' in html.get_content()
    event = _calendar(msg).walk("VEVENT")[0]
    assert str(event["SUMMARY"]) == "Kommunernes Digitaliseringstræf '24"
    assert event.decoded("DTSTART").isoformat() == "2024-04-22"
    assert str(event["LOCATION"]) == "Scandic Falkoner, Falkoner Allé 9, 2000 Frederiksberg"
    assert str(event["ATTENDEE"]) == "mailto:mette.sorensen@aarhus.dk"
    assert str(event["ORGANIZER"]) == "mailto:arrangementsinfo@kl.dk"
    assert [p.get_filename() for p in msg.iter_attachments()] == ["invitation.ics"]


def test_replayed_event_sends_nothing_more(stack: Callable[..., Stack]) -> None:
    s = stack(**SHORT_LEASE)
    event = created("evt-e2e-2", "REG-1002")
    s.publish(event)
    s.sink.wait_for(1)
    # When the same event is published twice more
    s.publish(event, event)
    s.wait_past_rescue()
    # Then still one message, and the outbox says it was sent once
    assert len(s.sink.received) == 1
    assert s.client.hget("notifier:counts", "sent") == b"1"


def test_invalid_event_is_kept_as_dead_letter(stack: Callable[..., Stack]) -> None:
    s = stack()
    bad = created("evt-e2e-3", "REG-1003", attendee={"name": "X", "email": "not-an-address"})
    s.publish(bad)
    s.wait_drained()
    wait_for(lambda: s.client.hlen("notifier:dead") == 1, 5, "a dead letter")
    assert s.sink.received == []
    # and the worker keeps working
    s.publish(created("evt-e2e-4", "REG-1004"))
    s.sink.wait_for(1)


def test_notifier_publish_reaches_the_relay_once(
    stack: Callable[..., Stack], tmp_path: Path
) -> None:
    s = stack(**SHORT_LEASE)
    source = tmp_path / "events.jsonl"
    source.write_text(json.dumps(created("evt-cli-1", "REG-2001")) + "\n", encoding="utf-8")
    env = {k: v for k, v in s.env.items() if k.startswith("NOTIFIER_")}
    for _ in range(2):  # published twice: still one mail
        result = CliRunner().invoke(main, ["publish", str(source)], env=env)
        assert result.exit_code == 0, result.output
    s.sink.wait_for(1)
    s.wait_past_rescue()
    [received] = s.sink.received
    assert _parse(received.data)["Subject"] == SUBJECT


def test_pickled_task_is_refused(stack: Callable[..., Stack]) -> None:
    # Given a producer that would send pickle (code execution on load if accepted)
    s = stack()
    s.app.conf.task_serializer = "pickle"
    s.app.conf.accept_content = ["json", "pickle"]
    s.publish(created("evt-pickle", "REG-3001"))
    s.wait_drained()
    # Then the worker refuses the content and nothing is processed or sent
    wait_for(lambda: "disallowed" in s.worker.text().lower(), 10, "the refusal in the log")
    assert s.sink.received == []
    assert not s.client.exists("notifier:event:evt-pickle")
