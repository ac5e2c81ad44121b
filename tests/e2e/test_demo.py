"""`make demo` and `make console` as a new user runs them (`python -m devtools.demo`, a
subprocess), against real Redis servers: by default on a private redis-server that they stop
at the end, also on Ctrl-C; on a chosen one (NOTIFIER_DEMO_REDIS_URL) only when its database
is empty or an earlier demo's; and another program's data survives every run.

A full demo run takes seconds: two are full (the default run, and the first on a chosen
database), the second run on that database is interrupted once it has claimed it.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import closing
from pathlib import Path

import httpx
import pytest
import redis

from devtools.demoredis import MARKER
from devtools.localredis import PrivateRedis, answers
from devtools.sink import free_port
from tests.conftest import ROOT, wait_for
from tests.e2e.conftest import proc_stats

pytestmark = pytest.mark.e2e

# Another program's key, in the database a run would use.
FOREIGN, FOREIGN_VALUE = "other-app:settings", b"keep me"
PRIVATE = re.compile(r"Redis: started a private redis-server \(.*\) on port (\d+)")
WORKER = re.compile(r"Worker: started \(pid (\d+)\)")


def env_for(out: Path, **extra: str) -> dict[str, str]:
    """The environment without the NOTIFIER_ settings of whoever runs the tests, plus the
    output folders in the test's tmp_path and `extra`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("NOTIFIER_")}
    return {**env, "NOTIFIER_DEMO_OUT": str(out), "NOTIFIER_CONSOLE_OUT": str(out), **extra}


def database(server: PrivateRedis, db: int) -> str:
    return f"{server.url.removesuffix('/0')}/{db}"


def with_foreign_key(url: str) -> None:
    with closing(redis.Redis.from_url(url)) as client:
        client.set(FOREIGN, FOREIGN_VALUE)


def keys_per_database(server: PrivateRedis) -> dict[str, int]:
    with closing(redis.Redis.from_url(server.url)) as client:
        return {db: int(v["keys"]) for db, v in client.info("keyspace").items()}


def assert_foreign_key_kept(url: str) -> None:
    with closing(redis.Redis.from_url(url)) as client:
        assert client.keys("*") == [FOREIGN.encode()]
        assert client.get(FOREIGN) == FOREIGN_VALUE


def run_demo(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "devtools.demo"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )


@pytest.fixture
def background(tmp_path: Path) -> Iterator[Callable[..., tuple[subprocess.Popen[bytes], Path]]]:
    """Factory: `python -m MODULE` in the background, its output in a file. One the test
    leaves running gets a Ctrl-C (a SIGKILL would leave its worker and Redis behind)."""
    started: list[subprocess.Popen[bytes]] = []

    def start(module: str, env: dict[str, str]) -> tuple[subprocess.Popen[bytes], Path]:
        log = tmp_path / f"{module}.{len(started)}.out"
        with log.open("wb") as out:
            proc = subprocess.Popen(
                [sys.executable, "-m", module], cwd=ROOT, env=env, stdout=out, stderr=out
            )
        started.append(proc)
        return proc, log

    yield start
    for proc in started:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def wait_output(proc: subprocess.Popen[bytes], log: Path, pattern: str, what: str) -> str:
    """The output once a line matches `pattern`; fails at once if the process ends first."""

    def seen() -> str | None:
        output = log.read_text()
        if re.search(pattern, output, re.MULTILINE):
            return output
        assert proc.poll() is None, f"exited with {proc.returncode} before {what}:\n{output}"
        return None

    return str(wait_for(seen, 90, what))


def number(pattern: re.Pattern[str], output: str) -> int:
    """The number a line of the output gives (a port, a pid)."""
    found = pattern.search(output)
    assert found is not None, output
    return int(found.group(1))


def running_in_group(pgid: int) -> list[int]:
    """Processes of the group that are not zombies."""
    return [pid for pid, fields in proc_stats() if int(fields[2]) == pgid and fields[0] != "Z"]


