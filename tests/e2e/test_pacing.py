"""Relay-aware sending against a real SMTP server that enforces a quota: the rate is learned
from its throttling replies and shared by every worker, and waits the relay asks for
(throttling, greylisting, a used-up daily quota) never turn into failures."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest

from devtools.sink import Quota
from notifier.store import keys
from notifier.store.codec import text
from notifier.store.status import status
from tests.conftest import wait_for
from tests.e2e.conftest import SHORT_LEASE, NamedWorker, Stack, start_all
from tests.events import created, person, reminder

pytestmark = pytest.mark.e2e

N = 120
LIMIT, WINDOW = 20, 10.0  # the relay takes at most 20 messages in any 10 s
QUOTA_TIME = N / LIMIT * WINDOW  # 60 s: what the quota allows for N messages


def _registered(s: Stack, count: int) -> None:
    s.publish(*(created(f"e{i}", f"R{i}", person(i)) for i in range(count)))
    s.sink.wait_for(count, 90)
    s.wait_drained(30)


@pytest.mark.timeout(600)
def test_a_relay_quota_is_learned_shared_and_never_a_failure(
    stack: Callable[..., Stack], workers: Callable[..., NamedWorker]
) -> None:
    s = stack(start=False, **SHORT_LEASE)  # nothing about pacing configured
    start_all(workers(s, "second"))
    s.worker.start()
    _registered(s, N)  # the confirmations, before the relay has a quota
    quota = Quota(LIMIT, WINDOW)
    s.sink.script.quota = quota
    before = len(s.sink.received)
    started = time.monotonic()
    s.publish(reminder("rem-1", "quota"))
    wait_for(lambda: len(s.sink.received) >= before + N, 300, "every reminder")
    elapsed = time.monotonic() - started
    s.wait_past_rescue(120)
    counts = status(s.client, batch="digitaliseringstraef-2024:quota").counts
    print(f"PACING: {N} reminders in {elapsed:.1f} s, {quota.refused} throttled replies")
    assert counts["sent"] == N and counts["failed"] == 0
    assert len(s.sink.received) == before + N  # each once
    assert quota.refused <= 0.2 * N, quota.refused
    assert elapsed <= 1.6 * QUOTA_TIME + 15, elapsed
    # The learned rate lives in Redis, for every worker; no attempt was counted for a wait.
    assert s.client.hget(keys.PACE, "throttled_at") is not None
    attempts = [int(s.client.hget(keys.message(k), "attempts") or 0) for k in _batch(s)]
    assert max(attempts) == 1


def _batch(s: Stack) -> list[str]:
    members = s.client.smembers(keys.batch_members("digitaliseringstraef-2024:quota"))
    return [text(m) for m in members]


def test_greylisting_passes_on_the_second_try_without_counting(
    stack: Callable[..., Stack],
) -> None:
    s = stack(
        **SHORT_LEASE, greylist_seconds="1", max_attempts="1"
    )  # one counted attempt would fail it
    s.sink.script.greylist = True
    s.publish(*(created(f"g{i}", f"G{i}", person(i)) for i in range(3)))
    s.sink.wait_for(3, 60)
    s.wait_past_rescue(60)
    assert len(s.sink.greylisted) == 3 and len(s.sink.received) == 3
    assert status(s.client).counts["failed"] == 0


def test_a_used_up_daily_quota_pauses_and_resumes(stack: Callable[..., Stack]) -> None:
    s = stack(**SHORT_LEASE, quota_pause_seconds="2", max_attempts="1")
    refusal = "554 5.2.0 STOREDRV.Submission.Exception:SubmissionQuotaExceededException"
    s.sink.script.data.extend([refusal] * 3)
    started = time.monotonic()
    s.publish(*(created(f"q{i}", f"Q{i}", person(i)) for i in range(3)))
    s.sink.wait_for(3, 60)
    assert time.monotonic() - started >= 2.0  # the pause held every sender
    s.wait_past_rescue(60)
    counts = status(s.client).counts
    assert (counts["sent"], counts["failed"]) == (3, 0)
