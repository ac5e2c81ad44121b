"""`python -m bench [--quick]`: the whole benchmark in one process tree, against one sink.

Set-up: the ceiling's messages are composed and its connection count calibrated; notifier
(private Redis, a Celery worker) starts and sends N confirmations. Then three rounds, each
one run of every path in a row: ceiling, notifier's SMTP path, pretix-style baseline,
notifier reminder batch. Interleaved, the runs a ratio compares happen within seconds of
each other: this machine's speed drifts by up to a third over minutes (other tenants), and
phases minutes apart measured that drift as much as the code. Then the latency at a steady
rate and the worker's memory; when notifier misses a target, a cProfile of its deliver path.
Everything started is stopped on exit, also on Ctrl-C, SIGTERM or an error.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import sys
import time
from collections.abc import Callable
from contextlib import ExitStack, nullcontext
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
from notifier.mail.compose import Composed

Measure = Callable[[], Throughput]

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


def prepare_ceiling(cfg: Config, sink: SinkServer, r: Results) -> list[Composed]:
    console.print(f"  composing {cfg.n:,} reminders with notifier.mail.compose (not timed) ...")
    messages = composed_reminders(cfg.n, "ceiling")
    r.ceiling_width = ceiling.best_width(messages[: cfg.calibration_n], sink.port, WIDTHS)
    console.print(f"  fastest connection count of {WIDTHS[0]}..{WIDTHS[-1]}: {r.ceiling_width}")
    return messages


def counted(sink: SinkServer, runs: list[Throughput], what: str, measure: Measure) -> None:
    """One run of a path, checked against the sink's own count."""
    before = sink.accepted()
    runs.append(measure())
    check_sink(sink, before, runs[-1].messages, f"the {what}'s messages")
    report_run(what, runs[-1])


def confirmations(stack: Notifier, cfg: Config, r: Results) -> None:
    console.print(f"  worker ready (pid {stack.worker.pid}, log {stack.log})")
    for run in range(cfg.confirmation_runs):
        r.confirmations.append(stack.confirmations(cfg.n, run))
        report_run(f"notifier confirmations, run {run + 1}", r.confirmations[-1])


def reminder_batch(stack: Notifier, cfg: Config, r: Results, run: int) -> None:
    throughput, phases = stack.reminders(cfg.n, run)
    r.reminders.append(throughput)
    r.reminder_phases.append(phases)
    report_run("notifier reminder batch", throughput)


def one_round(
    cfg: Config,
    sink: SinkServer,
    r: Results,
    messages: list[Composed],
    stack: Notifier | None,
    run: int,
) -> None:
    k, port = r.ceiling_width, sink.port

    def path(runs: list[Throughput], what: str, measure: Measure) -> None:
        attempt(what, r, lambda: counted(sink, runs, what, measure))

    with stack.rss.paused() if stack is not None else nullcontext():
        path(r.ceiling, "ceiling", lambda: ceiling.send(messages, port, k))
        path(r.lean, "notifier SMTP path", lambda: ceiling.send_lean(messages, port, k))
        tag = f"baseline{run}"
        path(r.baseline, "pretix-style baseline", lambda: baseline.run(cfg.baseline_n, port, tag))
    if stack is not None:
        attempt("reminder batch", r, lambda: reminder_batch(stack, cfg, r, run))


def measure(cfg: Config, sink: SinkServer, workdir: Path, r: Results) -> None:
    r.baseline_n = cfg.baseline_n
    with ExitStack() as stack:
        console.rule("set-up: the ceiling's messages and connection count; confirmations")
        messages = prepare_ceiling(cfg, sink, r)
        notifier: Notifier | None = None

        def start() -> None:
            nonlocal notifier
            started = stack.enter_context(Notifier(sink, workdir))
            confirmations(started, cfg, r)
            notifier = started  # reminders go to the first confirmation run's attendees

        attempt("notifier confirmations", r, start)
        for run in range(cfg.runs):
            console.rule(f"round {run + 1} of {cfg.runs}")
            one_round(cfg, sink, r, messages, notifier, run)
        if notifier is not None:
            latency(cfg, r, notifier)


def latency(cfg: Config, r: Results, stack: Notifier) -> None:
    console.rule("confirmation latency at a steady rate")
    try:
        attempt("latency", r, lambda: _latency(cfg, r, stack))
    finally:
        r.rss = stack.peak_rss()


def _latency(cfg: Config, r: Results, stack: Notifier) -> None:
    r.latency = stack.latency(cfg.latency_rate, cfg.latency_seconds)
    console.print(f"  latency: p50 {r.latency.p50_ms:.1f} ms, p95 {r.latency.p95_ms:.1f} ms")


def measure_profile(cfg: Config, sink: SinkServer, workdir: Path, r: Results) -> None:
    r.profile = profile_deliver(sink.port, cfg.profile_messages, workdir, cfg.output.parent)


def attempt(name: str, r: Results, work: Callable[[], None]) -> None:
    """Run one measurement; one that cannot finish is reported and the others still run."""
    try:
        work()
    except BenchError as exc:
        r.errors.append(f"{name}: {exc}")
        console.print(f"[red]{name} failed:[/] {exc}", highlight=False)
    except Exception as exc:  # an SMTP or Redis error: report it, measure the rest
        r.errors.append(f"{name}: {type(exc).__name__}: {exc}")
        console.print_exception(max_frames=4)


def phase(name: str, r: Results, work: Callable[[], None]) -> None:
    console.rule(name)
    started = time.perf_counter()
    attempt(name, r, work)
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
        attempt("measurements", r, lambda: measure(cfg, sink, workdir, r))
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
