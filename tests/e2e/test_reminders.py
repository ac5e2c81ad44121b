"""End to end: reminder batches reach every current attendee exactly once, even through a
crash, and the organiser's command follows them to the end."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from email import message_from_bytes, policy
from pathlib import Path

import pytest
from click.testing import CliRunner

from devtools.sink import Received
from notifier.cli import main
from notifier.store.status import status
from tests.conftest import wait_for
from tests.e2e.conftest import Stack
from tests.events import cancelled, created, person, reminder, substituted

pytestmark = pytest.mark.e2e

REMINDER = "Påmindelse: Kommunernes Digitaliseringstræf '24 mandag den 22. april 2024"


def _reminders(items: list[Received]) -> Counter[str]:
    out: Counter[str] = Counter()
    for item in items:
        if message_from_bytes(item.data, policy=policy.default)["Subject"] == REMINDER:
            out.update(item.recipients)
    return out


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
    s = stack()
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
    s.wait_drained()
    assert _reminders(s.sink.received) == got


def test_two_requests_at_once_send_each_reminder_once(stack: Callable[..., Stack]) -> None:
    s = stack()
    current = _seed(s, 60)
    s.publish(reminder("rem-a", "b1"), reminder("rem-b", "b1"))
    wait_for(lambda: sum(_reminders(s.sink.received).values()) >= len(current), 60, "reminders")
    s.wait_drained()
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
