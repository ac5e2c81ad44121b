"""A conference file edited while the service runs takes effect without a new Service (issue
13): a reminder rule added to a running deployment falls due, and a changed venue is in the
next mail. A Service looks at a file again at most once per CHECK_SECONDS, so each test waits
until its Service has read the edit, which takes at most that long."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from datetime import UTC, datetime
from email import message_from_bytes, policy
from pathlib import Path

import pytest

from devtools.sink import Sink
from notifier.service import Service
from tests.conftest import ROOT, Clock, wait_for
from tests.events import CONFERENCE, created, person

pytestmark = pytest.mark.integration

RULE = '\n[[reminders]]\nid = "3-days"\ndays_before = 3\nat = 09:00:00\n'
VENUE = 'name = "Scandic Falkoner"'


@pytest.fixture
def conf_file(tmp_path: Path) -> Path:
    """A copy of the shipped conference that the test may edit."""
    folder = tmp_path / "conferences"
    folder.mkdir()
    return Path(shutil.copy(ROOT / "conferences" / f"{CONFERENCE}.toml", folder))


def _text(data: bytes) -> str:
    body = message_from_bytes(data, policy=policy.default).get_body(("plain",))
    assert body is not None
    return str(body.get_content())


def test_an_added_reminder_rule_is_requested_without_a_new_service(
    service: Callable[..., Service], conf_file: Path, clock: Clock, sink: Sink
) -> None:
    svc = service(conferences_dir=str(conf_file.parent))
    svc.deliver(svc.ingest(created("e1", "R1", person(1), at="2024-04-10T10:00:00+02:00")))
    clock.now = datetime(2024, 4, 19, 7, 0, 1, tzinfo=UTC)  # 9.00 Copenhagen, 3 days before
    assert svc.due_reminder_events() == []  # the shipped rules: 7 days and 1 day before
    # When a rule is added to the running deployment's file
    conf_file.write_text(conf_file.read_text(encoding="utf-8") + RULE, encoding="utf-8")
    # Then the same Service requests it once it has read the file again
    [event] = wait_for(svc.due_reminder_events, what="the added rule to fall due")
    assert event["batch"] == {"id": "scheduled-3-days"}
    before = len(sink.received)
    svc.deliver(svc.ingest(event))
    assert [r.recipients for r in sink.received[before:]] == [(person(1)["email"],)]
    assert svc.due_reminder_events() == []


def test_a_changed_venue_is_in_the_next_confirmation(
    service: Callable[..., Service], conf_file: Path, sink: Sink
) -> None:
    svc = service(conferences_dir=str(conf_file.parent))
    svc.deliver(svc.ingest(created("e1", "R1", person(1))))
    # When the venue is renamed in the running deployment's file
    text = conf_file.read_text(encoding="utf-8")
    assert VENUE in text
    conf_file.write_text(text.replace(VENUE, 'name = "Bella Center"'), encoding="utf-8")
    wait_for(
        lambda: svc.conferences.get(CONFERENCE).venue.name == "Bella Center",
        what="the service to read the edited file",
    )
    # Then the next confirmation names the new venue, the first one the old
    svc.deliver(svc.ingest(created("e2", "R2", person(2))))
    first, second = (_text(r.data) for r in sink.wait_for(2))
    assert "Hvor:    Scandic Falkoner, Falkoner Allé 9" in first
    assert "Hvor:    Bella Center, Falkoner Allé 9" in second
