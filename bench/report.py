"""The results of a run: the table on the terminal and bench/results/latest.json."""

from __future__ import annotations

import json
import math
import statistics
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from bench.e2e import BatchPhases, Latency
from bench.hotspots import DeliverProfile
from bench.rss import RssPeak
from bench.stats import Throughput, median_rate

RESULTS = Path(__file__).resolve().parent / "results"


@dataclass
class Results:
    n: int
    quick: bool
    machine: dict[str, str]
    sink: str = ""
    sink_is_limit: bool = False
    sink_hint: str | None = None
    ceiling: list[Throughput] = field(default_factory=list)
    ceiling_width: int = 0
    lean: list[Throughput] = field(default_factory=list)  # notifier's own SMTP path
    baseline: list[Throughput] = field(default_factory=list)
    baseline_n: int = 0
    confirmations: list[Throughput] = field(default_factory=list)
    reminders: list[Throughput] = field(default_factory=list)
    reminder_phases: list[BatchPhases] = field(default_factory=list)
    latency: Latency | None = None
    rss: RssPeak | None = None
    profile: DeliverProfile | None = None
    errors: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def ratio(self, runs: list[Throughput]) -> float:
        below = median_rate(runs)
        return median_rate(self.reminders) / below if below else math.nan


@dataclass(frozen=True, slots=True)
class Target:
    what: str
    value: float
    goal: str
    passed: bool


def targets(r: Results) -> list[Target]:
    """The issue's targets; a missing measurement counts as not met."""
    reminder = median_rate(r.reminders)
    p95 = r.latency.p95_ms if r.latency else math.nan
    # Summing VmRSS over forked processes counts every page the pool children share with
    # the main process (copy-on-write) two or three times; PSS splits shared pages between
    # their sharers, so its sum is the memory the worker really holds.
    pss = r.rss.pss_mb if r.rss else math.nan
    to_ceiling, to_baseline = r.ratio(r.ceiling), r.ratio(r.baseline)
    return [
        Target("reminder batch, msgs/s", reminder, ">= 600", reminder >= 600),
        Target("reminder / ceiling", to_ceiling, ">= 0.5", to_ceiling >= 0.5),
        Target("reminder / baseline", to_baseline, ">= 10", to_baseline >= 10),
        Target("confirmation p95 at 50/s, ms", p95, "< 100", p95 < 100),
        Target("worker peak memory (PSS, process tree), MB", pss, "< 200", pss < 200),
    ]


def _runs(runs: list[Throughput]) -> str:
    if not runs:
        return "-"
    return f"{len(runs)}: " + ", ".join(f"{t.rate:,.0f}" for t in runs)


def _rate(runs: list[Throughput]) -> str:
    return f"{median_rate(runs):,.0f}" if runs else "error"


def _notes(r: Results) -> dict[str, str]:
    """Short notes for the table; HOW_MEASURED below it says the rest."""
    runs = len(r.confirmations)
    return {
        "ceiling": f"K={r.ceiling_width} kept aiosmtplib connections, pre-composed",
        "lean": f"the same messages through notifier.smtp.Mailer, K={r.ceiling_width} sessions",
        "baseline": f"{r.baseline_n:,} mails/run, composed and connected per mail",
        "confirmations": f"{r.n:,} registrations at once; {runs} run(s)"
        + ("" if runs >= 3 else ", so not a median"),
        "reminders": f"one batch to {r.n:,} attendees; new batch id per run",
    }


HOW_MEASURED = (
    "ceiling: N reminders composed by notifier.mail.compose before the clock starts, sent over K "
    "reused aiosmtplib connections (asyncio.gather; K = the fastest of 4..8 on a calibration "
    "sample); counted by the sink's 250 replies.",
    "notifier SMTP path: the ceiling's messages through notifier's own sender, which skips two "
    "costs of aiosmtplib's sendmail (address re-parsing, two regex passes over each message); "
    "shown so that the ratio to the ceiling can be read fairly.",
    "baseline: per mail Jinja2 render, a fresh icalendar Calendar with a VTIMEZONE from "
    "Timezone.from_tzid (timed copy of the conference), EmailMessage set_content/"
    "add_alternative/add_attachment, then smtplib connect, sendmail, quit.",
    "notifier: private redis-server and `celery -A worker worker -Q notifier -c 2` at default "
    "settings (-l INFO to a file); events published as fast as one producer can, timed until "
    "the outbox counter notifier:counts/sent has grown by N; the sink's own count is checked.",
    "Runs are interleaved: round i runs ceiling, notifier SMTP path, baseline and reminder "
    "batch i one after another, so ratios compare runs made within seconds of each other.",
)


def throughput_table(r: Results) -> Table:
    table = Table(title=f"notifier benchmark, N = {r.n:,}", title_justify="left")
    table.add_column("path")
    table.add_column("msgs/s (median of 3)", justify="right")
    table.add_column("runs: msgs/s each")
    table.add_column("notes", overflow="fold")
    notes = _notes(r)
    rows = (
        ("ceiling", r.ceiling, notes["ceiling"]),
        ("notifier SMTP path (not a target)", r.lean, notes["lean"]),
        ("pretix-style baseline", r.baseline, notes["baseline"]),
        ("notifier confirmations", r.confirmations, notes["confirmations"]),
        ("notifier reminder batch", r.reminders, notes["reminders"]),
    )
    for name, runs, note in rows:
        table.add_row(name, _rate(runs), _runs(runs), note)
    return table


