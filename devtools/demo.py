"""`make demo`: the whole service on local defaults, in one command.

Redis: a private redis-server on a free port, stopped at the end (also on Ctrl-C or an error).
NOTIFIER_DEMO_REDIS_URL chooses an existing Redis instead, whose database the demo empties
only if it is empty or holds nothing but an earlier demo's data (devtools/demoredis.py); else
it stops with exit status 2 before it changes anything. SMTP: a local server that stores each
message as an .eml file. None of the caller's NOTIFIER_ settings reach the worker, so a Redis,
relay or webhook set there for the real service is not touched either.
Then a real Celery worker and the sample events of examples/: registrations, a substitution and
a cancellation first, then a reminder batch (reminder.requested) once those are settled, so that
the reminders go to whoever holds each seat by then. Then the conference announces its times:
the worker reads a copy of the conference file in demo-out/conferences/, the demo sets start and
end times in it and publishes the update as `notifier update` does. Last, who got which kind of
mail, where each one is saved, and what the update mail says changed.

Everything is written to demo-out/ (NOTIFIER_DEMO_OUT names another folder; the tests use it).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager, ExitStack, closing, contextmanager
from datetime import UTC, datetime
from email import message_from_bytes, policy
from pathlib import Path

import redis
from celery import Celery
from rich.console import Console

from devtools.demoredis import demo_redis
from devtools.localworker import start_worker
from devtools.sink import Sink
from notifier import announce
from notifier.domain.notice import Kind
from notifier.loading import Conferences
from notifier.mail.compose import message_id
from notifier.settings import Settings, load_settings
from notifier.store import keys
from notifier.store.codec import text
from notifier.store.outbox import Outbox
from notifier.tasks import INGEST, QUEUE, create_app

ROOT = Path(__file__).resolve().parent.parent
OUT = Path(os.environ.get("NOTIFIER_DEMO_OUT") or ROOT / "demo-out")
# Published in two rounds: a reminder batch is planned from the seats as they are when it is
# requested, so it waits until the registrations, the substitution and the cancellation are in.
ROUNDS = (
    ("registrations.jsonl", "substitution.jsonl", "cancellation.jsonl"),
    ("reminder.jsonl",),
)
CONFERENCE = "digitaliseringstraef-2024"
# The kinds the demo sends: all but the cancellation of a whole conference.
SHOWN = tuple(kind for kind in Kind if kind is not Kind.CONFERENCE_CANCELLATION)
console = Console()


def shown(path: Path) -> str:
    """A path as the demo prints it: relative to the repository when it is inside."""
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


def redis_url() -> AbstractContextManager[str]:
    """The run's Redis (a private one unless NOTIFIER_DEMO_REDIS_URL chooses one)."""
    return demo_redis(OUT / "redis", console)


@contextmanager
def worker(env: dict[str, str]) -> Iterator[subprocess.Popen[bytes]]:
    log = OUT / "worker.log"
    proc = start_worker(env, log, name=f"demo{os.getpid()}")
    try:  # from here on, a Ctrl-C stops the worker too
        console.print(
            f"Worker: started (pid {proc.pid}), log in {shown(log)}",
            highlight=False,
            soft_wrap=True,
        )
        yield proc
    finally:
        proc.send_signal(signal.SIGTERM)  # warm shutdown: running tasks finish
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def load_events(names: tuple[str, ...]) -> list[dict[str, object]]:
    events: list[dict[str, object]] = []
    for name in names:
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


def publish_and_wait(app: Celery, client: redis.Redis, names: tuple[str, ...]) -> None:
    events = load_events(names)
    for event in events:
        app.send_task(INGEST, args=[event], queue=QUEUE)
    plural = "" if len(events) == 1 else "s"
    console.print(f"Published {len(events)} event{plural} from examples/ ({', '.join(names)})")
    wait_settled(client, events)


def wait_settled(client: redis.Redis, events: list[dict[str, object]]) -> None:
    deadline = time.monotonic() + 60
    while not settled(client, events):
        if time.monotonic() > deadline:
            console.print(f"[red]Timed out waiting for the worker; see {shown(OUT)}/worker.log[/]")
            sys.exit(1)
        time.sleep(0.1)


def kinds(client: redis.Redis, conferences: Conferences) -> dict[str, str]:
    """The kind of every message in the outbox, by the Message-ID it was sent with."""
    prefix = keys.message("")
    found = [text(k).removeprefix(prefix) for k in client.scan_iter(match=f"{prefix}*")]
    return {
        message_id(r.key, conferences.get(r.notice.conference).sender_domain): r.kind
        for r in Outbox(client).records(found)
    }


def report(sink: Sink, kind_of: dict[str, str]) -> bool:
    """Who got which mail, grouped by kind; False if a kind was not sent at all."""
    console.print(f"\n[bold]{len(sink.received)} mails received by the local SMTP server:[/]")
    by_kind: dict[str, list[str]] = {kind.value: [] for kind in SHOWN}
    for n, item in enumerate(sink.received, start=1):
        msg = message_from_bytes(item.data, policy=policy.default)
        cal = [p for p in msg.walk() if p.get_content_type() == "text/calendar"]
        invite = f"invite {cal[0].get_param('method')}" if cal else "no invite"
        line = f"{shown(OUT)}/mail/{n:05d}.eml [cyan]{', '.join(item.recipients)}[/] ({invite})"
        by_kind.setdefault(kind_of.get(str(msg["Message-ID"]), "unknown"), []).append(
            f"{line}\n      {msg['Subject']}"
        )
    for kind, lines in by_kind.items():
        console.print(f"\n[bold]{kind}[/] ({len(lines)})", highlight=False)
        for line in lines:
            console.print(f"  - {line}", highlight=False, soft_wrap=True)
    missing = [kind.value for kind in SHOWN if not by_kind[kind.value]]
    if missing:
        console.print(
            f"\n[red]No mail of kind {', '.join(missing)}; see {shown(OUT)}/worker.log[/]"
        )
    else:
        console.print(f"\nEvery kind of mail was sent: {', '.join(by_kind)}.", soft_wrap=True)
    return not missing


