"""End to end: substitutions and cancellations produce exactly the listed mails, with invites
a calendar client applies as updates (same UID, higher SEQUENCE)."""

from __future__ import annotations

from collections.abc import Callable
from email import message_from_bytes, policy
from email.message import EmailMessage

import pytest
from icalendar import Calendar

from devtools.sink import Received
from notifier.domain.notice import invite_uid
from tests.conftest import wait_for
from tests.e2e.conftest import SHORT_LEASE, Stack
from tests.events import ASTRID, CONFERENCE, JENS, METTE, cancelled, created, substituted

pytestmark = pytest.mark.e2e

ORGANISER = "arrangementsinfo@kl.dk"


def _invite(item: Received) -> tuple[str, str, int, str] | None:
    """(METHOD, UID, SEQUENCE, STATUS) of the mail's text/calendar part, if it has one."""
    msg = message_from_bytes(item.data, policy=policy.default)
    assert isinstance(msg, EmailMessage)
    parts = [p for p in msg.walk() if p.get_content_type() == "text/calendar"]
    if not parts:
        return None
    payload = parts[0].get_payload(decode=True)
    assert isinstance(payload, bytes)
    cal = Calendar.from_ical(payload)
    event = cal.walk("VEVENT")[0]
    assert parts[0].get_param("method") == str(cal["METHOD"])
    return str(cal["METHOD"]), str(event["UID"]), int(str(event["SEQUENCE"])), str(event["STATUS"])


def _subject(item: Received) -> str:
    return str(message_from_bytes(item.data, policy=policy.default)["Subject"])


def _by_recipient(items: list[Received]) -> dict[str, list[Received]]:
    out: dict[str, list[Received]] = {}
    for item in items:
        for rcpt in item.recipients:
            out.setdefault(rcpt, []).append(item)
    return out


def test_created_then_substituted(stack: Callable[..., Stack]) -> None:
    s = stack()
    s.publish(created("evt-1", "REG-1001", METTE))
    [confirmation] = s.sink.wait_for(1)
    s.publish(substituted("evt-2", "REG-1001", METTE, JENS))
    mails = _by_recipient(s.sink.wait_for(4)[1:])
    s.wait_drained()
    assert len(s.sink.received) == 4
    first = _invite(confirmation)
    assert first is not None and first[0] == "REQUEST" and first[2] == 0
    [out] = mails[METTE["email"]]
    assert _subject(out) == (
        "Deltagerskift: Din plads til Kommunernes Digitaliseringstræf '24 er overdraget"
    )
    assert _invite(out) == ("CANCEL", first[1], 1, "CANCELLED")
    [incoming] = mails[JENS["email"]]
    assert (
        _subject(incoming) == "Deltagerskift: Du er nu tilmeldt Kommunernes Digitaliseringstræf '24"
    )
    new = _invite(incoming)
    assert new is not None and new[0] == "REQUEST" and new[1] != first[1] and new[2] == 0
    [copy] = mails[ORGANISER]
    assert _invite(copy) is None
    assert _subject(copy) == "Deltagerskift REG-1001: Kommunernes Digitaliseringstræf '24"


def test_chain_and_replay_of_every_event(stack: Callable[..., Stack]) -> None:
    s = stack(**SHORT_LEASE)
    events = [
        created("evt-1", "REG-7", METTE),
        substituted("evt-2", "REG-7", METTE, JENS, at="2024-04-02T08:30:00+02:00"),
        substituted("evt-3", "REG-7", JENS, ASTRID, at="2024-04-03T08:30:00+02:00"),
    ]
    s.publish(events[0])
    s.sink.wait_for(1)
    s.publish(events[1])
    s.sink.wait_for(4)
    s.publish(events[2])
    received = s.sink.wait_for(7)
    jens = _by_recipient(received)[JENS["email"]]
    invites = sorted((i for i in map(_invite, jens) if i), key=lambda i: i[2])
    # Jens got an invite, then its cancellation: same UID, SEQUENCE 0 then 1
    assert [(m, seq) for m, _, seq, _ in invites] == [("REQUEST", 0), ("CANCEL", 1)]
    assert invites[0][1] == invites[1][1]
    # When every event is published again
    s.publish(*events)
    s.wait_past_rescue()
    # Then nothing new is sent
    assert len(s.sink.received) == 7


def test_substitution_before_its_creation(stack: Callable[..., Stack]) -> None:
    s = stack(**SHORT_LEASE)
    s.publish(substituted("evt-2", "REG-9", METTE, JENS))
    s.sink.wait_for(3)
    # The creation arrives late: Mette already left, so she gets no confirmation
    s.publish(created("evt-1", "REG-9", METTE))
    s.wait_past_rescue()
    mails = _by_recipient(s.sink.received)
    assert len(s.sink.received) == 3
    [out] = mails[METTE["email"]]
    # The CANCEL of the invite she would have had: her UID, the first SEQUENCE after 0
    mette_uid = invite_uid(CONFERENCE, "REG-9", METTE["email"], "kl.dk")
    assert _invite(out) == ("CANCEL", mette_uid, 1, "CANCELLED")


def test_cancellation(stack: Callable[..., Stack]) -> None:
    s = stack()
    s.publish(created("evt-1", "REG-5", METTE))
    [confirmation] = s.sink.wait_for(1)
    s.publish(cancelled("evt-9", "REG-5"))
    received = s.sink.wait_for(2)
    s.wait_drained()
    assert len(s.sink.received) == 2
    first, cancel = _invite(confirmation), _invite(received[1])
    assert first is not None and cancel is not None
    assert cancel == ("CANCEL", first[1], 1, "CANCELLED")
    assert _subject(received[1]).startswith(
        "Annulleret tilmelding: Kommunernes Digitaliseringstræf '24"
    )


def test_cancellation_of_unknown_registration_is_kept(stack: Callable[..., Stack]) -> None:
    s = stack()
    s.publish(cancelled("evt-9", "REG-404"))
    # Drained alone can be true before the worker takes the task (between kombu's BRPOP and
    # its unacked record both are empty): wait for the effect first.
    wait_for(lambda: s.client.hlen("notifier:dead") == 1, 30, "the dead letter")
    s.wait_drained()
    assert s.sink.received == []
    assert s.client.hlen("notifier:dead") == 1
