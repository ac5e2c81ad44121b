"""`python -m bench.cpu [N] [RUNS]`: CPU time per message of each process, end to end.

Starts the benchmark's stack (sink, private Redis, a worker at default settings), sends N
confirmations, then RUNS reminder batches to those N attendees. For each phase it prints the
throughput and the CPU time per message (user + system, read from /proc) of the worker's
processes, Redis and the sink, with the system share and the machine's steal and idle time.
On a CPU-bound run the per-message figures say which process to make cheaper; they also
move less with the machine's speed than throughput does.
"""

from __future__ import annotations

import os
import sys
import tempfile
from collections.abc import Callable
from functools import partial
from pathlib import Path

from bench.e2e import Notifier
from bench.sinks import start_sink

TICK = os.sysconf("SC_CLK_TCK")
PROCESSES = {"worker": "celery", "redis": "redis-server", "sink": "smtp-sink"}


def _cpu(pid: str) -> tuple[float, float]:
    with open(f"/proc/{pid}/stat", encoding="ascii") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]) / TICK, int(fields[12]) / TICK


def _cmdline(pid: str) -> str:
    with open(f"/proc/{pid}/cmdline", "rb") as f:
        return f.read().replace(b"\0", b" ").decode(errors="replace")


def snapshot() -> dict[str, tuple[float, float]]:
    """(user + system, system) CPU seconds so far, summed per kind of process."""
    totals: dict[str, tuple[float, float]] = {}
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            cmd = _cmdline(pid)
            label = next((k for k, pattern in PROCESSES.items() if pattern in cmd), None)
            if label is None:
                continue
            user, system = _cpu(pid)
        except OSError:  # gone meanwhile
            continue
        both, sys_only = totals.get(label, (0.0, 0.0))
        totals[label] = (both + user + system, sys_only + system)
    return totals


def machine() -> list[int]:
    with open("/proc/stat", encoding="ascii") as f:
        return [int(x) for x in f.readline().split()[1:]]


def measured(what: str, n: int, work: Callable[[], float]) -> None:
    """Run work (which returns msgs/s) and print CPU ms per message by process."""
    before, stat_before = snapshot(), machine()
    rate = work()
    after, stat_after = snapshot(), machine()
    ticks = [b - a for a, b in zip(stat_before, stat_after, strict=True)]
    parts = []
    for label in PROCESSES:
        both = after.get(label, (0.0, 0.0))[0] - before.get(label, (0.0, 0.0))[0]
        system = after.get(label, (0.0, 0.0))[1] - before.get(label, (0.0, 0.0))[1]
        parts.append(f"{label} {1000 * both / n:.3f} ms (sys {1000 * system / n:.3f})")
    share = 100 / max(1, sum(ticks))
    print(
        f"{what}: {rate:,.0f} msgs/s; CPU per message: {', '.join(parts)}; "
        f"machine idle {ticks[3] * share:.0f} %, steal {ticks[7] * share:.0f} %",
        flush=True,
    )


def _batch_rate(stack: Notifier, n: int, run: int) -> float:
    return stack.reminders(n, run)[0].rate


def main(argv: list[str]) -> int:
    n = int(argv[0]) if argv else 4_000
    runs = int(argv[1]) if len(argv) > 1 else 3
    with tempfile.TemporaryDirectory(prefix="bench-cpu-") as tmp:
        workdir = Path(tmp)
        sink, hint = start_sink("auto", workdir)
        if hint:
            print(hint)
        try:
            with Notifier(sink, workdir) as stack:
                measured("confirmations", n, lambda: stack.confirmations(n, 0).rate)
                for run in range(runs):
                    batch = partial(_batch_rate, stack, n, run)
                    measured(f"reminder batch {run + 1}", n, batch)
        finally:
            sink.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
