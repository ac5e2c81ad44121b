"""Signed delivery webhooks: report every message that ends sent, failed, suppressed or
bounced to NOTIFIER_WEBHOOK_URL, signed per Standard Webhooks.

The deliveries wait in Redis (notifier.store.webhooks), queued by the very script that
settled the message. A Sender claims due ones under a lease, POSTs each with a timeout and
settles it: a 2xx removes it; anything else (another status, a timeout, a refused
connection) reschedules it with jittered exponential backoff, the same `webhook-id` each
time, until NOTIFIER_WEBHOOK_GIVE_UP_SECONDS after the outcome; then it is kept in the dead
hash and counted. Delivery is at least once: a sender that dies after the receiver's 2xx
but before its record sends that one again, with the same id, once its lease runs out.

Every worker runs a SenderThread (see notifier.tasks). Nothing here logs a payload or the
URL (it may carry credentials): only ids, types, status codes and error class names.
"""

from __future__ import annotations

import json
import logging
import random
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import httpx
import redis
from standardwebhooks import Webhook

from notifier.domain.retry import backoff
from notifier.logs import ADDRESS
from notifier.settings import Settings
from notifier.store.webhooks import Claimed, Pending

__all__ = ["Sender", "SenderThread", "body"]

log = logging.getLogger("notifier")

CLAIM_BATCH = 10  # deliveries a sender holds at once
TIME_FIELDS = ("created_at", "updated_at", "bounced_at")
REDACTED = "[address]"


def body(claim: Claimed) -> str:
    """The JSON body for a claimed delivery: {type, timestamp, data}, times in ISO 8601 and
    every address in the SMTP reply replaced. A relay's reply may quote the recipient, and
    the receiver needs none: it knows its attendees by registration id. (notifier.logs.scrub
    would keep a masked address with its domain; here nothing of it is kept.)"""
    stored = claim.payload
    data = dict(stored.get("data", {}))
    data["smtp_reply"] = ADDRESS.sub(REDACTED, str(data.get("smtp_reply", "")))
    for name in TIME_FIELDS:
        if isinstance(data.get(name), int | float):
            data[name] = _iso(float(data[name]))
    out = {"type": stored.get("type", ""), "timestamp": _iso(float(stored["at"])), "data": data}
    return json.dumps(out, ensure_ascii=False, separators=(",", ":"), sort_keys=True)


def _iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).isoformat(timespec="milliseconds")


class Sender:
    """Claims due deliveries and sends them, one round at a time (`run_once`)."""

    def __init__(
        self,
        settings: Settings,
        client: redis.Redis,
        *,
        http: httpx.Client | None = None,
        rand: Callable[[], float] = random.random,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        batch: int = CLAIM_BATCH,
        lease_seconds: float | None = None,
    ) -> None:
        """`lease_seconds`: how long a claim is held; by default long enough for the whole
        batch to time out one by one, so a live sender never loses a claim."""
        secret = settings.webhook_key()
        if settings.webhook_url is None or secret is None:
            raise ValueError("webhooks are not configured (NOTIFIER_WEBHOOK_URL)")
        self.url = settings.webhook_url
        # httpx logs each request's URL at INFO, and the URL may carry a token.
        logging.getLogger("httpx").setLevel(logging.WARNING)
        self.settings = settings
        self.signer = Webhook(secret)
        self.pending = Pending(client)
        self.timeout = settings.webhook_timeout_seconds
        self.http = http or httpx.Client(timeout=self.timeout, follow_redirects=False)
        self.rand = rand
        self.clock = clock
        self.batch = batch
        self.lease = lease_seconds or self.timeout * (batch + 1) + 5

    def close(self) -> None:
        self.http.close()

    def run_once(self, stopping: Callable[[], bool] = lambda: False) -> int:
        """Send every delivery due now (a batch at a time) until `stopping()`; how many were
        settled."""
        handled = 0
        while not stopping():
            claims = self.pending.claim(limit=self.batch, lease=self.lease)
            for claim in claims:
                self._deliver(claim)
            handled += len(claims)
            if len(claims) < self.batch:
                break
        return handled

    def _deliver(self, claim: Claimed) -> None:
        failure = self._post(claim)
        kind = claim.payload.get("type", "")
        if failure is None:
            self.pending.done(claim)
            log.info("webhook %s (%s) delivered", claim.id, kind)
            return
        age = claim.now - float(claim.payload.get("at", claim.now))
        if age >= self.settings.webhook_give_up_seconds:
            # The body as it was sent (redacted), for an operator to replay by hand.
            record = {"body": json.loads(body(claim)), "attempts": claim.token, "reason": failure}
            self.pending.give_up(claim, record)
            log.error("webhook %s (%s) given up after %d attempts", claim.id, kind, claim.token)
            return
        delay = backoff(
            claim.token,
            base=self.settings.webhook_retry_base_seconds,
            cap=self.settings.webhook_retry_max_seconds,
            rand=self.rand,
        )
        self.pending.retry(claim, delay)
        log.warning(
            "webhook %s (%s) attempt %d failed (%s); retry in %.1f s",
            claim.id,
            kind,
            claim.token,
            failure,
            delay,
        )

    def _post(self, claim: Claimed) -> str | None:
        """None when the receiver answered 2xx, else why not (no payload, no URL)."""
        content = body(claim)
        headers = self._headers(claim.id, content)
        try:
            response = self.http.post(self.url, content=content.encode(), headers=headers)
        except httpx.HTTPError as exc:  # timeouts, refused connections, protocol errors
            return type(exc).__name__
        if 200 <= response.status_code < 300:
            return None
        return f"HTTP {response.status_code}"

    def _headers(self, msg_id: str, content: str) -> dict[str, str]:
        # Signed at each attempt: receivers reject timestamps more than minutes old.
        now = self.clock()
        return {
            "content-type": "application/json",
            "webhook-id": msg_id,
            "webhook-timestamp": str(int(now.timestamp())),
            "webhook-signature": self.signer.sign(msg_id, now, content),
        }


class SenderThread:
    """A Sender in a thread of its own, polling every NOTIFIER_WEBHOOK_POLL_SECONDS: a POST
    that waits for its timeout must not hold up the worker's consumer."""

    def __init__(self, settings: Settings, **sender_options: Any) -> None:
        self.settings = settings
        self.options = sender_options
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> SenderThread:
        self._thread = threading.Thread(target=self._run, name="notifier-webhooks", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float | None = None) -> None:
        self._stop.set()
        if self._thread is not None:
            # A POST in progress ends within its timeout; its claim is settled or runs out.
            wait = self.settings.webhook_timeout_seconds + 5 if timeout is None else timeout
            self._thread.join(wait)
            self._thread = None

    def _run(self) -> None:
        client = redis.Redis.from_url(self.settings.redis_url, health_check_interval=30)
        sender = Sender(self.settings, client, **self.options)
        try:
            while not self._stop.is_set():
                self._round(sender, self._stop.is_set)
                self._stop.wait(self.settings.webhook_poll_seconds)
        finally:
            sender.close()
            client.close()

    @staticmethod
    def _round(sender: Sender, stopping: Callable[[], bool]) -> None:
        try:
            sender.run_once(stopping)
        except (redis.RedisError, OSError) as exc:
            # Redis restarting or away: the deliveries wait there; try again next round.
            log.warning("webhooks: store unavailable (%s)", type(exc).__name__)
        except Exception:  # a bug must not end the thread and with it every later report
            log.exception("webhooks: sending round failed")
