"""A real Celery worker as a subprocess, against a private Redis and the test SMTP sink."""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from celery import Celery

from notifier.localredis import PrivateRedis
from notifier.localworker import start_worker
from notifier.sink import Sink
from notifier.tasks import INGEST, QUEUE, create_app
from tests.conftest import wait_for


class Worker:
    """`celery -A worker worker` in its own process group, logging to a file."""

    def __init__(self, env: dict[str, str], log: Path, concurrency: int = 2) -> None:
        self.env = env
        self.log = log
        self.concurrency = concurrency
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 30.0) -> Worker:
        start_at = self.log.stat().st_size if self.log.exists() else 0
        self.proc = start_worker(
            self.env, self.log, name=f"test{os.getpid()}", concurrency=self.concurrency
        )
        wait_for(lambda: self._ready(start_at), timeout, "the worker to be ready")
        return self

    def _ready(self, offset: int) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise AssertionError(f"worker exited with {self.proc.returncode}:\n{self.text()}")
        if not self.log.exists():
            return False
        with self.log.open("rb") as f:
            f.seek(offset)
            return b" ready." in f.read()

    def text(self) -> str:
        return self.log.read_text(encoding="utf-8", errors="replace") if self.log.exists() else ""

    def kill(self) -> None:
        """SIGKILL the whole process group: the main process and its pool children."""
        if self.proc is not None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
            self.proc = None

    def stop(self, timeout: float = 30.0) -> None:
        """Warm shutdown: SIGTERM to the main process only, which lets running tasks end."""
        if self.proc is None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
        self.proc = None


class Stack:
    """Private Redis + sink + worker + a publishing app: one end-to-end system."""

    def __init__(self, redis_server: PrivateRedis, sink: Sink, tmp: Path, **env: str) -> None:
        self.redis_server = redis_server
        self.sink = sink
        self.env = {
            **os.environ,
            "NOTIFIER_BROKER_URL": redis_server.url,
            "NOTIFIER_SMTP_HOST": "127.0.0.1",
            "NOTIFIER_SMTP_PORT": str(sink.port),
            "NOTIFIER_SMTP_TLS": "none",
            "NOTIFIER_SMTP_TIMEOUT_SECONDS": "5",
            "NOTIFIER_SWEEP_SECONDS": "1",
            "NOTIFIER_RETRY_BASE_SECONDS": "1",
            "NOTIFIER_RETRY_MAX_SECONDS": "2",
            **{f"NOTIFIER_{k.upper()}": v for k, v in env.items()},
        }
        self.worker = Worker(self.env, tmp / "worker.log")
        from notifier.settings import load_settings

        self.app: Celery = create_app(load_settings(self.env))
        self.client = redis.Redis.from_url(redis_server.url)

    def publish(self, *events: dict[str, Any]) -> None:
        for event in events:
            self.app.send_task(INGEST, args=[event], queue=QUEUE)

    def drained(self) -> bool:
        """No task waiting in the queue and none in flight (unacked) in the broker."""
        return self.client.llen(QUEUE) == 0 and self.client.hlen("unacked") == 0

    def wait_drained(self, timeout: float = 30.0) -> None:
        wait_for(self.drained, timeout, "the queue to drain")


@pytest.fixture
def stack(
    private_redis: Callable[..., PrivateRedis], sink: Sink, tmp_path: Path
) -> Iterator[Callable[..., Stack]]:
    made: list[Stack] = []

    def make(start: bool = True, appendonly: bool = False, **env: str) -> Stack:
        s = Stack(private_redis(appendonly=appendonly), sink, tmp_path, **env)
        if start:
            s.worker.start()
        made.append(s)
        return s

    yield make
    for s in made:
        s.worker.stop()
        s.client.close()
        s.app.close()
