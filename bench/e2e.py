"""notifier end to end: a private Redis, a real Celery worker at default settings, the sink.

Completion is read from the outbox counters in Redis (`notifier:counts`, field `sent`): a
message is counted once the worker has had the sink's 250 reply to DATA and recorded it.
The sink's own counter is checked against it after every run.

Registrations of the first confirmation run happen before the reminders' cutoff
(`occurred_at`), all later ones after it, so that every reminder batch goes to exactly the
N people of the first run, without changing a setting or a conference file.
"""

from __future__ import annotations

import os
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis
from celery import Celery

from bench.messages import CONFERENCE, attendee
from bench.procs import BenchError, stop_group, wait_until
from bench.rss import RssPeak, RssSampler
from bench.sinks import SinkServer
from bench.stats import Throughput, percentile
from devtools import localworker
from devtools.localredis import PrivateRedis
from notifier.settings import load_settings
from notifier.store import keys
from notifier.store.batches import batch_key
from notifier.tasks import INGEST, QUEUE, create_app
from tests.events import created, reminder

EARLY = "2024-02-14T10:02:11+01:00"  # the reminder population registers before the cutoff
REMINDER_AT = "2024-04-15T09:00:00+02:00"  # the batches' cutoff
LATE = "2024-04-16T10:00:00+02:00"  # everyone else registers after it (conference: 22 April)
STALL_SECONDS = 60.0  # no new sent message for this long: the run is reported as stuck
POLL_SECONDS = 0.01  # 10 ms granularity on runs of 1 s and more


@dataclass(frozen=True, slots=True)
class Latency:
    samples: int
    p50_ms: float
    p95_ms: float
    max_ms: float
    rate: float  # registrations per second actually published
    source: str  # where the accept times came from


@dataclass(frozen=True, slots=True)
class BatchPhases:
    """A reminder run split at its first accepted mail (times from the outbox)."""

    messages: int
    until_first_s: float  # publish -> first accept: ingest, planning, the first chunks
    sending_s: float  # first accept -> last accept

    @property
    def sending_rate(self) -> float:
        return (self.messages - 1) / self.sending_s if self.sending_s > 0 else 0.0