def test_a_database_holding_another_programs_data_is_refused_untouched(
    private_redis: Callable[..., PrivateRedis], tmp_path: Path
) -> None:
    server = private_redis(password="s3cret-pw")
    url = database(server, 13)
    with_foreign_key(url)

    done = run_demo(env_for(tmp_path / "out", NOTIFIER_DEMO_REDIS_URL=url))

    assert done.returncode == 2, done.stdout + done.stderr
    said = " ".join(done.stdout.split())  # whatever the terminal's width
    assert f"names redis://:****@127.0.0.1:{server.port}/13; its database 13 holds 1 key" in said
    assert "Nothing was changed." in said
    assert f"NOTIFIER_DEMO_REDIS_URL=redis://:****@127.0.0.1:{server.port}/14" in said
    assert "or unset NOTIFIER_DEMO_REDIS_URL" in said
    assert "s3cret-pw" not in done.stdout + done.stderr
    assert_foreign_key_kept(url)  # and no marker beside it
    assert keys_per_database(server) == {"db13": 1}
    assert not (tmp_path / "out").exists()  # stopped before it started or wrote anything


def test_the_default_run_uses_a_private_server_and_stops_it(
    private_redis: Callable[..., PrivateRedis], tmp_path: Path
) -> None:
    """A Redis given any other way (here as the service's broker and store) is not the
    demo's: the run has a private server of its own, gone when the run ends."""
    other = private_redis()
    url = database(other, 13)
    with_foreign_key(url)
    env = env_for(tmp_path / "out", NOTIFIER_BROKER_URL=url, NOTIFIER_REDIS_URL=url)

    done = run_demo(env)

    assert done.returncode == 0, done.stdout + done.stderr
    assert "Every kind of mail was sent" in done.stdout
    port = number(PRIVATE, done.stdout)
    assert port != other.port
    assert not answers(f"redis://127.0.0.1:{port}/0", timeout=2)
    assert_foreign_key_kept(url)
    assert keys_per_database(other) == {"db13": 1}


def test_a_second_run_reuses_a_database_only_a_demo_wrote(
    private_redis: Callable[..., PrivateRedis],
    background: Callable[..., tuple[subprocess.Popen[bytes], Path]],
    tmp_path: Path,
) -> None:
    server = private_redis()
    url, beside = database(server, 12), database(server, 13)
    with_foreign_key(beside)
    env = env_for(tmp_path / "out", NOTIFIER_DEMO_REDIS_URL=url)
    first = run_demo(env)
    assert first.returncode == 0, first.stdout + first.stderr
    assert "its database 12 was empty" in first.stdout
    with closing(redis.Redis.from_url(url)) as client:
        first_marker = client.get(MARKER)
        assert first_marker is not None
        assert client.dbsize() > 1  # the demo's data beside its marker

    # The second run may use it; a Ctrl-C once its worker runs stops the worker, and leaves
    # the chosen Redis running with the demo's database (now marked by the second run).
    proc, log = background("devtools.demo", env)
    pid = number(WORKER, wait_output(proc, log, WORKER.pattern, "the second run's worker"))
    proc.send_signal(signal.SIGINT)
    assert proc.wait(60) == 130, log.read_text()
    said = " ".join(log.read_text().split())
    assert "its database 12 held only an earlier demo's data: emptied" in said
    assert "Interrupted; everything the demo started is stopped." in said
    wait_for(lambda: not running_in_group(pid), 30, "the worker's processes to end")
    with closing(redis.Redis.from_url(url)) as client:
        assert client.get(MARKER) not in (None, first_marker)
    assert_foreign_key_kept(beside)


def test_the_console_runs_on_a_private_server_and_ctrl_c_stops_everything(
    background: Callable[..., tuple[subprocess.Popen[bytes], Path]], tmp_path: Path
) -> None:
    port = free_port()
    env = env_for(tmp_path / "out", NOTIFIER_CONSOLE_PORT=str(port))
    proc, log = background("devtools.console", env)
    said = wait_output(proc, log, r"^ntf_\S+$", "the organiser token")
    redis_port, worker = number(PRIVATE, said), number(WORKER, said)
    login = wait_for(lambda: answer(f"http://127.0.0.1:{port}/login"), 30, "the console")
    assert login == 200

    proc.send_signal(signal.SIGINT)

    assert proc.wait(60) == 0, log.read_text()
    assert "Stopped everything the console started." in log.read_text()
    assert answer(f"http://127.0.0.1:{port}/login") is None
    assert not answers(f"redis://127.0.0.1:{redis_port}/0", timeout=2)
    wait_for(lambda: not running_in_group(worker), 30, "the worker's processes to end")


def answer(url: str) -> int | None:
    """The page's status code, None when nothing listens."""
    try:
        return httpx.get(url, timeout=5).status_code
    except httpx.TransportError:
        return None
