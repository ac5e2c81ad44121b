"""`make console`: the organisers' console on local defaults, with sample data.

Redis, a local SMTP server and a real Celery worker as `make demo` starts them: a private
redis-server on a free port unless NOTIFIER_DEMO_REDIS_URL chooses an existing Redis, whose
database is then used only if it is empty or holds nothing but an earlier demo's data
(devtools/demoredis.py). Then the sample events of examples/ (registrations, a substitution,
a cancellation and one invalid event, which becomes a dead letter); an organiser token; then
`notifier serve` on http://127.0.0.1:8080 (NOTIFIER_CONSOLE_PORT to change it) until Ctrl-C,
which stops the server, the worker, the SMTP server and a private Redis. Mail the console
sends (reminders, updates, test mails) lands in console-out/mail/ as .eml files
(NOTIFIER_CONSOLE_OUT names another folder than console-out/; the tests use it).
"""

from __future__ import annotations

import os
import time
from contextlib import ExitStack, closing
from pathlib import Path

import redis
import uvicorn

from devtools import demo
from devtools.sink import Sink
from notifier.api.app import uvicorn_config
from notifier.settings import load_settings
from notifier.store.tokens import Tokens
from notifier.tasks import INGEST, QUEUE, create_app

OUT = Path(os.environ.get("NOTIFIER_CONSOLE_OUT") or demo.ROOT / "console-out")
SAMPLES = ("registrations.jsonl", "substitution.jsonl", "cancellation.jsonl")
PORT = int(os.environ.get("NOTIFIER_CONSOLE_PORT", "8080"))


def serve(stack: ExitStack) -> None:
    # Redis first: when the chosen one is refused, nothing has been changed or started.
    url = stack.enter_context(demo.redis_url())
    sink = stack.enter_context(Sink(folder=demo.fresh_mail_folder()))
    env = demo.service_env(url, sink)
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
        f"Mail it sends is saved in {demo.shown(OUT)}/mail/.\n"
        "Organiser token (paste it into the login form):",
        highlight=False,
    )
    print(token, flush=True)
    # uvicorn handles Ctrl-C and SIGTERM itself: it shuts down, then raises the signal again
    # here, and the with-blocks stop the rest.
    server.run()


def main() -> None:
    demo.OUT = OUT  # the demo's helpers write their logs and copies here
    demo.stop_on_signals()
    try:
        with ExitStack() as stack:
            serve(stack)
    except KeyboardInterrupt:
        pass  # Ctrl-C is how the console ends
    demo.console.print("Stopped everything the console started.")


if __name__ == "__main__":
    main()
