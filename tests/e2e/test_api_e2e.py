"""End to end over HTTP: `notifier serve` and a real worker; Redis stopped during a POST."""

from __future__ import annotations

import http.client
import json
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from devtools.sink import free_port
from notifier.settings import load_settings
from notifier.store.tokens import Tokens
from tests.api_support import Api, Reply, api
from tests.conftest import wait_for
from tests.e2e.conftest import SHORT_LEASE, Stack
from tests.events import METTE, created

pytestmark = pytest.mark.e2e
__all__ = ["api"]


def _serve(s: Stack, port: int, log: Path) -> subprocess.Popen[bytes]:
    notifier = Path(sys.executable).parent / "notifier"
    with log.open("wb") as out:
        return subprocess.Popen(
            [str(notifier), "serve", "--port", str(port)], env=s.env, stdout=out, stderr=out
        )


def test_event_posted_over_http_is_confirmed_once(
    stack: Callable[..., Stack], tmp_path: Path
) -> None:
    s = stack(**SHORT_LEASE)
    token = Tokens(s.client).create("kl", "ingest", time.time())
    port = free_port()
    log = tmp_path / "serve.log"
    proc = _serve(s, port, log)
    try:
        probe = Api.__new__(Api)  # only its client: the server is the subprocess
        probe.port = port

        def healthy() -> bool:
            assert proc.poll() is None, log.read_text()
            try:
                return probe.call("GET", "/v1/health").status == 200
            except OSError:
                return False

        wait_for(healthy, 30, "notifier serve to answer")
        event = created("evt-http-e2e-1", "REG-1")
        reply = probe.call("POST", "/v1/events", event, token=token)
        assert (reply.status, reply.json()["status"]) == (202, "accepted")
        [mail] = s.sink.wait_for(1)
        assert mail.recipients == (METTE["email"],)
        assert probe.call("POST", "/v1/events", event, token=token).json()["status"] == "duplicate"
        s.wait_past_rescue()
        assert len(s.sink.received) == 1
    finally:
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(30)
    assert code == 0  # uvicorn's graceful shutdown
    text = log.read_text()
    assert "Application shutdown complete" in text
    assert token not in text and "Mette" not in text and "aarhus.dk" not in text


def _last_command_was_token_lookup(s: Stack) -> bool:
    clients = s.client.client_list()
    return any(c.get("cmd") == "hget" for c in clients)


def _post_in_two_halves(a: Api, token: str, body: bytes, between: Callable[[], None]) -> Reply:
    """Headers and half the body, then `between()`, then the rest."""
    conn = http.client.HTTPConnection("127.0.0.1", a.port, timeout=60)
    try:
        conn.putrequest("POST", "/v1/events")
        conn.putheader("Authorization", f"Bearer {token}")
        conn.putheader("Content-Type", "application/json")
        conn.putheader("Content-Length", str(len(body)))
        conn.endheaders(body[: len(body) // 2])
        between()
        conn.send(body[len(body) // 2 :])
        resp = conn.getresponse()
        return Reply(resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read())
    finally:
        conn.close()


def test_redis_stopped_during_a_post(stack: Callable[..., Stack], api: Callable[..., Api]) -> None:
    s = stack(appendonly=True, **SHORT_LEASE)
    a = api(load_settings(s.env))
    token = Tokens(s.client).create("kl", "ingest", time.time())
    event = created("evt-http-e2e-2", "REG-2")

    def stop_redis() -> None:
        # The request has been authenticated (the token's HGET) and waits for its body
        wait_for(lambda: _last_command_was_token_lookup(s), 10, "the token lookup")
        s.redis_server.stop()

    reply = _post_in_two_halves(a, token, json.dumps(event).encode(), stop_redis)
    assert reply.status == 503
    assert reply.headers["content-type"] == "application/problem+json"
    assert int(reply.headers["retry-after"]) > 0
    s.redis_server.start()
    # The client retries with the same id, after Retry-After, until the API answers
    seen: list[int] = []

    def accepted() -> bool:
        r = a.call("POST", "/v1/events", event, token=token)
        seen.append(r.status)
        return r.status == 202 and r.json()["status"] == "accepted"

    wait_for(accepted, 30, "the event to be accepted")
    assert set(seen) <= {202, 503}
    [mail] = s.sink.wait_for(1)
    assert mail.recipients == (METTE["email"],)
    s.wait_past_rescue()
    assert len(s.sink.received) == 1
