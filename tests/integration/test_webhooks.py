"""Signed delivery webhooks against a real HTTP receiver on a free loopback port and the
tests' Redis: the settling scripts queue a delivery only when webhooks are configured, each
arrives signed (checked with standardwebhooks' own Webhook.verify) with a stable webhook-id,
without any address; a receiver that is down or failing gets every one once it is back, with
the same id on each retry; a sender killed mid-POST loses none; an outcome older than the
give-up limit lands in the dead hash."""

from __future__ import annotations

import base64
import json
import logging
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import redis
from standardwebhooks import Webhook

from devtools.sink import free_port
from notifier.domain.notice import Kind, Notice, Person
from notifier.settings import Settings
from notifier.store.outbox import Outbox, Settlement
from notifier.store.webhooks import Pending, webhook_id
from notifier.webhooks import Sender, SenderThread
from tests.conftest import ROOT, wait_for

pytestmark = pytest.mark.integration

SECRET = "whsec_" + base64.b64encode(b"notifier-test-webhook-key-32byte").decode()
CONF = "konf-2024"
METTE = Person("Mette Sørensen", "mette.sorensen@aarhus.dk")
TOKEN = "url-token-never-logged"
REPLY_550 = "550 5.1.1 <mette.sorensen@aarhus.dk>: Recipient address rejected"


