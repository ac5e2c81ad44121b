"""A real Celery worker as a subprocess, against a private Redis and the test SMTP sink."""

from __future__ import annotations

import functools
import glob
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
from collections import Counter
from collections.abc import Callable, Iterator
from email import message_from_bytes, policy
from pathlib import Path
from typing import Any

import pytest
import redis
import trustme
from celery import Celery

import devtools.postfix
from devtools.dovecot import PrivateDovecot
from devtools.dovecot import install as install_dovecot
from devtools.localredis import PrivateRedis
from devtools.localworker import start_worker
from devtools.sink import Received, Sink, free_port
from notifier.settings import load_settings
from notifier.store.status import status
from notifier.tasks import INGEST, QUEUE, create_app
from tests.conftest import need, wait_for


def proc_stats() -> Iterator[tuple[int, list[str]]]:
    """(pid, the fields of /proc/PID/stat after the name) of every process: state, parent,
    group, ... The name before them is in parentheses and may hold spaces."""
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue  # gone meanwhile
        yield int(stat.parent.name), fields


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

    def wait_past_rescue(self, timeout: float = 60.0) -> None:
        """Before asserting that nothing more was sent: wait until a message that a wrong
        step left claimed, queued or due for a retry would have been sent. The store's clock
        (the one leases and retry times are on) passes the claim lease (or the longest retry
        delay) plus one sweep interval; then nothing may be pending: a message still pending
        would be sent later, so the wait ends only once none is."""
        settings = load_settings(self.env)
        window = max(settings.claim_lease_seconds, settings.retry_max_seconds)
        store = redis.Redis.from_url(settings.redis_url)
        try:
            until = _redis_now(store) + window + settings.sweep_seconds
            wait_for(lambda: _redis_now(store) >= until, timeout, "the claim lease and a sweep")
            wait_for(lambda: self.drained() and _pending(store) == 0, timeout, "nothing pending")
        finally:
            store.close()


def _redis_now(client: redis.Redis) -> float:
    seconds, micros = client.time()
    return float(seconds) + micros / 1e6


def _pending(store: redis.Redis) -> int:
    """Messages queued, claimed or waiting for a retry."""
    counts = status(store, failures=False).counts
    return counts["queued"] + counts["sending"] + counts["retrying"]


# For tests that assert that nothing more was sent: a short claim lease (at least twice the
# SMTP timeout, as the settings require), so that `Stack.wait_past_rescue` is quick.
SHORT_LEASE = {"claim_lease_seconds": "4", "smtp_timeout_seconds": "2"}


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


# --- For the fault suite: more workers, stopped workers, skewed clocks, Postfix's smtp-sink ---


@functools.cache
def debian_package(path: str, package: str, preseed: str = "") -> bool:
    """True if `path` exists, after installing the Debian package that ships it when this user
    may (root with apt-get), as `make sink` does: the test installs what it needs itself."""
    if Path(path).exists() or glob.glob(path):
        return True
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        return False
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    if preseed:
        subprocess.run(["debconf-set-selections"], input=preseed.encode(), env=env, check=False)
    install = ["apt-get", "install", "-y", "-q", "--no-install-recommends"]
    install += ["-o", "DPkg::Lock::Timeout=300", package]
    for step in (install, ["apt-get", "update", "-q"], install):
        subprocess.run(step, env=env, check=False, capture_output=True, timeout=600)
        if Path(path).exists() or glob.glob(path):
            return True
    return False


SMTP_SINK = "/usr/sbin/smtp-sink"
POSTFIX_PRESEED = "postfix postfix/main_mailer_type select No configuration\n"
LIBFAKETIME = "/usr/lib/*/faketime/libfaketime.so.1"


def skewed_clock(offset: str) -> dict[str, str]:
    """Environment that runs a process under libfaketime with its wall clock `offset` off
    ("+15" is 15 s ahead). The monotonic clock stays real: only wall-clock skew between
    machines is being imitated, and event loops time their waits on the monotonic one."""
    need(debian_package(LIBFAKETIME, "libfaketime"), "libfaketime (Debian package libfaketime)")
    return {
        "LD_PRELOAD": sorted(glob.glob(LIBFAKETIME))[0],
        "FAKETIME": offset,
        "FAKETIME_DONT_FAKE_MONOTONIC": "1",
    }


class NamedWorker(Worker):
    """A worker with a node name of its own (two workers of one stack must not share one)
    that can also be stopped and continued as a whole process group."""

    def __init__(self, env: dict[str, str], log: Path, name: str, concurrency: int = 2) -> None:
        super().__init__(env, log, concurrency)
        self.name = name

    def launch(self) -> int:
        """Start without waiting; returns the log offset that `wait_ready` looks after."""
        start_at = self.log.stat().st_size if self.log.exists() else 0
        self.proc = start_worker(self.env, self.log, name=self.name, concurrency=self.concurrency)
        return start_at

    def wait_ready(self, offset: int, timeout: float = 60.0) -> NamedWorker:
        wait_for(lambda: self._ready(offset), timeout, f"worker {self.name} to be ready")
        return self

    def start(self, timeout: float = 60.0) -> NamedWorker:
        return self.wait_ready(self.launch(), timeout)

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def pause(self) -> None:
        """SIGSTOP to the main process and its pool children at once."""
        assert self.proc is not None
        os.killpg(self.proc.pid, signal.SIGSTOP)

    def resume(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGCONT)


def start_all(*workers: NamedWorker, timeout: float = 60.0) -> None:
    """Start workers side by side: their start-ups overlap instead of adding up."""
    offsets = [w.launch() for w in workers]
    for w, offset in zip(workers, offsets, strict=True):
        w.wait_ready(offset, timeout)


