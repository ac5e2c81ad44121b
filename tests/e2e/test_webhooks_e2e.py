"""Webhooks through a real Celery worker: a confirmation that the sink accepts is reported as
one message.sent webhook, a 550 as message.failed, each signed and without an address; a
worker killed while the receiver is down loses none once a new worker and the receiver are
back."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from devtools.sink import free_port
from tests.conftest import wait_for
from tests.e2e.conftest import SHORT_LEASE, Stack
from tests.events import CONFERENCE, created, person
from tests.integration.test_webhooks import SECRET, Receiver

pytestmark = pytest.mark.e2e


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    made = Receiver(free_port())
    yield made
    made.stop()


def hooked(stack: Callable[..., Stack], receiver: Receiver, **env: str) -> Stack:
    return stack(
        webhook_url=receiver.url,
        webhook_secret=SECRET,
        webhook_poll_seconds="0.2",
        # A killed worker's claims run out after the lease: timeout x (10 claims + 1) + 5 s.
        webhook_timeout_seconds="1",
        webhook_retry_base_seconds="0.5",
        webhook_retry_max_seconds="1",
        **env,
    )


def of_type(receiver: Receiver, kind: str) -> list[dict[str, Any]]:
    return [b for b in receiver.verified().values() if b["type"] == kind]


def test_a_sent_confirmation_and_a_550_are_reported(
    stack: Callable[..., Stack], receiver: Receiver
) -> None:
    # Given a worker with webhooks and a relay that refuses one recipient
    receiver.start()
    s = hooked(stack, receiver, **SHORT_LEASE)
    s.sink.script.rcpt["deltager7@"] = "550 5.1.1 <deltager7@kommune.example.dk>: no such user"
    # When two registrations arrive, one for the refused address
    s.publish(created("evt-1", "REG-1", person(1)), created("evt-7", "REG-7", person(7)))
    # Then one message.sent and one message.failed webhook arrive, signed
    wait_for(lambda: len(receiver.got) >= 2, 60, "two webhooks")
    s.wait_drained()
    s.wait_past_rescue()
    sent, failed = of_type(receiver, "message.sent"), of_type(receiver, "message.failed")
    assert len(sent) == 1 and len(failed) == 1 and len(receiver.got) == 2
    assert sent[0]["data"]["registration_id"] == "REG-1"
    assert sent[0]["data"]["conference"] == CONFERENCE
    assert sent[0]["data"]["kind"] == "confirmation" and sent[0]["data"]["state"] == "sent"
    assert failed[0]["data"]["registration_id"] == "REG-7"
    assert failed[0]["data"]["smtp_reply"].startswith("550 5.1.1")
    # And no body names anyone or carries an address
    for _, raw in receiver.got:
        assert b"@" not in raw and "Deltager" not in raw.decode()


def test_a_killed_worker_loses_no_webhook(stack: Callable[..., Stack], receiver: Receiver) -> None:
    # Given a worker with webhooks whose receiver is down
    s = hooked(stack, receiver)
    s.publish(*(created(f"evt-{n}", f"REG-{n}", person(n)) for n in range(5)))
    wait_for(lambda: len(s.sink.received) == 5, 60, "five confirmations")
    wait_for(lambda: s.client.hlen("notifier:webhooks:attempts") == 5, 30, "five tries")
    # When the worker is killed, and a new one starts with the receiver back
    s.worker.kill()
    receiver.start()
    s.worker.start()
    # Then every outcome is reported
    wait_for(lambda: len(of_type(receiver, "message.sent")) == 5, 60, "five webhooks")
    regs = {b["data"]["registration_id"] for b in of_type(receiver, "message.sent")}
    assert regs == {f"REG-{n}" for n in range(5)}
