"""`python -m bench.http`: the HTTP API's two measurements (issue 15), figures and same-run
ratios.

(a) HTTP ingest, workers stopped: a private Redis and a real `notifier serve`; an ingest token
    made with `notifier tokens create` (the token is the last line of its stdout). 16
    concurrent clients, each on one kept-alive connection, POST single events to /v1/events:
    events/s accepted (202) and the p95 of the request latency. Then /v1/events/batch with
    1,000 events a request ({"events": [...]}): events/s. Targets: >= 1,000 events/s with
    p95 < 50 ms; the batch endpoint >= 10,000 events/s.
(b) The opening rush, workers running: 1,000 `registration.created` published within one
    second (Celery, one kept producer connection, as bench.e2e's latency run), timed from
    each publish to the sink's acceptance of its confirmation. Targets: all within 6 s, p95
    < 4 s.

The clients speak HTTP/1.1 over asyncio streams directly: a general client library costs more
CPU a request than the server under test, and on 2 cores the client would then be what is
measured. The client's own CPU share is printed so that a reader can tell. Written against
the contract (`POST /v1/events`, `POST /v1/events/batch`, Bearer tokens, `notifier serve`,
`notifier tokens create`): it needs no module of notifier.api.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import time
from collections.abc import Sequence
from contextlib import ExitStack
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from bench.e2e import Notifier, registrations, worker_env
from bench.procs import BenchError, port_open, raise_on_sigterm, stop_group, wait_until
from bench.report import RESULTS
from bench.sinks import SinkChoice, start_sink
from bench.stats import percentile
from devtools.localredis import PrivateRedis
from devtools.sink import free_port

NOTIFIER = Path(sys.executable).with_name("notifier")
LATE = "2024-04-16T10:00:00+02:00"
TARGET_SINGLE_RATE = 1_000.0  # events/s
TARGET_SINGLE_P95_MS = 50.0
TARGET_BATCH_RATE = 10_000.0  # events/s
TARGET_RUSH_ALL_S = 6.0
TARGET_RUSH_P95_S = 4.0


@dataclass(frozen=True, slots=True)
class Config:
    clients: int
    single_events: int
    warmup: int
    batch_size: int
    batch_requests: int
    batch_clients: int
    rush: int
    rush_seconds: float
    sink: SinkChoice
    output: Path
    skip_ingest: bool
    skip_rush: bool
    serve_workers: int = 1


@dataclass(slots=True)
class Results:
    single_rate: float = 0.0
    single_accepted: int = 0
    single_other: dict[str, int] = field(default_factory=dict)
    single_p50_ms: float = 0.0
    single_p95_ms: float = 0.0
    single_client_cpu: float = 0.0  # the client's CPU seconds per wall second
    batch_rate: float = 0.0
    batch_accepted: int = 0
    batch_p95_ms: float = 0.0
    rush_published_s: float = 0.0
    rush_p50_s: float = 0.0
    rush_p95_s: float = 0.0
    rush_max_s: float = 0.0
    rush_source: str = ""
    sink: str = ""
    errors: list[str] = field(default_factory=list)


# -- a minimal HTTP/1.1 client: one kept-alive connection, one request at a time ----------------


class Connection:
    def __init__(self, port: int, token: str) -> None:
        self.port = port
        self.head = f"Host: 127.0.0.1:{port}\r\nAuthorization: Bearer {token}\r\n"
        self.head += "Content-Type: application/json\r\n"
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def post(self, path: str, body: bytes) -> tuple[int, bytes]:
        if self.writer is None or self.reader is None:
            self.reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port)
        request = f"POST {path} HTTP/1.1\r\n{self.head}Content-Length: {len(body)}\r\n\r\n"
        self.writer.write(request.encode() + body)
        await self.writer.drain()
        return await _response(self.reader)

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            await self.writer.wait_closed()


async def _response(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    status = int((await reader.readline()).split()[1])
    length = 0
    while (line := await reader.readline()) not in (b"\r\n", b""):
        name, _, value = line.partition(b":")
        name = name.strip().lower()
        if name == b"content-length":
            length = int(value)
        elif name == b"transfer-encoding":
            raise BenchError("the server answered chunked; this client reads Content-Length only")
    return status, await reader.readexactly(length)


# -- (a) HTTP ingest ------------------------------------------------------------------------------


class Server:
    """A private Redis and `notifier serve` on a free port; no worker (events stay queued)."""

    def __init__(self, workdir: Path, stack: ExitStack, workers: int = 1) -> None:
        folder = workdir / "redis-http"
        folder.mkdir(parents=True, exist_ok=True)
        redis_server = PrivateRedis(folder=folder).start()
        stack.callback(redis_server.stop)
        self.env = worker_env(redis_server.url, free_port())
        self.port = free_port()
        self.token = self._token()
        with (workdir / "serve.log").open("wb") as log:
            self.proc = subprocess.Popen(
                [
                    *(str(NOTIFIER), "serve", "--host", "127.0.0.1", "--port", str(self.port)),
                    *("--workers", str(workers)),
                ],
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        stack.callback(stop_group, self.proc, 30.0)
        wait_until(self._listening, 30, "`notifier serve` to listen", interval=0.05)

    def _token(self) -> str:
        made = subprocess.run(
            [str(NOTIFIER), "tokens", "create", "bench", "--scope", "ingest"],
            env=self.env,
            capture_output=True,
            text=True,
            check=False,
        )
        if made.returncode != 0 or not made.stdout.strip():
            raise BenchError(f"`notifier tokens create` failed: {made.stderr.strip()[-500:]}")
        return made.stdout.strip().splitlines()[-1]

    def _listening(self) -> bool:
        if self.proc.poll() is not None:
            raise BenchError(f"`notifier serve` exited with {self.proc.returncode}")
        return port_open(self.port)


def _bodies(n: int, tag: str) -> list[bytes]:
    return [json.dumps(e).encode() for e in registrations(n, tag, LATE)]


async def _clients(
    port: int, token: str, path: str, bodies: Sequence[bytes], clients: int
) -> tuple[list[tuple[int, float, bytes]], float]:
    """Each body POSTed once, by `clients` connections taking the next body in turn; each
    request's (status, seconds, response), and the wall time of all."""
    todo = iter(bodies)
    done: list[tuple[int, float, bytes]] = []

    async def client() -> None:
        conn = Connection(port, token)
        try:
            for body in todo:  # one shared iterator: no client idles while work is left
                started = time.perf_counter()
                status, reply = await conn.post(path, body)
                done.append((status, time.perf_counter() - started, reply))
        finally:
            await conn.close()

    started = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(clients)))
    return done, time.perf_counter() - started


