"""Shared fixtures: real Redis, real SMTP servers, settings, and a waiting helper.

Services that are missing make a test skip locally and fail under CI=true (dramatiq's rule).
The unit and integration tests share one private redis-server, started for the session on a
free port, so that two runs on one machine cannot empty each other's data;
NOTIFIER_TEST_REDIS_URL points them at another Redis instead.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import redis
from hypothesis import settings as hypothesis_settings
from hypothesis.database import DirectoryBasedExampleDatabase, ReadOnlyDatabase

from devtools.localredis import PrivateRedis, answers
from devtools.sink import Sink
from notifier.settings import Settings, load_settings

CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
ROOT = Path(__file__).resolve().parent.parent
# Set by pytest_sessionstart, before any test module is imported: modules that read it at
# import time see the session's server.
TEST_REDIS_URL = os.environ.get("NOTIFIER_TEST_REDIS_URL", "")
_session_redis: PrivateRedis | None = None
_no_redis = ""  # why there is no session server, when there is none

# Hypothesis keeps the failing examples it finds in tests/hypothesis-examples/, which is
# committed: every run, CI's included, replays them first. CI then explores fresh examples
# within each test's fixed budget (max_examples), as local runs do: a derandomized profile
# would only ever replay the same examples and never find the next counterexample. CI reads
# the database without writing to it (a counterexample CI finds is printed as a blob to
# reproduce; a local run that finds it saves it for the commit).
EXAMPLES = DirectoryBasedExampleDatabase(ROOT / "tests" / "hypothesis-examples")
hypothesis_settings.register_profile(
    "ci", deadline=None, database=ReadOnlyDatabase(EXAMPLES), print_blob=True
)
hypothesis_settings.register_profile("dev", deadline=None, database=EXAMPLES, print_blob=True)
hypothesis_settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE") or ("ci" if CI else "dev"))


def need(condition: bool, what: str) -> None:
    if not condition:
        if CI:
            pytest.fail(f"{what} is required under CI")
        pytest.skip(f"{what} is not available")


class Clock:
    """A clock the test moves by hand (the service reads time only through it)."""

    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


def wait_for(predicate: Callable[[], Any], timeout: float = 20.0, what: str = "condition") -> Any:
    """Poll until predicate() is truthy; returns its value. Raises AssertionError on timeout."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.02)


def pytest_sessionstart(session: pytest.Session) -> None:
    """Start the session's redis-server (unless NOTIFIER_TEST_REDIS_URL names one)."""
    global TEST_REDIS_URL, _session_redis, _no_redis
    if TEST_REDIS_URL:
        return
    try:
        server = PrivateRedis().start()
    except (FileNotFoundError, RuntimeError) as exc:
        _no_redis = str(exc)
        return
    _session_redis, TEST_REDIS_URL = server, server.url


def pytest_sessionfinish(session: pytest.Session) -> None:
    if _session_redis is not None:
        _session_redis.stop()
        shutil.rmtree(_session_redis.folder, ignore_errors=True)


@pytest.fixture
def redis_url() -> str:
    """The URL of the tests' Redis (skips locally, fails under CI, when there is none)."""
    need(not _no_redis, _no_redis or "redis-server")
    need(answers(TEST_REDIS_URL), f"Redis at {TEST_REDIS_URL}")
    return TEST_REDIS_URL


@pytest.fixture
def redis_client(redis_url: str) -> Iterator[redis.Redis]:
    """The tests' Redis, emptied before each test."""
    client = redis.Redis.from_url(redis_url)
    client.flushdb()
    yield client
    client.close()


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[Callable[..., PrivateRedis]]:
    """Factory: a redis-server of the test's own (restartable, optionally with AOF or a
    password)."""
    started: list[PrivateRedis] = []

    def start(appendonly: bool = False, password: str | None = None) -> PrivateRedis:
        try:
            folder = tmp_path / f"redis{len(started)}"
            server = PrivateRedis(appendonly=appendonly, folder=folder, password=password)
        except FileNotFoundError as exc:
            need(False, str(exc))
        server.folder.mkdir(parents=True, exist_ok=True)
        started.append(server.start())
        return server

    yield start
    for server in started:
        server.stop()


@pytest.fixture
def sink(tmp_path: Path) -> Iterator[Sink]:
    """A real aiosmtpd server on a free loopback port, recording what it accepts."""
    with Sink(folder=tmp_path / "mail") as server:
        yield server


@pytest.fixture
def make_settings(sink: Sink) -> Callable[..., Settings]:
    """Factory: Settings pointing at the test sink and the tests' Redis; keyword arguments
    override NOTIFIER_*. Tests that talk to Redis ask for `redis_client` or `redis_url` too,
    which skips or fails them when there is none; without one, the port is closed."""

    def make(redis_url: str = "", **overrides: str) -> Settings:
        env = {
            "NOTIFIER_BROKER_URL": redis_url or TEST_REDIS_URL or "redis://127.0.0.1:1/0",
            "NOTIFIER_SMTP_HOST": "127.0.0.1",
            "NOTIFIER_SMTP_PORT": str(sink.port),
            "NOTIFIER_SMTP_TLS": "none",
            "NOTIFIER_SMTP_TIMEOUT_SECONDS": "5",
            "NOTIFIER_RETRY_BASE_SECONDS": "1",
            "NOTIFIER_RETRY_MAX_SECONDS": "2",
        }
        env.update({f"NOTIFIER_{k.upper()}": v for k, v in overrides.items()})
        return load_settings(env)

    return make
