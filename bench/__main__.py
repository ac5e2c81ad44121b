"""`python -m bench [--quick]`: the whole benchmark in one process tree, against one sink.

Phases, each against the same sink: ceiling, pretix-style baseline, notifier end to end
(confirmations, reminder batches, latency at a steady rate, worker RSS), and, when notifier
misses a target, a cProfile of its deliver path. Everything started is stopped on exit,
also on Ctrl-C, SIGTERM or an error.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import sys
import time
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path
from typing import Literal, cast

from rich.console import Console

from bench import baseline, ceiling
from bench.e2e import Notifier
from bench.hotspots import profile_deliver
from bench.messages import composed_reminders
from bench.procs import BenchError, raise_on_sigterm, wait_until
from bench.report import RESULTS, Results, print_results, targets, write_json
from bench.sinks import SinkChoice, SinkServer, start_sink
from bench.stats import Throughput

WIDTHS = (4, 5, 6, 7, 8)  # connection counts the ceiling tries
# Piped output (make | tee) is not a terminal: rich would then assume 80 columns.
console = Console(width=None if sys.stdout.isatty() else 130)


@dataclass(frozen=True, slots=True)
class Config:
    n: int
    quick: bool
    runs: int
    baseline_n: int
    calibration_n: int
    confirmation_runs: int
    latency_rate: float
    latency_seconds: float
    profile_messages: int
    profile: Literal["auto", "always", "never"]
    sink: SinkChoice
    output: Path


def parse(argv: list[str] | None) -> Config:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    p.add_argument("--quick", action="store_true", help="N = 1,000 instead of 10,000")
    p.add_argument("--n", type=int, help="messages per throughput run (overrides --quick)")
    p.add_argument("--confirmation-runs", type=int, help="default: 3 with --quick, else 1")
    p.add_argument(
        "--profile",
        choices=("auto", "always", "never"),
        default="auto",
        help="cProfile the deliver path (auto: when notifier misses a target)",
    )
    p.add_argument("--sink", choices=("auto", "smtp-sink", "aiosmtpd"), default="auto")
    p.add_argument("--output", type=Path, default=RESULTS / "latest.json")
    a = p.parse_args(argv)
    n = a.n or (1_000 if a.quick else 10_000)
    return Config(
        n=n,
        quick=a.quick,
        runs=3,
        # The baseline manages ~50-100 msgs/s: a smaller sample keeps a run to seconds.
        baseline_n=min(n, 500),
        calibration_n=min(n, 1_000),
        # Three confirmation runs of N where they are cheap; one run of 10,000 otherwise.
        confirmation_runs=a.confirmation_runs or (3 if a.quick else 1),
        latency_rate=50.0,
        latency_seconds=10.0,
        profile_messages=2_000,
        profile=a.profile,
        sink=cast(SinkChoice, a.sink),
        output=a.output,
    )


def load_average() -> str:
    """1-minute load: other work on the machine (a test suite, a build) lowers every figure."""
    return Path("/proc/loadavg").read_text().split()[0]


def machine_info() -> dict[str, str]:
    model = ""
    with open("/proc/cpuinfo", encoding="utf-8") as f:
        model = next((line.split(":", 1)[1].strip() for line in f if "model name" in line), "")
    return {
        "nproc": str(len(os.sched_getaffinity(0))),
        "cpu": model or platform.machine(),
        "python": platform.python_version(),
        "kernel": platform.release(),
        "load average at start": load_average(),
        "celery": version("celery"),
        "aiosmtplib": version("aiosmtplib"),
    }


def report_run(what: str, t: Throughput) -> None:
    console.print(f"  {what}: {t.messages:,} in {t.seconds:.2f} s = {t.rate:,.0f} msgs/s")


def check_sink(sink: SinkServer, before: int, expected: int, what: str) -> None:
    """The sink must have counted what the client counted (its counter may lag a little)."""
    wait_until(lambda: sink.accepted() - before >= expected, 5, f"the sink to count {what}")


def measure_ceiling(cfg: Config, sink: SinkServer, r: Results) -> None:
    console.print(f"  composing {cfg.n:,} reminders with notifier.compose (not timed) ...")
    messages = composed_reminders(cfg.n, "ceiling")
    r.ceiling_width = ceiling.best_width(messages[: cfg.calibration_n], sink.port, WIDTHS)
    console.print(f"  fastest connection count of {WIDTHS[0]}..{WIDTHS[-1]}: {r.ceiling_width}")
    for run in range(cfg.runs):
        before = sink.accepted()
        r.ceiling.append(ceiling.send(messages, sink.port, r.ceiling_width))
        check_sink(sink, before, r.ceiling[-1].messages, "the ceiling's messages")
        report_run(f"run {run + 1}", r.ceiling[-1])


def measure_baseline(cfg: Config, sink: SinkServer, r: Results) -> None:
    r.baseline_n = cfg.baseline_n
    for run in range(cfg.runs):
        before = sink.accepted()
        r.baseline.append(baseline.run(cfg.baseline_n, sink.port, f"baseline{run}"))
        check_sink(sink, before, r.baseline[-1].messages, "the baseline's messages")
        report_run(f"run {run + 1}", r.baseline[-1])


def measure_notifier(cfg: Config, sink: SinkServer, workdir: Path, r: Results) -> None:
    with Notifier(sink, workdir) as stack:
        console.print(f"  worker ready (pid {stack.worker.pid}, log {stack.log})")
        try:
            for run in range(cfg.confirmation_runs):
                r.confirmations.append(stack.confirmations(cfg.n, run))
                report_run(f"confirmations run {run + 1}", r.confirmations[-1])
            for run in range(cfg.runs):
                throughput, phases = stack.reminders(cfg.n, run)
                r.reminders.append(throughput)
                r.reminder_phases.append(phases)
                report_run(f"reminder batch {run + 1}", throughput)
            r.latency = stack.latency(cfg.latency_rate, cfg.latency_seconds)
            console.print(
                f"  latency: p50 {r.latency.p50_ms:.1f} ms, p95 {r.latency.p95_ms:.1f} ms"
            )
        finally:
            r.rss = stack.peak_rss()


def measure_profile(cfg: Config, sink: SinkServer, workdir: Path, r: Results) -> None:
    r.profile = profile_deliver(sink.port, cfg.profile_messages, workdir, cfg.output.parent)


def phase(name: str, r: Results, work: Callable[[], None]) -> None:
    """Run one phase; a phase that cannot finish is reported and the others still run."""
    console.rule(name)
    started = time.perf_counter()
    try:
        work()
    except BenchError as exc:
        r.errors.append(f"{name}: {exc}")
        console.print(f"[red]{name} failed:[/] {exc}", highlight=False)
    except Exception as exc:  # an SMTP or Redis error: report it, measure the rest
        r.errors.append(f"{name}: {type(exc).__name__}: {exc}")
        console.print_exception(max_frames=4)
    console.print(f"  ({time.perf_counter() - started:.1f} s)")


def wants_profile(cfg: Config, r: Results) -> bool:
    return cfg.profile == "always" or (
        cfg.profile == "auto" and not all(t.passed for t in targets(r))
    )


def run(cfg: Config) -> Results:
    r = Results(n=cfg.n, quick=cfg.quick, machine=machine_info())
    workdir = cfg.output.parent / "run"  # logs stay for a look after the run (git-ignored)
    shutil.rmtree(workdir, ignore_errors=True)
    workdir.mkdir(parents=True)
    started = time.perf_counter()
    with ExitStack() as stack:
        sink, r.sink_hint = start_sink(cfg.sink, workdir)
        stack.callback(sink.stop)
        r.sink, r.sink_is_limit = f"{sink.name} on 127.0.0.1:{sink.port}", sink.is_limit
        if r.sink_hint:
            console.print(f"[yellow]{r.sink_hint}[/]")
        console.print(f"Sink: {r.sink}", highlight=False)
        phase("ceiling", r, lambda: measure_ceiling(cfg, sink, r))
        phase("pretix-style baseline", r, lambda: measure_baseline(cfg, sink, r))
        phase("notifier end to end", r, lambda: measure_notifier(cfg, sink, workdir, r))
        if wants_profile(cfg, r):
            phase("profile of the deliver path", r, lambda: measure_profile(cfg, sink, workdir, r))
    r.seconds = time.perf_counter() - started
    return r


def main(argv: list[str] | None = None) -> int:
    cfg = parse(argv)
    raise_on_sigterm()
    try:
        results = run(cfg)
    except KeyboardInterrupt:
        console.print("\n[yellow]Interrupted; everything the benchmark started is stopped.[/]")
        return 130
    results.machine["load average at end"] = load_average()
    console.rule("results")
    print_results(results, console)
    write_json(results, cfg.output)
    console.print(f"Written to {cfg.output}")
    return 1 if results.errors else 0


if __name__ == "__main__":
    raise SystemExit(main())
