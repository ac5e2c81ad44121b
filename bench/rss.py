"""Peak resident memory of a process group (a Celery worker and its pool children).

Read from /proc rather than psutil: no extra dependency, and a pool child that is replaced
(max-tasks-per-child) is still found, because it keeps the worker's process group.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class RssPeak:
    process_mb: float  # the largest RSS any single process of the group reached
    total_mb: float  # the largest sum of RSS over the group at one sampling instant
    pss_mb: float  # the same for PSS, which counts pages shared after fork() only once
    processes: int  # distinct processes seen in the group


def group_members(pgid: int) -> list[int]:
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            continue  # exited between listdir and open
        # Fields after the command name (which may contain spaces): state ppid pgrp ...
        fields = stat.rpartition(b")")[2].split()
        if int(fields[2]) == pgid:
            pids.append(int(entry))
    return pids


def _field_kib(path: str, name: bytes) -> int:
    try:
        with open(path, "rb") as f:
            for line in f:
                if line.startswith(name):
                    return int(line.split()[1])
    except OSError:
        pass  # the process exited meanwhile
    return 0


def rss_kib(pid: int) -> int:
    return _field_kib(f"/proc/{pid}/status", b"VmRSS:")


def pss_kib(pid: int) -> int:
    return _field_kib(f"/proc/{pid}/smaps_rollup", b"Pss:")


class RssSampler(threading.Thread):
    """Samples a process group's RSS every `interval` seconds until stopped."""

    def __init__(self, pgid: int, interval: float = 0.2) -> None:
        super().__init__(name="rss-sampler", daemon=True)
        self.pgid = pgid
        self.interval = interval
        self._done = threading.Event()  # not `_stop`: Thread has a method of that name
        self._active = threading.Event()
        self._active.set()
        self._process_kib = 0
        self._total_kib = 0
        self._pss_kib = 0
        self._seen: set[int] = set()

    def run(self) -> None:
        while not self._done.wait(self.interval):
            if self._active.is_set():
                self.sample()

    @contextmanager
    def paused(self) -> Iterator[None]:
        """No sampling meanwhile: the sampler scans /proc while holding the GIL of the
        benchmark's process, which slowed the ceiling's client, sending from that process, by
        a tenth or more. The worker is idle while the other paths run."""
        self._active.clear()
        try:
            yield
        finally:
            self._active.set()

    def sample(self) -> None:
        members = group_members(self.pgid)
        sizes = [rss_kib(pid) for pid in members]
        self._seen.update(members)
        if sizes:
            self._process_kib = max(self._process_kib, *sizes)
            self._total_kib = max(self._total_kib, sum(sizes))
            self._pss_kib = max(self._pss_kib, sum(pss_kib(pid) for pid in members))

    def stop(self) -> RssPeak:
        self._done.set()
        if self.is_alive():
            self.join()
        return self.peak()

    def peak(self) -> RssPeak:
        return RssPeak(
            process_mb=self._process_kib / 1024,
            total_mb=self._total_kib / 1024,
            pss_mb=self._pss_kib / 1024,
            processes=len(self._seen),
        )