class Receiver:
    """An HTTP server that records every POST (headers, body) and answers with the next
    scripted status (200 once the script is used up). With `hold` set, each request waits
    until the test releases it: a sender stuck mid-POST."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.got: list[tuple[dict[str, str], bytes]] = []
        self.statuses: list[int] = []
        self.hold: threading.Event | None = None
        self.lock = threading.Lock()
        self.server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        # With a token in the query, as some receivers want: it must never be logged.
        return f"http://127.0.0.1:{self.port}/hooks?token={TOKEN}"

    def start(self) -> Receiver:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                data = self.rfile.read(int(self.headers["content-length"]))
                with receiver.lock:
                    receiver.got.append(({k.lower(): v for k, v in self.headers.items()}, data))
                    status = receiver.statuses.pop(0) if receiver.statuses else 200
                if receiver.hold is not None:
                    receiver.hold.wait(30)
                try:
                    self.send_response(status)
                    self.send_header("content-length", "0")
                    self.end_headers()
                except OSError:  # the sender died while this one was held
                    pass

            def log_message(self, *_: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.server = None

    def ids(self) -> list[str]:
        with self.lock:
            return [h["webhook-id"] for h, _ in self.got]

    def verified(self) -> dict[str, dict[str, Any]]:
        """Every received body by webhook-id, each checked against its signature."""
        hook = Webhook(SECRET)
        with self.lock:
            return {h["webhook-id"]: hook.verify(body, h) for h, body in self.got}


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    made = Receiver(free_port())
    yield made
    if made.hold is not None:
        made.hold.set()
    made.stop()


@pytest.fixture
def hook_settings(
    make_settings: Callable[..., Settings], redis_url: str, receiver: Receiver
) -> Settings:
    return make_settings(
        redis_url,
        webhook_url=receiver.url,
        webhook_secret=SECRET,
        webhook_timeout_seconds="2",
        webhook_poll_seconds="0.05",
        webhook_retry_base_seconds="0.2",
        webhook_retry_max_seconds="0.5",
    )


@pytest.fixture
def sender(hook_settings: Settings) -> Iterator[Callable[..., SenderThread]]:
    started: list[SenderThread] = []

    def start(**options: Any) -> SenderThread:
        started.append(SenderThread(hook_settings, **options).start())
        return started[-1]

    yield start
    for s in started:
        s.stop()


def settle(box: Outbox, n: int, state: str, reply: str = "250 2.0.0 Ok: queued") -> str:
    """Create message number n, claim it and settle it in `state`; its key."""
    key = f"confirmation:{CONF}:REG-{n}:m"
    box.create(Notice(key, Kind.CONFIRMATION, CONF, f"REG-{n}", METTE), 1_707_901_200.0)
    claim = box.claim(key)
    assert claim is not None
    assert box.finish(claim, Settlement(state, reply, recipient=METTE.email)) == 1
    return key


def test_only_a_configured_process_queues_deliveries(redis_client: redis.Redis) -> None:
    # Given an outbox without webhooks and one with them
    plain, hooked = Outbox(redis_client), Outbox(redis_client, webhooks=True)
    pending = Pending(redis_client)
    # When each settles messages
    settle(plain, 1, "sent")
    assert pending.pending() == 0
    sent = settle(hooked, 2, "sent")
    settle(hooked, 3, "retrying", "451 4.3.0 try later")  # not an outcome: nothing to report
    # Then only the configured one queued a delivery, named by key and state
    assert pending.pending() == 1
    assert redis_client.hexists("notifier:webhooks:payloads", webhook_id(sent, "sent"))
    # And a bounce queues the bounced report once, however many reports come
    assert hooked.bounce(sent, "5.1.1", "user unknown", 1_707_905_000.0) == "bounced"
    assert hooked.bounce(sent, "5.1.1", "user unknown", 1_707_906_000.0) == "bounced"
    assert pending.pending() == 2


def test_every_outcome_arrives_signed_without_an_address(
    redis_client: redis.Redis, receiver: Receiver, sender: Callable[..., SenderThread]
) -> None:
    # Given messages that ended sent, failed (a reply quoting the address), suppressed and
    # bounced, with webhooks configured
    box = Outbox(redis_client, webhooks=True)
    sent = settle(box, 1, "sent")
    failed = settle(box, 2, "failed", REPLY_550)
    suppressed = settle(box, 3, "suppressed", "suppressed: hard bounce 5.1.1")
    bounced = settle(box, 4, "sent")
    box.bounce(
        bounced, "5.1.1", f"550 {METTE.email} unknown", 1_707_905_000.0, reason="user_unknown"
    )
    expected = {webhook_id(sent, "sent"), webhook_id(failed, "failed")}
    expected |= {webhook_id(suppressed, "suppressed"), webhook_id(bounced, "sent")}
    expected.add(webhook_id(bounced, "bounced"))
    # When the receiver is up and a sender runs
    receiver.start()
    sender()
    wait_for(lambda: set(receiver.ids()) == expected, what="five webhooks")
    # Then each verifies with the secret, says what happened and names nobody
    bodies = receiver.verified()
    assert bodies[webhook_id(failed, "failed")]["type"] == "message.failed"
    data = bodies[webhook_id(failed, "failed")]["data"]
    assert data["conference"] == CONF and data["registration_id"] == "REG-2"
    assert data["message_key"] == failed and data["kind"] == "confirmation"
    assert data["attempts"] == 1 and data["smtp_reply"].startswith("550 5.1.1 <")
    assert data["created_at"].startswith("2024-02-14T09:00:00")
    bounce = bodies[webhook_id(bounced, "bounced")]["data"]
    assert (bounce["bounce_status"], bounce["bounce_reason"]) == ("5.1.1", "user_unknown")
    assert bodies[webhook_id(suppressed, "suppressed")]["data"]["state"] == "suppressed"
    for _, raw in receiver.got:
        assert b"@" not in raw and "Sørensen" not in raw.decode()
    # And nothing is left to send
    wait_for(lambda: Pending(redis_client).stats()["delivered"] == 5, what="all settled")
    assert Pending(redis_client).pending() == 0


def test_a_receiver_down_then_failing_then_back_gets_every_one(
    redis_client: redis.Redis,
    receiver: Receiver,
    sender: Callable[..., SenderThread],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    # Given ten outcomes and nothing listening on the receiver's port
    box = Outbox(redis_client, webhooks=True)
    ids = {webhook_id(settle(box, n, "sent"), "sent") for n in range(10)}
    pending = Pending(redis_client)
    sender()
    # When the sender has tried each of them at least twice
    attempts = "notifier:webhooks:attempts"
    wait_for(
        lambda: (
            all(int(v) >= 2 for v in redis_client.hvals(attempts))
            and redis_client.hlen(attempts) == 10
        ),
        what="two failed attempts each",
    )
    assert pending.pending() == 10
    # And then the receiver comes back, answering 503 to the first three requests
    receiver.statuses = [503, 503, 503]
    receiver.start()
    # Then every one arrives, those refused again with the same id
    wait_for(lambda: pending.stats()["delivered"] == 10, what="every delivery")
    got = receiver.ids()
    assert set(got) == ids and len(got) == 13
    assert pending.pending() == 0 and pending.stats()["given_up"] == 0
    stamps = [h["webhook-timestamp"] for h, _ in receiver.got]
    assert all(s.isdigit() for s in stamps)
    receiver.verified()  # the retried ones are signed afresh, and verify too
    # And the log tells of the retries but never shows the URL or a payload
    assert "HTTP 503" in caplog.text and "ConnectError" in caplog.text
    assert TOKEN not in caplog.text and "mette" not in caplog.text.lower()
    assert "smtp_reply" not in caplog.text


SENDER = """
import sys
import redis
from notifier.settings import load_settings
from notifier.webhooks import Sender
import os, time
settings = load_settings(os.environ)
sender = Sender(settings, redis.Redis.from_url(settings.redis_url), batch=1, lease_seconds=4)
while True:
    sender.run_once()
    time.sleep(0.05)