def single_events(cfg: Config, server: Server, r: Results) -> None:
    warm = _bodies(cfg.warmup, "warm")
    asyncio.run(_clients(server.port, server.token, "/v1/events", warm, cfg.clients))
    bodies = _bodies(cfg.single_events, "single")
    cpu = time.process_time()
    done, wall = asyncio.run(_clients(server.port, server.token, "/v1/events", bodies, cfg.clients))
    r.single_client_cpu = (time.process_time() - cpu) / wall
    accepted = [s for s, _, _ in done if s == 202]
    r.single_accepted = len(accepted)
    for status, _, _ in done:
        if status != 202:
            r.single_other[str(status)] = r.single_other.get(str(status), 0) + 1
    r.single_rate = len(accepted) / wall
    ms = [1000 * t for _, t, _ in done]
    r.single_p50_ms, r.single_p95_ms = percentile(ms, 50), percentile(ms, 95)


def _accepted_items(reply: bytes) -> int:
    """Items of a batch answer whose status is "accepted" (the bodies are fresh events, so a
    "duplicate" would be a fault). The answer is a list of results, or an object holding one
    under "results" or "items"."""
    found: Any = json.loads(reply)
    items: list[Any] = (
        found.get("results") or found.get("items") or [] if isinstance(found, dict) else found
    )
    return sum(1 for i in items if isinstance(i, dict) and i.get("status") == "accepted")