def _verdict(t: Target) -> str:
    return "[green]PASS[/]" if t.passed else "[red]FAIL[/]"


def print_results(r: Results, console: Console) -> None:
    console.print(throughput_table(r))
    for line in HOW_MEASURED:
        console.print(f"  [dim]{line}[/]", highlight=False)
    for t in targets(r):
        console.print(f"  {_verdict(t)}  {t.what}: {t.value:,.2f} (target {t.goal})")
    console.print(
        f"  info  reminder / notifier SMTP path: {r.ratio(r.lean):,.2f} (the share of its own "
        "sender's speed the whole pipeline keeps: Celery, Redis, composing, records)"
    )
    _print_details(r, console)
    if r.profile:
        _print_profile(r.profile, console)
    for error in r.errors:
        console.print(f"[red]error:[/] {error}", highlight=False)


def _print_details(r: Results, console: Console) -> None:
    if r.reminder_phases:
        first = statistics.median(p.until_first_s for p in r.reminder_phases)
        rate = statistics.median(p.sending_rate for p in r.reminder_phases)
        console.print(
            f"Reminder batches (medians): {first:.2f} s from publishing to the first accepted "
            f"reminder (ingest, planning, first chunks), then {rate:,.0f} msgs/s until the last"
        )
    if r.latency:
        lat = r.latency
        console.print(
            f"Confirmation latency, publish -> SMTP accept, {lat.samples} registrations at "
            f"{lat.rate:.1f}/s: p50 {lat.p50_ms:.1f} ms, p95 {lat.p95_ms:.1f} ms, "
            f"max {lat.max_ms:.1f} ms (accept time: {lat.source})"
        )
    if r.rss:
        console.print(
            f"Worker peak RSS: {r.rss.total_mb:.1f} MB summed over its process tree "
            f"({r.rss.processes} processes: main + pool children), largest single process "
            f"{r.rss.process_mb:.1f} MB (VmRSS from /proc every 0.2 s); PSS summed "
            f"{r.rss.pss_mb:.1f} MB (pages the pool children share with the main process "
            "counted once)"
        )
    console.print(f"Sink: {r.sink}", highlight=False)
    if r.sink_is_limit:
        console.print(
            "[yellow]The sink is aiosmtpd (Python): it, not the client, is likely the limit.[/]"
        )
    if r.sink_hint:
        console.print(f"[yellow]{r.sink_hint}[/]")
    mode = "quick" if r.quick else "full"
    console.print(f"N = {r.n:,} ({mode}); took {r.seconds:.0f} s", highlight=False)
    console.print("Machine: " + ", ".join(f"{k} {v}" for k, v in r.machine.items()))


def _print_profile(p: DeliverProfile, console: Console) -> None:
    table = Table(
        title=f"Service.deliver under cProfile, {p.messages:,} reminders in one process "
        f"({p.messages / p.profiled_seconds:,.0f} msgs/s profiled, {p.plain.rate:,.0f} msgs/s "
        f"without the profiler); top {len(p.top)} by cumulative time",
        title_justify="left",
    )
    for name in ("ncalls", "tottime s", "cumtime s"):
        table.add_column(name, justify="right")
    table.add_column("function")
    for h in p.top:
        table.add_row(h.ncalls, f"{h.tottime:.3f}", f"{h.cumtime:.3f}", h.where)
    console.print(table)
    total = sum(seconds for _, seconds in p.packages)
    console.print(
        f"Self time by library, top 10 of {total:.1f} s (a C function counts for its caller's"
        " library; wall time is longer by the profiler's own overhead):"
    )
    for name, seconds in p.packages[:10]:
        console.print(f"  {name:<20} {seconds:6.2f} s {seconds / total:5.0%}", highlight=False)
    console.print(f"Full profile: {p.report} (and deliver.prof for pstats/snakeviz)")


def to_json(r: Results) -> dict[str, Any]:
    data = asdict(r)
    data["msgs_per_s"] = {
        name: {
            "median": median_rate(getattr(r, name)),
            "runs": [t.rate for t in getattr(r, name)],
        }
        for name in ("ceiling", "lean", "baseline", "confirmations", "reminders")
    }
    data["ratios"] = {
        "reminder/ceiling": r.ratio(r.ceiling),
        "reminder/baseline": r.ratio(r.baseline),
        "reminder/notifier SMTP path": r.ratio(r.lean),
    }
    data["targets"] = [asdict(t) for t in targets(r)]
    return data


def write_json(r: Results, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(_finite(to_json(r)), indent=2, ensure_ascii=False, default=str)
    path.write_text(text + "\n", encoding="utf-8")


def _finite(value: Any) -> Any:
    """NaN (a figure that could not be measured) is not JSON: it becomes null."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value