def conference_copies() -> Path:
    """A fresh copy of conferences/ for the worker to read, so that the demo can edit it."""
    folder = OUT / "conferences"
    shutil.rmtree(folder, ignore_errors=True)
    shutil.copytree(ROOT / "conferences", folder)
    return folder


def set_times(path: Path) -> None:
    """What an organiser does once the times are known: start_time and end_time in the file
    (top-level keys, so right after the date, before any table)."""
    content = path.read_text(encoding="utf-8")
    times = "start_time = 09:00:00\nend_time = 16:00:00\n"
    edited = re.sub(r"^(date = .*\n)", lambda m: m.group(1) + times, content, flags=re.M, count=1)
    path.write_text(edited, encoding="utf-8")


def update_round(settings: Settings, client: redis.Redis, sink: Sink) -> list[int]:
    """Announce the times as `notifier update` does; the numbers of the update mails."""
    path = settings.conferences_dir / f"{CONFERENCE}.toml"
    set_times(path)
    conf = Conferences(settings.conferences_dir).get(CONFERENCE)
    console.print(
        f"\nSet start_time and end_time in {shown(path)}; `notifier update` shows the organiser:",
        highlight=False,
        soft_wrap=True,
    )
    announce.show(announce.forecast(announce.seats_of(client, conf), conf), conf)
    before = len(sink.received)
    event_id = announce.publish_update(settings, conf, datetime.now(UTC))
    console.print(f"Published conference.updated ({event_id})", highlight=False, soft_wrap=True)
    wait_settled(client, [{"id": event_id}])
    return list(range(before + 1, len(sink.received) + 1))


def show_update(sink: Sink, numbers: list[int]) -> None:
    """The update mail's subject and its before → now lines, as the attendees read them."""
    if not numbers:
        return
    msg = message_from_bytes(sink.received[numbers[0] - 1].data, policy=policy.default)
    body = msg.get_body(("plain",))
    lines = str(body.get_content()).splitlines() if body is not None else []
    console.print(
        f"\n[bold]The update[/] ({len(numbers)} mails, e.g. "
        f"{shown(OUT)}/mail/{numbers[0]:05d}.eml):",
        highlight=False,
    )
    console.print(f"  Subject: {msg['Subject']}", markup=False, highlight=False, soft_wrap=True)
    for line in lines:
        if " → " in line:
            console.print(f"  {line.strip()}", markup=False, highlight=False)


def fresh_mail_folder() -> Path:
    """OUT/mail without the .eml files of an earlier run: the SMTP server numbers from 1."""
    folder = OUT / "mail"
    folder.mkdir(parents=True, exist_ok=True)
    for old in folder.glob("*.eml"):
        old.unlink()
    return folder


def service_env(url: str, sink: Sink) -> dict[str, str]:
    """The settings of the worker (and of the console's server): this Redis and SMTP server,
    and the copy of conferences/ that the demo may edit. No NOTIFIER_ setting of the caller's
    shell: one meant for the real service (NOTIFIER_REDIS_URL, a store apart from the broker;
    NOTIFIER_WEBHOOK_URL) would have the demo's worker write to it."""
    inherited = {k: v for k, v in os.environ.items() if not k.startswith("NOTIFIER_")}
    return {
        **inherited,
        "NOTIFIER_CONFERENCES_DIR": str(conference_copies()),
        "NOTIFIER_BROKER_URL": url,
        "NOTIFIER_SMTP_HOST": "127.0.0.1",
        "NOTIFIER_SMTP_PORT": str(sink.port),
        "NOTIFIER_SMTP_TLS": "none",
    }


def run(stack: ExitStack) -> bool:
    # Redis first: when the chosen one is refused, the demo stops before it changes anything.
    url = stack.enter_context(redis_url())
    sink = stack.enter_context(Sink(folder=fresh_mail_folder()))
    console.print(
        f"SMTP: local server on 127.0.0.1:{sink.port}, mails saved in {shown(OUT)}/mail/",
        highlight=False,
    )
    env = service_env(url, sink)
    stack.enter_context(worker(env))
    settings = load_settings(env)
    app = stack.enter_context(closing(create_app(settings)))
    client = stack.enter_context(closing(redis.Redis.from_url(url)))
    for names in ROUNDS:
        publish_and_wait(app, client, names)
    updates = update_round(settings, client, sink)
    complete = report(sink, kinds(client, Conferences(settings.conferences_dir)))
    show_update(sink, updates)
    return complete


def stop_on_signals() -> None:
    """Ctrl-C and `kill` end a run through the with-blocks that stop the worker, the SMTP server
    and a private Redis. Python's default for SIGTERM would end the process and leave them
    running; SIGINT is ignored from birth in a process a script started with `&`."""
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))


def main() -> None:
    started = time.monotonic()
    stop_on_signals()
    try:
        with ExitStack() as stack:
            complete = run(stack)
    except KeyboardInterrupt:
        console.print("\nInterrupted; everything the demo started is stopped.")
        sys.exit(130)
    console.print(
        f"\nDone in {time.monotonic() - started:.1f} s, everything started is stopped. "
        f"Open a .eml file in a mail program; the worker's log is {shown(OUT)}/worker.log.",
        highlight=False,
    )
    if not complete:
        sys.exit(1)


if __name__ == "__main__":
    main()