@pytest.fixture
def workers(stack: Callable[..., Stack], tmp_path: Path) -> Iterator[Callable[..., NamedWorker]]:
    """Factory: one more worker for a stack, with extra environment (e.g. `skewed_clock`).
    Depends on `stack` so that these workers stop before the stack's Redis does."""
    made: list[NamedWorker] = []

    def make(s: Stack, name: str, **env: str) -> NamedWorker:
        w = NamedWorker({**s.env, **env}, tmp_path / f"worker-{name}.log", f"{name}{os.getpid()}")
        made.append(w)
        return w

    yield make
    for w in made:
        w.resume()
        w.stop()


class PostfixSink:
    """Postfix's smtp-sink on a free loopback port: a relay that is not ours. Every mail
    transaction is dumped to a file of its own (created at MAIL, filled as DATA arrives), so
    copies can be counted by recipient and Message-ID even when no reply was awaited."""

    def __init__(self, *options: str, port: int | None = None) -> None:
        self.options = options
        self.port = port or free_port()
        # smtp-sink refuses to run as root and drops to `nobody`, who cannot enter pytest's
        # private tmp_path: the dumps go to a folder of their own under /tmp.
        self.folder = Path(tempfile.mkdtemp(prefix="notifier-smtp-sink-"))
        self.folder.chmod(0o777)
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 10.0) -> PostfixSink:
        args = [SMTP_SINK, *self.options, "-d", f"{self.folder}/m.", f"127.0.0.1:{self.port}"]
        if os.geteuid() == 0:
            args[1:1] = ["-u", "nobody"]
        self.proc = subprocess.Popen(
            [*args, "128"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        wait_for(self._listening, timeout, f"smtp-sink on port {self.port}")
        return self

    def _listening(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise AssertionError(f"smtp-sink exited with {self.proc.returncode}")
        with socket.socket() as probe:
            return probe.connect_ex(("127.0.0.1", self.port)) == 0

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(10)
            self.proc = None

    def copies(self) -> list[tuple[str, str]]:
        """(recipient, Message-ID) of every transaction that got as far as the message."""
        found = []
        for dump in self.folder.iterdir():
            head = dump.read_bytes().split(b"\n\n", 1)[0].decode("utf-8", "replace")
            rcpt = re.search(r"^X-Rcpt-Args: <([^>]*)>", head, re.MULTILINE)
            mid = re.search(r"^Message-ID: (\S+)", head, re.MULTILINE | re.IGNORECASE)
            if rcpt and mid:
                found.append((rcpt.group(1), mid.group(1)))
        return found

    def cleanup(self) -> None:
        self.stop()
        shutil.rmtree(self.folder, ignore_errors=True)


@pytest.fixture
def postfix_sink() -> Iterator[Callable[..., PostfixSink]]:
    """Factory: a running smtp-sink with the given options (installed first if missing)."""
    need(debian_package(SMTP_SINK, "postfix", POSTFIX_PRESEED), "Postfix's smtp-sink")
    made: list[PostfixSink] = []

    def make(*options: str, port: int | None = None) -> PostfixSink:
        made.append(PostfixSink(*options, port=port))
        return made[-1].start()

    yield make
    for p in made:
        p.cleanup()


REMINDER = "Påmindelse: Kommunernes Digitaliseringstræf '24 mandag den 22. april 2024"


def reminders_received(items: list[Received]) -> Counter[str]:
    """How many reminders (by subject) each recipient got."""
    out: Counter[str] = Counter()
    for item in items:
        if message_from_bytes(item.data, policy=policy.default)["Subject"] == REMINDER:
            out.update(item.recipients)
    return out


# --- A real MTA between notifier and the relay: Postfix that bounces after its 250 (issue 14) ---


def postfix_usable() -> bool:
    """Debian's Postfix, installed here if missing, and root to run a private instance of it
    (Postfix starts as root and drops to its own user). maillog_file needs 3.4 or later."""
    if os.geteuid() != 0 or not debian_package(
        devtools.postfix.POSTFIX, "postfix", POSTFIX_PRESEED
    ):
        return False
    major, minor = (int(x) for x in devtools.postfix.version().split(".")[:2])
    return (major, minor) >= (3, 4)


@pytest.fixture
def private_postfix() -> Iterator[Callable[..., devtools.postfix.PrivatePostfix]]:
    """Factory: a started private Postfix relaying to `relay_port` (the test's sink) and
    piping mail for the bounce domains to a command; keyword arguments as `PrivatePostfix`
    (pipe_argv, pipe_env, pipe_args, bounce_domains, settings). Stopped at teardown."""
    need(postfix_usable(), "Postfix >= 3.4 (Debian package postfix) and root to run it")
    made: list[devtools.postfix.PrivatePostfix] = []

    def make(relay_port: int, **options: Any) -> devtools.postfix.PrivatePostfix:
        made.append(devtools.postfix.PrivatePostfix(relay_port, **options))
        return made[-1].start()

    yield make
    for p in made:
        p.cleanup()


# --- Bounce polling: a private Dovecot whose certificate comes from a trustme CA ---


@pytest.fixture
def dovecot() -> Iterator[PrivateDovecot]:
    """A running Dovecot with one user and an empty INBOX; its CA's PEM is `.ca_file`.
    Installed from Debian first if missing (as root); skipped locally if it cannot be."""
    need(os.geteuid() == 0 and install_dovecot(), "Dovecot (dovecot-imapd, run as root)")
    ca = trustme.CA()
    leaf = ca.issue_cert("127.0.0.1", "localhost")
    chain = b"".join(pem.bytes() for pem in leaf.cert_chain_pems)
    server = PrivateDovecot(chain, leaf.private_key_pem.bytes(), ca.cert_pem.bytes())
    try:
        yield server.start()
    finally:
        server.cleanup()
