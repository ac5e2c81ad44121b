"""Redis killed and restarted from its AOF, several times, in the middle of a reminder batch:
the workers and the organiser's `notifier remind` live through it and the batch completes
with nothing lost and nobody stepping in."""

from __future__ import annotations

import subprocess
import sys
import threading
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import IO

import pytest
import yaml

from notifier.store.status import status
from tests.conftest import ROOT, wait_for
from tests.e2e.conftest import NamedWorker, Stack, Worker
from tests.e2e.conftest import reminders_received as _reminders
from tests.events import CONFERENCE, created, person, reminder

pytestmark = pytest.mark.e2e

PROCESSES = 2  # pool processes per worker (the e2e Worker's concurrency)
SESSIONS = 4  # SMTP sessions per process (NOTIFIER_SMTP_CONNECTIONS' default)
RESTARTS = 3
ATTENDEES = 300
NOTIFIER = str(Path(sys.executable).parent / "notifier")  # the installed console script
# Small chunks, so that each worker holds several prefetched, unacknowledged deliver tasks
# when Redis goes away: the state that used to kill workers.
FAULTY = {
    "visibility_timeout_seconds": "10",
    "claim_lease_seconds": "10",
    "smtp_timeout_seconds": "2",
    "chunk_size": "10",
}


@pytest.fixture
def faulty(
    stack: Callable[..., Stack], workers: Callable[..., NamedWorker]
) -> tuple[Stack, list[Worker]]:
    """A private Redis with AOF and two workers on it."""
    s = stack(appendonly=True, **FAULTY)
    return s, [s.worker, workers(s, "second").start()]


def _seed(s: Stack, n: int) -> set[str]:
    """n registrations, confirmed; returns the attendees a reminder must reach."""
    s.publish(*(created(f"evt-{i}", f"REG-{i}", person(i)) for i in range(n)))
    s.sink.wait_for(n, timeout=120)
    s.wait_drained(60)
    return {person(i)["email"] for i in range(n)}


LOST = "Connection to broker lost"
CONNECTED = "Connected to "


def _restart_redis(s: Stack, workers: list[Worker]) -> None:
    """SIGKILL Redis, keep it down until every worker has noticed (the moment that used to
    kill them: unacknowledged tasks and no broker to restore them to), start it from its AOF."""
    seen = [w.text().count(LOST) for w in workers]
    s.redis_server.kill()

    def noticed() -> bool:
        return all(w.text().count(LOST) > n for w, n in zip(workers, seen, strict=True))

    wait_for(noticed, 60, "every worker to notice that Redis is gone")
    connected = [w.text().count(CONNECTED) for w in workers]
    s.redis_server.start()

    def back() -> bool:
        return all(w.text().count(CONNECTED) > n for w, n in zip(workers, connected, strict=True))

    # Each worker retries with a growing pause: without this wait the next kill could come
    # before a worker is back, and it would have nothing new to notice.
    wait_for(back, 90, "every worker to reconnect")


def _alive(workers: list[Worker]) -> list[int | None]:
    """Exit status of each worker's main process (None: still running)."""
    return [w.proc.poll() if w.proc is not None else -1 for w in workers]


def _living(workers: list[Worker]) -> bool:
    """True, or fails at once (rather than at a timeout) with the log of a worker that ended."""
    for w, code in zip(workers, _alive(workers), strict=True):
        assert code is None, f"a worker exited with {code}:\n{w.text()[-3000:]}"
    return True


def tally(got: Counter[str], expected: set[str], scenario: str) -> tuple[int, int, int]:
    delivered = len(set(got) & expected)
    lost = len(expected - set(got))
    duplicated = sum(got.values()) - len(got)
    print(f"\nFAULT {scenario}: delivered={delivered} lost={lost} duplicated={duplicated}")
    return delivered, lost, duplicated