"""


def test_a_sender_killed_mid_post_loses_none(
    redis_client: redis.Redis,
    redis_url: str,
    receiver: Receiver,
    hook_settings: Settings,
    sender: Callable[..., SenderThread],
    tmp_path: Path,
) -> None:
    # Given three outcomes and a sender process whose first POST the receiver holds
    box = Outbox(redis_client, webhooks=True)
    ids = {webhook_id(settle(box, n, "sent"), "sent") for n in range(3)}
    receiver.hold = threading.Event()
    receiver.start()
    env = {**os.environ, "NOTIFIER_BROKER_URL": redis_url, "NOTIFIER_WEBHOOK_URL": receiver.url}
    env |= {"NOTIFIER_WEBHOOK_SECRET": SECRET, "NOTIFIER_WEBHOOK_TIMEOUT_SECONDS": "2"}
    proc = subprocess.Popen([sys.executable, "-c", SENDER], cwd=ROOT, env=env)
    try:
        first = wait_for(lambda: receiver.ids(), what="the first POST")[0]
        # When the sender is killed while it waits for the answer
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait()
    receiver.hold.set()
    receiver.hold = None
    # Then another sender takes the dead one's claim over once its lease runs out
    sender(batch=1, lease_seconds=4)
    pending = Pending(redis_client)
    wait_for(lambda: pending.stats()["delivered"] == 3, timeout=30, what="every delivery")
    got = receiver.ids()
    assert set(got) == ids and got.count(first) == 2  # at least once, the same id again


def test_an_outcome_past_the_give_up_limit_is_kept_dead(
    redis_client: redis.Redis, hook_settings: Settings
) -> None:
    # Given an outcome recorded long ago (the store clock at epoch second 1000) and a
    # receiver that is not there
    box = Outbox(redis_client, webhooks=True, store_clock=lambda: 1000.0)
    key = settle(box, 1, "failed", REPLY_550)
    sender = Sender(hook_settings, redis_client, rand=lambda: 0.0)
    try:
        # When the sender tries it and fails
        assert sender.run_once() == 1
    finally:
        sender.close()
    # Then it is given up: kept in the dead hash with its reason, counted, no longer due
    pending = Pending(redis_client)
    dead = pending.dead()[webhook_id(key, "failed")]
    assert dead["reason"] == "ConnectError" and dead["attempts"] == 1
    assert dead["body"]["type"] == "message.failed"
    assert pending.stats() == {"pending": 0, "delivered": 0, "given_up": 1}
    # And what is kept is the redacted body, not the relay's reply with the address
    assert "@" not in json.dumps(dead)
