"""`make console`: the organisers' console on local defaults, with sample data.

Redis, a local SMTP server and a real Celery worker as `make demo` starts them; the sample
events of examples/ (registrations, a substitution, a cancellation and one invalid event,
which becomes a dead letter); an organiser token; then `notifier serve` on
http://127.0.0.1:8080 (NOTIFIER_CONSOLE_PORT to change it) until Ctrl-C. Mail the console
sends (reminders, updates, test mails) lands in console-out/mail/ as .eml files.
"""

from __future__ import annotations

import os
import time
from contextlib import ExitStack, closing

import redis
import uvicorn

from devtools import demo
from devtools.sink import Sink
from notifier.api.app import uvicorn_config
from notifier.settings import load_settings
from notifier.store.tokens import Tokens
from notifier.tasks import INGEST, QUEUE, create_app

OUT = demo.ROOT / "console-out"
SAMPLES = ("registrations.jsonl", "substitution.jsonl", "cancellation.jsonl")
PORT = int(os.environ.get("NOTIFIER_CONSOLE_PORT", "8080"))


def main() -> None:
    demo.OUT = OUT  # the demo's helpers write their logs and copies here
    OUT.mkdir(exist_ok=True)
    for old in (OUT / "mail").glob("*.eml"):
        old.unlink()
    with ExitStack() as stack:
        url = stack.enter_context(demo.redis_url())
        sink = stack.enter_context(Sink(folder=OUT / "mail"))
        env = {
            **os.environ,
            "NOTIFIER_CONFERENCES_DIR": str(demo.conference_copies()),
            "NOTIFIER_BROKER_URL": url,
            "NOTIFIER_SMTP_HOST": "127.0.0.1",
            "NOTIFIER_SMTP_PORT": str(sink.port),
            "NOTIFIER_SMTP_TLS": "none",
        }
        stack.enter_context(demo.worker(env))
        settings = load_settings(env)
        app = stack.enter_context(closing(create_app(settings)))
        client = stack.enter_context(closing(redis.Redis.from_url(url)))
        demo.publish_and_wait(app, client, SAMPLES)
        for event in demo.load_events(("invalid.jsonl",)):
            app.send_task(INGEST, args=[event], queue=QUEUE)
        token = Tokens(client).create(f"console-{int(time.time())}", "organiser", time.time())
        server = uvicorn.Server(uvicorn_config(settings, "127.0.0.1", PORT))
        demo.console.print(
            f"\n[bold]Console:[/] http://127.0.0.1:{PORT}/login  (Ctrl-C stops everything)\n"
            f"Mail it sends is saved in {OUT.relative_to(demo.ROOT)}/mail/.\n"
            "Organiser token (paste it into the login form):",
            highlight=False,
        )
        print(token, flush=True)
        server.run()


if __name__ == "__main__":
    main()