def test_workers_live_through_redis_restarts_mid_batch(
    faulty: tuple[Stack, list[Worker]],
) -> None:
    s, workers = faulty
    current = _seed(s, ATTENDEES)
    before = len(s.sink.received)
    s.sink.script.delay = 0.02  # slow enough that every restart lands mid-batch
    s.publish(reminder("rem-r", "restarts"))
    step = ATTENDEES // (RESTARTS + 2)
    for n in range(1, RESTARTS + 1):
        s.sink.wait_for(before + n * step, timeout=120)
        _restart_redis(s, workers)
    assert len(s.sink.received) - before < len(current), "the batch finished too early"
    s.sink.script.delay = 0
    wait_for(
        lambda: _living(workers) and set(_reminders(s.sink.received)) == current,
        180,
        "every reminder",
    )
    wait_for(lambda: status(s.client, "restarts").done, 60, "every message to be settled")
    s.wait_drained(60)
    _, lost, duplicated = tally(
        _reminders(s.sink.received), current, f"Redis killed {RESTARTS}x mid-batch, 2 workers"
    )
    st = status(s.client, "restarts")
    assert st.counts["sent"] == len(current) and st.done, st.counts
    assert lost == 0
    # Only a message whose SMTP transaction was under way when Redis died can go out twice.
    assert duplicated <= RESTARTS * len(workers) * PROCESSES * SESSIONS
    assert _alive(workers) == [None] * len(workers)
    for w in workers:
        assert "Unrecoverable error" not in w.text()


class Output:
    """A subprocess's merged output, collected line by line as it comes."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.lines: list[str] = []
        assert proc.stdout is not None
        self._thread = threading.Thread(target=self._read, args=(proc.stdout,), daemon=True)
        self._thread.start()

    def _read(self, stream: IO[str]) -> None:
        for line in stream:
            self.lines.append(line)

    def text(self) -> str:
        return "".join(self.lines)

    def join(self) -> str:
        self._thread.join(30)
        return self.text()


def test_remind_command_follows_through_a_redis_restart(
    faulty: tuple[Stack, list[Worker]],
) -> None:
    s, workers = faulty
    current = _seed(s, 120)
    before = len(s.sink.received)
    s.sink.script.delay = 0.02
    env = {**s.env, "COLUMNS": "200", "PYTHONUNBUFFERED": "1"}
    cmd = [NOTIFIER, "remind", CONFERENCE, "--allow-past", "--batch", "restart"]
    with subprocess.Popen(
        [*cmd, "--timeout", "240"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    ) as remind:
        out = Output(remind)
        wait_for(lambda: "Requested batch" in out.text(), 60, "remind to publish the batch")
        s.sink.wait_for(before + 20, timeout=120)
        s.redis_server.kill()
        wait_for(lambda: "reconnecting" in out.text(), 60, "remind to say it reconnects")
        assert remind.poll() is None, out.text()
        s.redis_server.start()
        remind.wait(300)
    output = out.join()
    assert remind.returncode == 0, output
    assert "Traceback" not in output, output
    assert "Redis answers again" in output
    assert "batch digitaliseringstraef-2024:restart" in output  # the summary table
    got = _reminders(s.sink.received)
    _, lost, duplicated = tally(got, current, "Redis killed under `notifier remind`")
    assert lost == 0 and duplicated <= len(workers) * PROCESSES * SESSIONS
    assert _alive(workers) == [None] * len(workers)


def test_worker_exits_nonzero_after_an_unrecoverable_error(
    stack: Callable[..., Stack], tmp_path: Path
) -> None:
    """Celery logs "Unrecoverable error" and stops; `notifier worker` must then fail, or a
    supervisor that restarts only on failure leaves the queue without a worker."""
    s = stack(start=False)
    pidfile = tmp_path / "no-such-folder" / "worker.pid"  # the pidfile lock fails at start
    done = subprocess.run(
        [NOTIFIER, "worker", f"--pidfile={pidfile}", "--without-mingle", "--without-gossip"],
        env=s.env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert "Unrecoverable error" in done.stderr, done.stderr
    assert done.returncode != 0


def test_compose_restarts_workers_whatever_their_exit_status() -> None:
    """`on-failure` would leave a worker down after an exit with status 0."""
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text(encoding="utf-8"))
    for service in ("worker", "beat"):
        assert compose["services"][service].get("restart") in ("always", "unless-stopped")