def batches(cfg: Config, server: Server, r: Results) -> None:
    events = registrations(cfg.batch_size * cfg.batch_requests, "batch", LATE)
    bodies = [
        json.dumps({"events": events[i : i + cfg.batch_size]}).encode()
        for i in range(0, len(events), cfg.batch_size)
    ]
    done, wall = asyncio.run(
        _clients(server.port, server.token, "/v1/events/batch", bodies, cfg.batch_clients)
    )
    bad = [s for s, _, _ in done if s >= 300]
    if bad:
        r.errors.append(f"batch endpoint: {len(bad)} request(s) answered {sorted(set(bad))}")
    r.batch_accepted = sum(_accepted_items(reply) for s, _, reply in done if s < 300)
    r.batch_rate = r.batch_accepted / wall
    r.batch_p95_ms = percentile([1000 * t for _, t, _ in done], 95)


# -- (b) the opening rush --------------------------------------------------------------------------


def rush(cfg: Config, notifier: Notifier, r: Results) -> None:
    events = registrations(cfg.rush, f"{notifier.tag}rush", LATE)
    target = notifier.sent() + len(events)
    rate = len(events) / cfg.rush_seconds
    published = notifier._paced(events, rate)  # event id -> publish time
    r.rush_published_s = max(published.values()) - min(published.values())
    notifier.wait_sent(target, "the opening rush")
    accepted, r.rush_source = notifier._accept_times(events)
    seconds = [accepted[e] - t for e, t in published.items() if e in accepted]
    if len(seconds) != len(events):
        raise BenchError(f"rush: accept times for {len(seconds)} of {len(events)} mails")
    r.rush_p50_s, r.rush_p95_s = percentile(seconds, 50), percentile(seconds, 95)
    r.rush_max_s = max(seconds)


# -- the run -------------------------------------------------------------------------------------


def parse(argv: list[str] | None) -> Config:
    p = argparse.ArgumentParser(prog="python -m bench.http", description=__doc__)
    p.add_argument("--clients", type=int, default=16, help="concurrent single-event clients")
    p.add_argument("--events", type=int, default=10_000, help="single events POSTed (timed)")
    p.add_argument("--batch-requests", type=int, default=20, help="batch requests of 1,000")
    p.add_argument("--rush", type=int, default=1_000, help="registrations in the rush")
    p.add_argument("--sink", choices=("auto", "smtp-sink", "aiosmtpd"), default="auto")
    p.add_argument(
        "--serve-workers", type=int, default=1, help="`notifier serve --workers N` processes"
    )
    p.add_argument("--output", type=Path, default=RESULTS / "http.json")
    p.add_argument("--skip-ingest", action="store_true", help="only the opening rush")
    p.add_argument("--skip-rush", action="store_true", help="only HTTP ingest")
    a = p.parse_args(argv)
    return Config(
        clients=a.clients,
        single_events=a.events,
        warmup=min(500, a.events),
        batch_size=1_000,
        batch_requests=a.batch_requests,
        batch_clients=2,  # two in flight: one parses while the other's events are queued
        rush=a.rush,
        rush_seconds=1.0,
        sink=a.sink,
        output=a.output,
        skip_ingest=a.skip_ingest,
        skip_rush=a.skip_rush,
        serve_workers=a.serve_workers,
    )


def _phase(r: Results, what: str, run: Any) -> None:
    """Run one phase; a failure is recorded and the other phase still runs."""
    try:
        run()
    except (BenchError, OSError, ValueError, KeyError) as exc:
        r.errors.append(f"{what}: {type(exc).__name__}: {exc}")


def measure(cfg: Config) -> Results:
    r = Results()
    workdir = RESULTS / "run"
    workdir.mkdir(parents=True, exist_ok=True)
    if not cfg.skip_ingest:
        with ExitStack() as stack:

            def ingest() -> None:
                server = Server(workdir, stack, cfg.serve_workers)
                single_events(cfg, server, r)
                batches(cfg, server, r)

            _phase(r, "HTTP ingest", ingest)
    if not cfg.skip_rush:
        with ExitStack() as stack:

            def opening_rush() -> None:
                sink, hint = start_sink(cfg.sink, workdir)
                stack.callback(sink.stop)
                r.sink = sink.name + (" (the sink may be the limit)" if sink.is_limit else "")
                if hint:
                    print(hint)
                notifier = stack.enter_context(Notifier(sink, workdir))
                rush(cfg, notifier, r)

            _phase(r, "opening rush", opening_rush)
    return r


