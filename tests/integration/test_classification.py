"""Every SMTP outcome, judged in one place, against a real aiosmtpd server."""

from __future__ import annotations

import shutil
import socket
import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import redis

from devtools.sink import Sink, free_port
from notifier.service import Service
from notifier.settings import Settings
from notifier.store import keys
from tests.conftest import ROOT
from tests.events import created, person

pytestmark = pytest.mark.integration


@pytest.fixture
def svc(make_settings: Callable[..., Settings], redis_client: redis.Redis) -> Iterator[Service]:
    service = Service(
        make_settings(),
        redis_client,
        clock=lambda: datetime(2024, 2, 14, tzinfo=UTC),
        rand=lambda: 0.0,
    )
    yield service
    service.close()


def _refused(port: int) -> str:
    """The reply recorded when nothing listens on the relay's port (Linux's errno text)."""
    return (
        f"relay unavailable: Error connecting to 127.0.0.1 on port {port}: "
        f"[Errno 111] Connect call failed ('127.0.0.1', {port})"
    )


def _one(svc: Service, n: int = 1) -> tuple[str, str, int]:
    [key] = svc.ingest(created(f"evt-{n}", f"REG-{n}", person(n)))
    svc.deliver([key])
    record = svc.outbox.get(key)
    assert record is not None
    return record.state, record.last_reply, record.attempts


@pytest.mark.parametrize(
    ("where", "reply", "state"),
    [
        ("rcpt", "421 4.7.0 closing, try later", "retrying"),
        ("rcpt", "450 4.2.1 mailbox busy", "retrying"),
        ("rcpt", "452 4.5.3 too many recipients", "retrying"),
        ("rcpt", "550 5.1.1 no such user", "failed"),
        ("rcpt", "553 5.1.3 bad address syntax", "failed"),
        ("data", "451 4.3.0 local error", "retrying"),
        ("data", "452 4.3.1 insufficient storage", "retrying"),
        ("data", "554 5.7.1 rejected as spam", "failed"),
        ("data", "552 5.3.4 message too big", "failed"),
    ],
)
def test_reply_codes(svc: Service, sink: Sink, where: str, reply: str, state: str) -> None:
    if where == "rcpt":
        sink.script.rcpt["@"] = reply
    else:
        sink.script.data.append(reply)
    # A relay that says we are too many is asking us to wait: that attempt does not count.
    attempts = 0 if "too many" in reply else 1
    assert _one(svc) == (state, reply, attempts)
    assert sink.received == []


def test_connection_dropped_mid_data_is_temporary(svc: Service, sink: Sink) -> None:
    sink.script.drop_data = 1
    state, reply, _ = _one(svc)
    # The sink hangs up once it has the whole message: the relay may have it.
    assert (state, reply) == (
        "retrying",
        "delivery unknown: connection lost after the final dot (SMTPServerDisconnected)",
    )
    assert _one(svc, 2)[0] == "sent"  # the session is reopened for the next message


def test_refused_connection_is_temporary(
    make_settings: Callable[..., Settings], redis_client: redis.Redis
) -> None:
    port = free_port()
    svc = Service(make_settings(smtp_port=str(port)), redis_client)
    try:
        state, reply, _ = _one(svc)
    finally:
        svc.close()
    assert (state, reply) == ("retrying", _refused(port))


def test_silent_server_times_out_as_temporary(
    make_settings: Callable[..., Settings], redis_client: redis.Redis
) -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        accepted: list[socket.socket] = []
        thread = threading.Thread(target=lambda: accepted.append(listener.accept()[0]))
        thread.start()
        port = listener.getsockname()[1]
        svc = Service(
            make_settings(smtp_port=str(port), smtp_timeout_seconds="0.5", claim_lease_seconds="5"),
            redis_client,
        )
        try:
            state, reply, _ = _one(svc)
        finally:
            svc.close()
            thread.join(5)
            for conn in accepted:
                conn.close()
    # asyncio's TimeoutError has no message of its own.
    assert (state, reply) == ("retrying", "timeout: ")


def test_a_reply_given_up_on_is_never_taken_for_the_next_one(
    make_settings: Callable[..., Settings], redis_client: redis.Redis, sink: Sink
) -> None:
    """A server that goes quiet after the final dot: the connection is given up with the
    deadline, so that the late reply is not read as the reply to the next message's MAIL
    FROM. The relay may have the first message: its delivery is unknown, resent once."""
    svc = Service(
        make_settings(smtp_timeout_seconds="0.5", smtp_data_timeout_seconds="0.5"),
        redis_client,
        rand=lambda: 0.0,
    )
    try:
        sink.script.delay = 1.5
        state, reply, _ = _one(svc, 1)
        sink.script.delay = 0.0
        second = _one(svc, 2)
    finally:
        svc.close()
    assert (state, reply) == (
        "retrying",
        "delivery unknown: no reply to the final dot within 0.5 s",
    )
    assert second == ("sent", second[1], 1) and second[1].startswith("250")
    assert sink.connections == 2


def test_slow_down_pauses_every_sender(svc: Service, sink: Sink) -> None:
    sink.script.data.append("432 4.3.2 Concurrent connections limit exceeded")
    state, reply, _ = _one(svc)
    assert (state, reply) == ("retrying", "432 4.3.2 Concurrent connections limit exceeded")
    assert svc.r.exists(keys.PAUSE)
    # While paused, the next message is put back without an attempt and without SMTP
    assert _one(svc, 2) == ("retrying", "", 0)
    assert sink.received == []


def _redis_now(client: redis.Redis) -> float:
    seconds, micros = client.time()
    return float(seconds) + micros / 1e6


def test_rate_limit_is_shared_and_exact(
    make_settings: Callable[..., Settings],
    redis_client: redis.Redis,
    sink: Sink,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """21 sends at 20/s: the k-th message to reach the relay (k from 0) arrives no earlier
    than k/20 s after delivery began, on Redis's clock, which the limiter's slots are on.
    A lower bound only: a slow machine makes sends later, never earlier."""
    arrivals: list[float] = []
    store = sink.store

    def timed_store(envelope: Any) -> None:
        arrivals.append(_redis_now(redis_client))
        store(envelope)

    monkeypatch.setattr(sink, "store", timed_store)
    svc = Service(make_settings(rate_limit="20"), redis_client)
    message_keys = [svc.ingest(created(f"e{i}", f"R{i}", person(i)))[0] for i in range(21)]
    began = _redis_now(redis_client)
    try:
        svc.deliver(message_keys)
    finally:
        svc.close()
    assert len(sink.received) == 21
    # A millisecond for the clocks' granularity (Redis TIME, the event loop's timer).
    early = [k for k, at in enumerate(sorted(arrivals)) if at < began + k / 20 - 0.001]
    assert early == []


def test_template_bug_fails_once_without_retry(
    make_settings: Callable[..., Settings],
    redis_client: redis.Redis,
    tmp_path: Path,
    sink: Sink,
) -> None:
    broken = tmp_path / "templates"
    shutil.copytree(ROOT / "templates", broken)
    (broken / "confirmation" / "body.txt").write_text("{{ no_such_variable }}", encoding="utf-8")
    svc = Service(make_settings(templates_dir=str(broken)), redis_client)
    try:
        state, reply, attempts = _one(svc)
    finally:
        svc.close()
    assert (state, attempts) == ("failed", 1) and reply.startswith("cannot compose")
    assert sink.received == []
