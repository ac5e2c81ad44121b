"""Delivery against a real Redis and a real aiosmtpd server: reuse, reconnects, claims."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from devtools.sink import Sink
from notifier.service import Service
from notifier.settings import Settings
from tests.conftest import Clock, wait_for
from tests.events import created, person

pytestmark = pytest.mark.integration


def _register(svc: Service, n: int) -> list[str]:
    found: list[str] = []
    for i in range(n):
        found += svc.ingest(created(f"evt-{i}", f"REG-{i}", person(i)))
    return found


def test_a_chunk_reuses_connections(service: Callable[..., Service], sink: Sink) -> None:
    svc = service(smtp_connections="2")
    svc.deliver(_register(svc, 20))
    svc.deliver(_register(svc, 0) + svc.ingest(created("evt-x", "REG-X", person(99))))
    assert len(sink.received) == 21
    assert sink.connections == 2  # two sessions, kept across both calls


def test_a_connection_the_server_closed_is_reopened(
    service: Callable[..., Service], make_settings: Callable[..., Settings], tmp_path: object
) -> None:
    with Sink(idle_timeout=0.3) as impatient:
        svc = service(smtp_connections="1", smtp_port=str(impatient.port))
        svc.deliver(svc.ingest(created("evt-1", "REG-1", person(1))))
        wait_for(lambda: impatient.disconnects >= 1, 5, "the server to drop the idle session")
        svc.deliver(svc.ingest(created("evt-2", "REG-2", person(2))))
        assert len(impatient.received) == 2
        assert impatient.connections == 2
        assert svc.outbox.counts()["sent"] == 2


def test_a_delivered_message_is_not_sent_again(service: Callable[..., Service], sink: Sink) -> None:
    svc = service()
    message_keys = _register(svc, 3)
    svc.deliver(message_keys)
    svc.deliver(message_keys)  # a redelivered task
    assert len(sink.received) == 3


def test_a_live_claim_blocks_and_a_dead_one_is_taken_over(
    service: Callable[..., Service], sink: Sink, clock: Clock
) -> None:
    svc = service()
    [key] = _register(svc, 1)
    assert svc.outbox.claim(key) is not None  # a worker that then died
    svc.deliver([key])
    assert sink.received == []
    clock.advance(svc.outbox.lease + 1)
    assert svc.due() == [key]  # the sweeper finds it
    svc.deliver([key])
    assert len(sink.received) == 1


def test_temporary_failure_is_retried_after_backoff(
    service: Callable[..., Service], sink: Sink, clock: Clock
) -> None:
    svc = service()
    sink.script.data.append("451 4.3.0 try again later")
    [key] = _register(svc, 1)
    svc.deliver([key])
    record = svc.outbox.get(key)
    assert record is not None
    assert (record.state, record.attempts, record.last_reply) == (
        "retrying",
        1,
        "451 4.3.0 try again later",
    )
    assert svc.due() == []  # not yet: base 1 s, no jitter
    clock.advance(1)
    assert svc.due() == [key]
    svc.deliver([key])
    assert len(sink.received) == 1
    done = svc.outbox.get(key)
    assert done is not None and (done.state, done.attempts) == ("sent", 2)


def test_permanent_failure_is_failed_at_once(service: Callable[..., Service], sink: Sink) -> None:
    svc = service()
    sink.script.rcpt["deltager1@"] = "550 5.1.1 no such user"
    message_keys = _register(svc, 2)
    svc.deliver(message_keys)
    assert len(sink.received) == 1
    failed = svc.outbox.get(message_keys[1])
    assert failed is not None
    assert (failed.state, failed.last_reply) == ("failed", "550 5.1.1 no such user")
    assert svc.outbox.counts() == {
        "queued": 0,
        "sending": 0,
        "retrying": 0,
        "sent": 1,
        "failed": 1,
        "skipped": 0,
        "unknown": 0,
        "bounced": 0,
        "suppressed": 0,
    }


def test_attempts_run_out(service: Callable[..., Service], sink: Sink, clock: Clock) -> None:
    svc = service(max_attempts="2")
    sink.script.data.extend(["421 4.7.0 busy", "421 4.7.0 busy"])
    [key] = _register(svc, 1)
    svc.deliver([key])
    clock.advance(10)
    svc.deliver(svc.due())
    record = svc.outbox.get(key)
    assert record is not None
    assert (record.state, record.attempts, record.last_reply) == ("failed", 2, "421 4.7.0 busy")


def test_relay_down_means_retrying(
    service: Callable[..., Service], make_settings: Callable[..., Settings]
) -> None:
    from devtools.sink import free_port

    port = free_port()
    svc = service(smtp_port=str(port))
    [key] = _register(svc, 1)
    svc.deliver([key])
    record = svc.outbox.get(key)
    assert record is not None
    assert (record.state, record.attempts, record.last_reply) == (
        "retrying",
        1,
        f"relay unavailable: Error connecting to 127.0.0.1 on port {port}: "
        f"[Errno 111] Connect call failed ('127.0.0.1', {port})",
    )
