"""Where the deliver path spends its time: cProfile of Service.deliver, in this process.

A fresh private Redis gets n registrations (ingested only, so their confirmations stay
queued) and then two reminder batches to them: a quarter of the first is delivered without
the profiler (the plain one-process rate), the second under cProfile, in chunks of
NOTIFIER_CHUNK_SIZE
exactly as `notifier.deliver` tasks receive them. The "notifier" logger writes INFO to a
file meanwhile, as it does in a worker started with -l INFO.
"""

from __future__ import annotations

import cProfile
import io
import logging
import pstats
import re
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis

from bench.e2e import EARLY, REMINDER_AT, registrations
from bench.procs import ROOT
from bench.stats import Throughput
from devtools.localredis import PrivateRedis
from notifier.service import Service
from notifier.settings import Settings, load_settings
from tests.events import reminder

TOP = 15
WORKER_LOG_FORMAT = "[%(asctime)s: %(levelname)s/%(processName)s] %(message)s"  # Celery's


@dataclass(frozen=True, slots=True)
class Hotspot:
    ncalls: str
    tottime: float
    cumtime: float
    where: str


@dataclass(frozen=True, slots=True)
class DeliverProfile:
    messages: int
    plain: Throughput  # deliver only, no profiler: what one worker process manages
    profiled_seconds: float
    top: list[Hotspot]
    packages: list[tuple[str, float]]  # self time by library, largest first
    report: str  # path of the full text report


@contextmanager
def worker_like_logging(path: Path) -> Iterator[None]:
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(logging.Formatter(WORKER_LOG_FORMAT))
    logger = logging.getLogger("notifier")
    old_level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old_level)
        handler.close()


def deliver_in_chunks(svc: Service, message_keys: Sequence[str], chunk: int) -> None:
    for i in range(0, len(message_keys), chunk):
        svc.deliver(message_keys[i : i + chunk])


def _short(file_name: str, line: int, func: str) -> str:
    """`notifier/smtp.py:120(send)`, `asyncio/events.py:78(_run)`; builtins as pstats shows them."""
    if file_name == "~":
        return func
    for prefix in (_SITE, _STDLIB, re.compile(re.escape(f"{ROOT}/"))):
        shorter = prefix.sub("", file_name, count=1)
        if shorter != file_name:
            file_name = shorter
            break
    return f"{file_name}:{line}({func})"


_SITE = re.compile(r"^.*/site-packages/")
_STDLIB = re.compile(r"^.*/python3\.\d+/")
# (file, line, function) -> (primitive calls, calls, tottime, cumtime, callers)
RawStats = dict[tuple[str, int, str], tuple[int, int, float, float, dict[Any, Any]]]


def _raw(stats: pstats.Stats) -> RawStats:
    # Stats.stats is the documented-by-use table behind print_stats (not in typeshed). Not
    # get_stats_profile(): that keys by bare function name, so `run` hides every other `run`.
    raw: RawStats = vars(stats)["stats"]
    return raw


def _calls(primitive: int, total: int) -> str:
    return str(total) if primitive == total else f"{total}/{primitive}"


def top_entries(stats: pstats.Stats, count: int = TOP) -> list[Hotspot]:
    ranked = sorted(_raw(stats).items(), key=lambda kv: kv[1][3], reverse=True)
    return [
        Hotspot(_calls(cc, nc), tt, ct, _short(*func))
        for func, (cc, nc, tt, ct, _) in ranked[:count]
    ]


def package(file_name: str) -> str:
    """The library a frame belongs to: `notifier`, `icalendar`, `email`, `asyncio`, ..."""
    for prefix in (_SITE, _STDLIB):  # first: the venv lies inside the repository
        shorter = prefix.sub("", file_name, count=1)
        if shorter != file_name:
            return shorter.split("/")[0].removesuffix(".py")
    if file_name.endswith((".html", ".txt")):
        return "jinja2 templates"  # compiled templates carry their source's file name
    return file_name.removeprefix(f"{ROOT}/").split("/")[0].removesuffix(".py")


def by_package(stats: pstats.Stats) -> list[tuple[str, float]]:
    """Self time per library, largest first; the time of a C function (a socket call, a
    str method) is counted for the library of the Python function that called it."""
    raw = _raw(stats)
    totals: dict[str, float] = {}
    for (file_name, _, _), (_, _, tt, _, callers) in raw.items():
        if file_name != "~":
            totals[package(file_name)] = totals.get(package(file_name), 0.0) + tt
            continue
        for caller, (_, _, caller_tt, _) in callers.items():
            owner = package(caller[0]) if caller[0] != "~" else "C functions"
            totals[owner] = totals.get(owner, 0.0) + caller_tt
    return sorted(totals.items(), key=lambda kv: kv[1], reverse=True)


def _write_report(profiler: cProfile.Profile, out: Path) -> Path:
    buf = io.StringIO()
    stats = pstats.Stats(profiler, stream=buf)
    stats.sort_stats("cumulative").print_stats(40)
    stats.sort_stats("tottime").print_stats(30)
    stats.dump_stats(out / "deliver.prof")
    path = out / "deliver-profile.txt"
    path.write_text(buf.getvalue(), encoding="utf-8")
    return path


def settings_for(redis_url: str, smtp_port: int) -> Settings:
    return load_settings(
        {
            "NOTIFIER_BROKER_URL": redis_url,
            "NOTIFIER_SMTP_HOST": "127.0.0.1",
            "NOTIFIER_SMTP_PORT": str(smtp_port),
            "NOTIFIER_SMTP_TLS": "none",
        }
    )


def _batch(svc: Service, tag: str, run: str) -> list[str]:
    return svc.ingest(reminder(f"prof-{tag}-{run}", f"prof-{tag}-{run}", at=REMINDER_AT))


def _plain_rate(svc: Service, message_keys: Sequence[str], chunk: int) -> Throughput:
    started = time.perf_counter()
    deliver_in_chunks(svc, message_keys, chunk)
    return Throughput(len(message_keys), time.perf_counter() - started)


def profile_deliver(smtp_port: int, n: int, workdir: Path, out: Path) -> DeliverProfile:
    tag = uuid.uuid4().hex[:8]
    with ExitStack() as stack:
        folder = workdir / "profile-redis"
        folder.mkdir(parents=True, exist_ok=True)
        server = PrivateRedis(folder=folder).start()
        stack.callback(server.stop)
        settings = settings_for(server.url, smtp_port)
        client = redis.Redis.from_url(server.url)
        stack.callback(client.close)
        svc = Service(settings, client)
        stack.callback(svc.close)
        stack.enter_context(worker_like_logging(workdir / "profile-notifier.log"))
        for event in registrations(n, f"prof{tag}", EARLY):
            svc.ingest(event)
        # A quarter is enough for the plain rate and keeps the profile phase short.
        plain = _plain_rate(svc, _batch(svc, tag, "plain")[: n // 4], settings.chunk_size)
        profiled_keys = _batch(svc, tag, "profiled")
        profiler = cProfile.Profile()
        started = time.perf_counter()
        profiler.enable()
        deliver_in_chunks(svc, profiled_keys, settings.chunk_size)
        profiler.disable()
        profiled = time.perf_counter() - started
    report = _write_report(profiler, out)
    stats = pstats.Stats(profiler)
    return DeliverProfile(
        len(profiled_keys), plain, profiled, top_entries(stats), by_package(stats), str(report)
    )
