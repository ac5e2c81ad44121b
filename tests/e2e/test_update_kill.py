"""End to end: an update batch has the batch guarantees of a reminder batch. A worker killed
(SIGKILL) in the middle of an announcement leaves no attendee without the update, and the
batch completes once a worker runs again, with duplicates only among what was in flight."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from email import message_from_bytes, policy
from pathlib import Path

import pytest

from devtools.sink import Received
from notifier.loading import CHECK_SECONDS
from notifier.store.status import status
from tests.conferences import announce, conference_copy
from tests.conftest import wait_for
from tests.e2e.conftest import Stack
from tests.events import CONFERENCE, created, person

pytestmark = pytest.mark.e2e


def _updates(items: list[Received]) -> Counter[str]:
    """How many update mails each recipient got."""
    out: Counter[str] = Counter()
    for item in items:
        subject = str(message_from_bytes(item.data, policy=policy.default)["Subject"])
        if subject.startswith("Ændring:"):
            out.update(item.recipients)
    return out


def _updated(at: str) -> dict[str, str]:
    return {
        "id": at,
        "type": "conference.updated",
        "occurred_at": "2024-03-01T09:00:00+01:00",
        "conference": CONFERENCE,
    }


def test_worker_killed_mid_update_completes_without_skips(
    stack: Callable[..., Stack], tmp_path: Path
) -> None:
    conf_file = conference_copy(tmp_path / "conferences")
    s = stack(
        conferences_dir=str(conf_file.parent),
        visibility_timeout_seconds="10",
        claim_lease_seconds="10",
        smtp_timeout_seconds="2",
    )
    n = 120
    s.publish(*(created(f"evt-{i}", f"REG-{i}", person(i)) for i in range(n)))
    s.sink.wait_for(n, timeout=60)
    attendees = {person(i)["email"] for i in range(n)}
    # The organiser announces times: every attendee's invite carries "all day" until now.
    announce(conf_file, times=True)
    edited = time.monotonic()
    wait_for(lambda: time.monotonic() - edited >= CHECK_SECONDS, what="the check interval")
    # Slow enough to be caught in the middle also on a loaded machine: 8 sessions at 0.2 s a
    # mail need 3 s for the batch, and the kill comes after the tenth.
    s.sink.script.delay = 0.2
    s.publish(_updated("update-kill-1"))
    wait_for(lambda: sum(_updates(s.sink.received).values()) >= 10, 60, "the first updates")
    s.worker.kill()
    sent_at_kill = sum(_updates(s.sink.received).values())
    assert sent_at_kill < n, "the batch finished before the kill"
    print(f"killed after {sent_at_kill} of {n} updates")
    s.sink.script.delay = 0
    s.worker.start()
    wait_for(lambda: set(_updates(s.sink.received)) == attendees, 90, "every update")
    s.wait_drained()
    got = _updates(s.sink.received)
    duplicates = sum(got.values()) - len(got)
    print(f"duplicates after the kill: {duplicates}")
    assert duplicates <= 8, got.most_common(3)  # at most 2 processes x 4 SMTP sessions
    st = status(s.client, "update-1")
    assert st.done and st.counts["sent"] == n, st.counts
    # The same announcement again (redelivered, or the command run twice) plans nothing new.
    before = len(s.sink.received)
    s.publish(_updated("update-kill-2"))
    wait_for(lambda: s.client.exists("notifier:event:update-kill-2") == 1, 30, "the request")
    s.wait_drained()
    assert len(s.sink.received) == before
    assert status(s.client, "update-1").counts["sent"] == n
