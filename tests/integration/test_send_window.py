"""A conference's send window: a reminder batch outside its hours (or on a Danish public
holiday) pauses without counting an attempt and resumes when the window opens; a
confirmation goes at once."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, time
from pathlib import Path

import pytest

from devtools.sink import Sink
from notifier.domain.conference import SendWindow
from notifier.domain.window import next_opening
from notifier.loading import Conferences
from notifier.service import Service
from tests.conferences import conference_copy
from tests.conftest import Clock
from tests.events import CONFERENCE, created, person, reminder

pytestmark = pytest.mark.integration

WINDOW = "\n[send_window]\nstart = 07:00:00\nend = 21:00:00\nskip_holidays = true\n"


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    path = conference_copy(tmp_path / "conferences")
    path.write_text(path.read_text(encoding="utf-8") + WINDOW, encoding="utf-8")
    return path.parent


def test_a_batch_outside_the_window_pauses_and_resumes(
    service: Callable[..., Service], folder: Path, clock: Clock, sink: Sink
) -> None:
    svc = service(conferences_dir=str(folder))
    clock.now = datetime(2024, 4, 15, 21, 30, tzinfo=UTC)  # 23:30 in Copenhagen
    svc.deliver(svc.ingest(created("e1", "R1", person(1))))
    assert len(sink.received) == 1  # a confirmation is not held
    [key] = svc.ingest(reminder("rem", "b1"))
    svc.deliver([key])
    record = svc.outbox.get(key)
    assert record is not None
    assert (record.state, record.attempts) == ("retrying", 0)
    assert "outside the send window: waits until 2024-04-16T07:00:00+02:00" in record.last_reply
    assert len(sink.received) == 1
    clock.now = datetime(2024, 4, 16, 5, 0, 1, tzinfo=UTC)  # 07:00:01 local: open
    svc.deliver([key])
    record = svc.outbox.get(key)
    assert record is not None and (record.state, record.attempts) == ("sent", 1)
    assert len(sink.received) == 2


@pytest.mark.parametrize(
    ("now", "opens"),
    [
        # Inside: none.
        (datetime(2024, 4, 15, 10, 0, tzinfo=UTC), None),
        # Before it opens in the morning (05:30 local, summer time).
        (datetime(2024, 4, 15, 3, 30, tzinfo=UTC), "2024-04-15T07:00:00+02:00"),
        # Maundy Thursday evening 2024: Good Friday, Easter Sunday and Monday are holidays
        # in Denmark, Saturday is not.
        (datetime(2024, 3, 28, 20, 0, tzinfo=UTC), "2024-03-30T07:00:00+01:00"),
        (datetime(2024, 3, 30, 20, 0, tzinfo=UTC), "2024-04-02T07:00:00+02:00"),
    ],
)
def test_the_window_opens_on_the_next_working_hours(
    folder: Path, now: datetime, opens: str | None
) -> None:
    conf = Conferences(folder).get(CONFERENCE)
    assert conf.send_window == SendWindow(start=time(7), end=time(21), skip_holidays=True)
    found = next_opening(conf.send_window, now, conf)
    assert (found.isoformat() if found else None) == opens
