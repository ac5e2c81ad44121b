"""Reminder batches and scheduled reminders through the Service, on real Redis and SMTP."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, datetime

import pytest
import redis
from click.testing import CliRunner

from devtools.sink import Sink
from notifier.cli import main
from notifier.errors import UnknownBatch
from notifier.service import Service
from notifier.settings import Settings
from notifier.store.status import status
from tests.conftest import TEST_REDIS_URL, Clock
from tests.events import cancelled, created, person, reminder, substituted

pytestmark = pytest.mark.integration
ENV = {"NOTIFIER_BROKER_URL": TEST_REDIS_URL}


@pytest.fixture
def clock() -> Clock:
    return Clock(datetime(2024, 4, 1, 12, 0, tzinfo=UTC))


@pytest.fixture
def svc(
    make_settings: Callable[..., Settings], redis_client: redis.Redis, clock: Clock
) -> Iterator[Service]:
    service = Service(make_settings(), redis_client, clock=clock, rand=lambda: 0.0)
    yield service
    service.close()


def _run(svc: Service, *events: dict[str, object]) -> None:
    for event in events:
        svc.deliver(svc.ingest(event))


def test_reminder_recipients_are_read_when_sent(svc: Service, sink: Sink) -> None:
    _run(svc, *(created(f"e{i}", f"R{i}", person(i)) for i in range(4)))
    keys = svc.ingest(reminder("rem", "b"))
    assert len(keys) == 4
    # Between planning and sending: R0 passes to a colleague, R1 is cancelled
    _run(svc, substituted("s0", "R0", person(0), person(100)), cancelled("c1", "R1"))
    before = len(sink.received)
    svc.deliver(keys)
    reminders = [r.recipients[0] for r in sink.received[before:]]
    assert sorted(reminders) == sorted(
        [person(100)["email"], person(2)["email"], person(3)["email"]]
    )
    st = status(svc.r, "b")
    assert (st.counts["sent"], st.counts["skipped"], st.done) == (3, 1, True)


def test_a_scheduled_reminder_fires_once_and_not_retroactively(
    svc: Service, sink: Sink, clock: Clock
) -> None:
    _run(svc, created("early", "R1", person(1), at="2024-04-10T10:00:00+02:00"))
    clock.now = datetime(2024, 4, 15, 7, 0, 1, tzinfo=UTC)  # just after 9.00 Copenhagen
    # Someone registers after the 7-days reminder fell due but before it was sent
    _run(svc, created("late", "R2", person(2), at="2024-04-15T09:00:30+02:00"))
    [event] = svc.due_reminder_events()
    assert event["batch"] == {"id": "scheduled-7-days"}
    before = len(sink.received)
    _run(svc, event)
    assert [r.recipients for r in sink.received[before:]] == [(person(1)["email"],)]
    assert svc.due_reminder_events() == []  # asked again a minute later: nothing


def test_unknown_batch_status_names_it(svc: Service) -> None:
    with pytest.raises(UnknownBatch, match="not found") as raised:
        status(svc.r, "nope")
    assert raised.value.batch == "nope"
    result = CliRunner().invoke(main, ["status", "--batch", "nope"], env=ENV)
    assert result.exit_code == 1
    assert "batch 'nope': not found" in result.output
