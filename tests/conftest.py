"""Shared fixtures: real Redis, real SMTP servers, settings, and a waiting helper.

Services that are missing make a test skip locally and fail under CI=true (dramatiq's rule).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import redis

from devtools.localredis import PrivateRedis, answers
from devtools.sink import Sink
from notifier.settings import Settings, load_settings

CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
ROOT = Path(__file__).resolve().parent.parent
TEST_REDIS_URL = os.environ.get("NOTIFIER_TEST_REDIS_URL", "redis://127.0.0.1:6379/14")


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


@pytest.fixture
def redis_client() -> Iterator[redis.Redis]:
    """The machine's Redis, database 14, emptied before each test."""
    need(answers(TEST_REDIS_URL), f"Redis at {TEST_REDIS_URL}")
    client = redis.Redis.from_url(TEST_REDIS_URL)
    client.flushdb()
    yield client
    client.close()


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[Callable[..., PrivateRedis]]:
    """Factory: a redis-server of the test's own (restartable, optionally with AOF)."""
    started: list[PrivateRedis] = []

    def start(appendonly: bool = False) -> PrivateRedis:
        try:
            server = PrivateRedis(appendonly=appendonly, folder=tmp_path / f"redis{len(started)}")
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
    """Factory: Settings pointing at the test sink; keyword arguments override NOTIFIER_*."""

    def make(redis_url: str = TEST_REDIS_URL, **overrides: str) -> Settings:
        env = {
            "NOTIFIER_BROKER_URL": redis_url,
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