def _verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def report(cfg: Config, r: Results) -> None:
    if not cfg.skip_ingest and r.single_accepted:
        print(
            f"HTTP ingest, single events ({cfg.clients} clients, {cfg.single_events:,} events, "
            f"workers stopped): {r.single_rate:,.0f} events/s accepted, p50 "
            f"{r.single_p50_ms:.1f} ms, p95 {r.single_p95_ms:.1f} ms"
            + (f"; not accepted: {r.single_other}" if r.single_other else "")
        )
        print(f"  client CPU: {r.single_client_cpu:.2f} s per second (1.0 = a whole core)")
        print(
            f"HTTP ingest, batch endpoint ({cfg.batch_requests} x {cfg.batch_size:,}): "
            f"{r.batch_rate:,.0f} events/s accepted, p95 {r.batch_p95_ms:.0f} ms a request"
        )
        print(f"  ratio batch / single events: {r.batch_rate / r.single_rate:.1f}")
        print(
            f"  target single >= {TARGET_SINGLE_RATE:,.0f} events/s: "
            f"{_verdict(r.single_rate >= TARGET_SINGLE_RATE)} "
            f"(ratio {r.single_rate / TARGET_SINGLE_RATE:.2f})"
        )
        print(
            f"  target single p95 < {TARGET_SINGLE_P95_MS:.0f} ms: "
            f"{_verdict(r.single_p95_ms < TARGET_SINGLE_P95_MS)}"
        )
        print(
            f"  target batch >= {TARGET_BATCH_RATE:,.0f} events/s: "
            f"{_verdict(r.batch_rate >= TARGET_BATCH_RATE)} "
            f"(ratio {r.batch_rate / TARGET_BATCH_RATE:.2f})"
        )
    if not cfg.skip_rush and r.rush_max_s:
        print(
            f"opening rush ({cfg.rush:,} registrations published in {r.rush_published_s:.2f} s, "
            f"workers running): publish -> accept p50 {r.rush_p50_s:.2f} s, p95 "
            f"{r.rush_p95_s:.2f} s, max {r.rush_max_s:.2f} s ({r.rush_source}; sink: {r.sink})"
        )
        if r.rush_published_s > cfg.rush_seconds:
            print(
                f"  note: publishing took {r.rush_published_s:.2f} s, not {cfg.rush_seconds:.0f} s:"
                " one Celery producer is slower than the rush asks"
            )
        print(
            f"  target all within {TARGET_RUSH_ALL_S:.0f} s: "
            f"{_verdict(r.rush_max_s <= TARGET_RUSH_ALL_S)} "
            f"(max / target {r.rush_max_s / TARGET_RUSH_ALL_S:.2f})"
        )
        print(
            f"  target p95 < {TARGET_RUSH_P95_S:.0f} s: "
            f"{_verdict(r.rush_p95_s < TARGET_RUSH_P95_S)} "
            f"(p95 / target {r.rush_p95_s / TARGET_RUSH_P95_S:.2f})"
        )
    for error in r.errors:
        print(f"ERROR {error}")


def main(argv: list[str] | None = None) -> int:
    cfg = parse(argv)
    raise_on_sigterm()
    started = time.monotonic()
    r = measure(cfg)
    report(cfg, r)
    cfg.output.parent.mkdir(parents=True, exist_ok=True)
    document: dict[str, Any] = {
        "config": {**asdict(cfg), "output": str(cfg.output)},
        "results": asdict(r),
    }
    document["load average"] = Path("/proc/loadavg").read_text().split()[0]
    document["seconds"] = round(time.monotonic() - started, 1)
    cfg.output.write_text(json.dumps(document, indent=2), encoding="utf-8")
    print(f"figures: {cfg.output} ({document['seconds']} s, nproc {os.cpu_count()})")
    return 1 if r.errors else 0


if __name__ == "__main__":
    sys.exit(main())