def text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def worker_env(redis_url: str, smtp_port: int) -> dict[str, str]:
    """The environment of the worker: defaults for every NOTIFIER_* setting but these four."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("NOTIFIER_")}
    env.update(
        NOTIFIER_BROKER_URL=redis_url,
        NOTIFIER_SMTP_HOST="127.0.0.1",
        NOTIFIER_SMTP_PORT=str(smtp_port),
        NOTIFIER_SMTP_TLS="none",
    )
    return env


def start_worker(env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    """`celery -A worker worker -Q notifier -c 2` as in production, logging INFO to a file."""
    return localworker.start_worker(env, log, name=f"bench{os.getpid()}")


def registrations(n: int, tag: str, at: str) -> list[dict[str, Any]]:
    """n registration.created events with ids, registrations and addresses unique to tag."""
    events = []
    for i in range(n):
        person = attendee(i, tag)
        who = {"name": person.name, "email": person.email, "organisation": "Testkommune"}
        events.append(created(f"bench-{tag}-{i}", f"REG-{tag}-{i}", who, at=at))
    return events


class Notifier:
    """Private Redis + worker + publishing app, stopped together on exit."""

    def __init__(self, sink: SinkServer, workdir: Path) -> None:
        self.sink = sink
        self.workdir = workdir
        self.tag = uuid.uuid4().hex[:8]  # ids unique per run of the benchmark
        self.log = workdir / "worker.log"
        self._stack = ExitStack()

    def __enter__(self) -> Notifier:
        try:
            self._start()
        except BaseException:
            self._stack.close()
            raise
        return self

    def __exit__(self, *_: object) -> None:
        self._stack.close()

    def _start(self) -> None:
        folder = self.workdir / "redis"
        folder.mkdir(parents=True, exist_ok=True)
        server = PrivateRedis(folder=folder).start()
        self._stack.callback(server.stop)
        env = worker_env(server.url, self.sink.port)
        self.client = redis.Redis.from_url(server.url)
        self._stack.callback(self.client.close)
        self.app: Celery = create_app(load_settings(env))
        self._stack.callback(self.app.close)
        self.worker = start_worker(env, self.log)
        self._stack.callback(stop_group, self.worker, 30.0)
        self.rss = RssSampler(self.worker.pid)
        self.rss.start()
        self._stack.callback(self.rss.stop)
        wait_until(self._ready, 60, "the worker to be ready", interval=0.05)

    def _ready(self) -> bool:
        self._check_worker()
        return self.log.exists() and b" ready." in self.log.read_bytes()

    def _check_worker(self) -> None:
        if self.worker.poll() is not None:
            raise BenchError(f"the worker exited ({self.worker.returncode}):\n{self.log_tail()}")

    def log_tail(self, lines: int = 15) -> str:
        if not self.log.exists():
            return "(no worker log)"
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])

    def peak_rss(self) -> RssPeak:
        return self.rss.peak()

    # -- publishing and counting ---------------------------------------------------------

    @contextmanager
    def publisher(self) -> Iterator[Callable[[dict[str, Any]], None]]:
        """send(event): one kept producer connection, as a registration system would hold."""
        with self.app.producer_or_acquire() as producer:
            yield lambda event: self.app.send_task(
                INGEST, args=[event], queue=QUEUE, producer=producer
            )

    def publish(self, events: Sequence[dict[str, Any]]) -> None:
        with self.publisher() as send:
            for event in events:
                send(event)

    def counts(self) -> tuple[dict[str, int], int]:
        """Outbox counters by state, and the number of dead letters."""
        pipe = self.client.pipeline(transaction=False)
        pipe.hgetall(keys.COUNTS)
        pipe.hlen(keys.DEAD)
        raw, dead = pipe.execute()
        return {text(k): int(v) for k, v in raw.items()}, int(dead)

    def sent(self) -> int:
        return self.counts()[0].get("sent", 0)

    def wait_sent(self, target: int, what: str) -> None:
        """Poll until `target` messages are sent; fail fast on failures or a stall."""
        last, last_change = -1, time.monotonic()
        while True:
            counts, dead = self.counts()
            sent = counts.get("sent", 0)
            if sent >= target:
                return
            trouble = {s: counts.get(s, 0) for s in ("failed", "retrying")} | {"dead": dead}
            if any(trouble.values()):
                raise BenchError(f"{what}: {trouble} (worker log: {self.log})")
            if sent != last:
                last, last_change = sent, time.monotonic()
            elif time.monotonic() - last_change > STALL_SECONDS:
                raise BenchError(f"{what}: stuck at {sent}/{target}:\n{self.log_tail()}")
            self._check_worker()
            time.sleep(POLL_SECONDS)

    def _sink_check(self, before: int, expected: int, what: str) -> str:
        """The sink's own count must agree with the outbox's (smtp-sink's counter lags a bit)."""
        try:
            wait_until(lambda: self.sink.accepted() - before >= expected, 5, what)
        except BenchError:
            return f"{what}: sink counted {self.sink.accepted() - before} of {expected}"
        return ""

    # -- the measurements ----------------------------------------------------------------

    def timed(self, events: Sequence[dict[str, Any]], expected: int, what: str) -> Throughput:
        """Publish events as fast as possible; time until `expected` more messages are sent."""
        target = self.sent() + expected
        sink_before = self.sink.accepted()
        started = time.perf_counter()
        self.publish(events)
        self.wait_sent(target, what)
        elapsed = time.perf_counter() - started
        problem = self._sink_check(sink_before, expected, what)
        if problem:
            raise BenchError(problem)
        return Throughput(expected, elapsed)

    def confirmations(self, n: int, run: int) -> Throughput:
        """N registrations; only the first run's are before the reminders' cutoff."""
        events = registrations(n, f"{self.tag}c{run}", EARLY if run == 0 else LATE)
        return self.timed(events, n, f"confirmation run {run + 1}")

    def reminders(self, n: int, run: int) -> tuple[Throughput, BatchPhases]:
        batch = f"bench-{self.tag}-{run}"
        event = reminder(f"bench-{self.tag}-reminder-{run}", batch, at=REMINDER_AT)
        published = time.time()
        result = self.timed([event], n, f"reminder batch {run + 1}")
        key = batch_key(CONFERENCE, batch)
        total = self.client.hget(keys.batch(key), "total")
        if total is None or int(total) != n:
            raise BenchError(f"reminder batch {batch} planned {total!r} messages, not {n}")
        return result, self._phases(key, published)

    def _phases(self, key: str, published: float) -> BatchPhases:
        """Split a batch's time at its first accept, using the outbox's updated_at stamps."""
        members = [text(k) for k in self.client.smembers(keys.batch_members(key))]
        pipe = self.client.pipeline(transaction=False)
        for member in members:
            pipe.hget(keys.message(member), "updated_at")
        stamps = sorted(float(text(t)) for t in pipe.execute() if t is not None)
        return BatchPhases(len(stamps), stamps[0] - published, stamps[-1] - stamps[0])

    def latency(self, rate: float, seconds: float) -> Latency:
        """Registrations at a steady rate; publish -> SMTP accept per confirmation."""
        events = registrations(round(rate * seconds), f"{self.tag}lat", LATE)
        target = self.sent() + len(events)
        published = self._paced(events, rate)
        self.wait_sent(target, "latency run")
        accepted, source = self._accept_times(events)
        ms = [1000 * (accepted[e] - t) for e, t in published.items() if e in accepted]
        if len(ms) != len(events):
            raise BenchError(f"latency run: accept times for {len(ms)} of {len(events)} mails")
        span = max(published.values()) - min(published.values())
        return Latency(
            len(ms),
            percentile(ms, 50),
            percentile(ms, 95),
            max(ms),
            (len(events) - 1) / span if span > 0 else 0.0,
            source,
        )

    def _paced(self, events: Sequence[dict[str, Any]], rate: float) -> dict[str, float]:
        """Publish one event every 1/rate s (sleeping only to pace); event id -> publish time."""
        published: dict[str, float] = {}
        with self.publisher() as send:
            start = time.perf_counter()
            for i, event in enumerate(events):
                pause = start + i / rate - time.perf_counter()
                if pause > 0:
                    time.sleep(pause)
                published[event["id"]] = time.time()
                send(event)
        return published

    def _accept_times(self, events: Sequence[dict[str, Any]]) -> tuple[dict[str, float], str]:
        """Event id -> time its confirmation was accepted, and where that time comes from."""
        by_sink = self.sink.accept_times()
        if by_sink is not None:
            emails = {e["registration"]["attendee"]["email"]: e["id"] for e in events}
            times = {emails[r]: t for r, t in by_sink.items() if r in emails}
            return times, "sink: accept time stamped per message (aiosmtpd)"
        pipe = self.client.pipeline(transaction=False)
        for e in events:
            pipe.hmget(keys.message(f"{e['id']}:confirmation"), ["state", "updated_at"])
        times = {
            e["id"]: float(text(at))
            for e, (state, at) in zip(events, pipe.execute(), strict=True)
            if state == b"sent" and at is not None
        }
        return times, "outbox updated_at when marked sent (smtp-sink keeps no times)"
