"""Every claimed message settles: an error at any step after the claim, a session out of
step, a relay that never answers the final dot, an organiser with a non-ASCII domain."""

from __future__ import annotations

import shutil
import threading
from collections.abc import Callable
from email import message_from_bytes, policy
from pathlib import Path
from typing import Any

import aiosmtplib
import idna
import pytest
import redis

import notifier.delivery
import notifier.smtp
from devtools.sink import Sink
from notifier.delivery import Delivery
from notifier.domain.plan import Seat
from notifier.errors import StoreUnavailable
from notifier.service import Service
from notifier.settings import Settings
from notifier.store import keys
from notifier.store.outbox import AsyncOutbox, Outbox
from notifier.store.status import status
from tests.conftest import ROOT, Clock, wait_for
from tests.events import created, person, reminder

pytestmark = pytest.mark.integration


class Injected(RuntimeError):
    pass


def _raise_on(command: bytes) -> Callable[..., Any]:
    real = aiosmtplib.SMTP.execute_command

    async def execute(self: aiosmtplib.SMTP, *args: bytes, **kw: Any) -> Any:
        if args[0] == command:
            raise Injected(f"injected at {command.decode()}")
        return await real(self, *args, **kw)

    return execute


def _inject(step: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Make one step after the claim raise a plain Python error (a bug, not an SMTP reply)."""
    if step == "resolve":
        monkeypatch.setattr(Seat, "from_json", _boom("resolve"))
    elif step == "compose":
        monkeypatch.setattr(notifier.delivery, "compose", _boom("compose"))
    elif step in ("MAIL", "RCPT", "DATA"):
        monkeypatch.setattr(aiosmtplib.SMTP, "execute_command", _raise_on(step.encode()))
    elif step == "final dot":
        monkeypatch.setattr(notifier.smtp, "_data", _after_the_dot(notifier.smtp._data))
    elif step == "record":
        monkeypatch.setattr(notifier.delivery.Delivery, "_record", _boom("record"))


def _boom(where: str) -> Callable[..., Any]:
    def boom(*_: Any, **__: Any) -> Any:
        raise Injected(f"injected at {where}")

    return boom


def _after_the_dot(real: Callable[..., Any]) -> Callable[..., Any]:
    async def data(smtp: aiosmtplib.SMTP, body: bytes, handed_over: Callable[[], None]) -> Any:
        def then() -> None:
            handed_over()
            raise Injected("injected at final dot")

        return await real(smtp, body, then)

    return data


# step -> (state, reply) expected for the confirmation and for the reminder
INJECTED = "internal error: Injected: injected at "
UNKNOWN = "delivery unknown: Injected: injected at final dot"
EXPECTED = {
    # Every invite is prepared against its seat (the iTIP rule), the reminder's too.
    "resolve": (("failed", INJECTED + "resolve"),) * 2,
    "compose": (("failed", INJECTED + "compose"),) * 2,
    "MAIL": (("failed", INJECTED + "MAIL"),) * 2,
    "RCPT": (("failed", INJECTED + "RCPT"),) * 2,
    "DATA": (("failed", INJECTED + "DATA"),) * 2,
    # The relay may have it: resent once, never failed. The reminder, for the same invite
    # UID, waits (queued, no attempt counted) until the confirmation settles.
    "final dot": (("retrying", UNKNOWN), ("queued", "")),
    # The relay said 250: recorded as sent although recording hit a bug.
    "record": (("sent", "250"),) * 2,
}


@pytest.mark.parametrize("step", list(EXPECTED))
def test_an_error_at_any_step_after_the_claim_settles_the_message(
    step: str, service: Callable[..., Service], sink: Sink, monkeypatch: pytest.MonkeyPatch
) -> None:
    svc = service()
    [key] = svc.ingest(created("evt-1", "REG-1", person(1)))
    [reminder_key] = svc.ingest(reminder("rem-1", "b1"))  # prepared against its seat at send time
    _inject(step, monkeypatch)
    svc.deliver([key, reminder_key])
    got = []
    for k in (key, reminder_key):
        record = svc.outbox.get(k)
        assert record is not None
        got.append((record.state, record.last_reply[: len(EXPECTED[step][0][1])]))
        assert record.attempts == (0 if record.state == "queued" else 1)
    assert tuple(got) == tuple(
        (state, reply[: len(EXPECTED[step][0][1])]) for state, reply in EXPECTED[step]
    )
    assert status(svc.r).counts["sending"] == 0
    assert svc.due() == []  # nothing for the sweeper to take back


def test_a_session_out_of_step_is_reopened_and_the_message_retried(
    service: Callable[..., Service], sink: Sink, clock: Clock
) -> None:
    svc = service()
    sink.script.rcpt["deltager1@"] = "503 5.5.1 Error: need MAIL command"
    [key] = svc.ingest(created("evt-1", "REG-1", person(1)))
    svc.deliver([key])
    record = svc.outbox.get(key)
    assert record is not None
    # Tried again at once on a new connection, then put back: never failed for a 503.
    assert (record.state, record.attempts) == ("retrying", 1)
    assert record.last_reply == "503 5.5.1 Error: need MAIL command"
    assert sink.connections == 2
    del sink.script.rcpt["deltager1@"]
    clock.advance(1)
    svc.deliver(svc.due())
    done = svc.outbox.get(key)
    assert done is not None and (done.state, done.attempts) == ("sent", 2)


def test_no_reply_to_the_final_dot_resends_once_then_unknown(
    service: Callable[..., Service], sink: Sink, clock: Clock
) -> None:
    svc = service(smtp_timeout_seconds="0.5", smtp_data_timeout_seconds="0.5")
    sink.script.late_reply = 1.0  # the relay stores the message, then answers too late
    [key] = svc.ingest(created("evt-1", "REG-1", person(1)))
    svc.deliver([key])
    first = svc.outbox.get(key)
    assert first is not None and (first.state, first.attempts) == ("retrying", 1)
    clock.advance(1)
    svc.deliver(svc.due())
    clock.advance(60)
    assert svc.due() == []  # never a third copy
    record = svc.outbox.get(key)
    assert record is not None
    assert (record.state, record.attempts, record.last_reply) == (
        "unknown",
        2,
        "delivery unknown: no reply to the final dot within 0.5 s",
    )
    st = status(svc.r)
    assert (st.counts["unknown"], st.counts["failed"], len(st.unknown)) == (1, 0, 1)
    sink.wait_for(2, timeout=10)
    ids = {message_from_bytes(r.data, policy=policy.default)["Message-ID"] for r in sink.received}
    assert len(sink.received) == 2 and len(ids) == 1


def test_a_slow_final_dot_within_its_own_timeout_is_sent_once(
    service: Callable[..., Service], sink: Sink
) -> None:
    # The transaction's timeout (0.5 s) does not cover the wait for the final dot's reply.
    svc = service(smtp_timeout_seconds="0.5", smtp_data_timeout_seconds="10")
    sink.script.delay = 1.0
    [key] = svc.ingest(created("evt-1", "REG-1", person(1)))
    svc.deliver([key])
    record = svc.outbox.get(key)
    assert record is not None and (record.state, record.attempts) == ("sent", 1)
    assert len(sink.received) == 1


def test_a_long_send_keeps_its_claim(
    make_settings: Callable[..., Settings], sink: Sink, redis_client: redis.Redis
) -> None:
    """While a send waits for the final dot, its lease is renewed: no other worker may take
    the message over and send it again. Redis's own clock: the lease runs out in real time."""
    settings = make_settings(
        smtp_timeout_seconds="1", claim_lease_seconds="2", smtp_data_timeout_seconds="20"
    )
    svc = Service(settings, redis_client)
    [key] = svc.ingest(created("evt-1", "REG-1", person(1)))
    sink.script.delay = 5.0
    sending = threading.Thread(target=svc.deliver, args=([key],))
    sending.start()
    try:
        sink.wait_for(1, timeout=10)  # the relay has it and keeps us waiting for its reply
        first_lease = float(redis_client.hget(keys.message(key), "lease_until") or 0)
        wait_for(lambda: _redis_now(redis_client) > first_lease + 0.5, 10, "the first lease")
        other_worker = Outbox(redis_client, lease_seconds=2)
        assert other_worker.claim(key) is None
    finally:
        sending.join(30)
        svc.close()
    record = svc.outbox.get(key)
    assert record is not None and (record.state, record.attempts) == ("sent", 1)
    assert len(sink.received) == 1


def _redis_now(client: redis.Redis) -> float:
    seconds, micros = client.time()
    return float(seconds) + micros / 1e6


def test_an_organiser_with_a_non_ascii_domain_is_delivered(
    service: Callable[..., Service], sink: Sink, tmp_path: Path
) -> None:
    confs = tmp_path / "conferences"
    shutil.copytree(ROOT / "conferences", confs)
    conf = confs / "digitaliseringstraef-2024.toml"
    text = conf.read_text(encoding="utf-8")
    conf.write_text(
        text.replace(
            'email = "arrangementsinfo@kl.dk"', 'email = "arrangementer@kommunernes-træf.dk"'
        ),
        encoding="utf-8",
    )
    svc = service(conferences_dir=str(confs))
    [key] = svc.ingest(created("evt-1", "REG-1", person(1)))
    svc.deliver([key])
    record = svc.outbox.get(key)
    assert record is not None and record.state == "sent"
    a_label = "arrangementer@" + idna.encode("kommunernes-træf.dk", uts46=True).decode()
    [got] = sink.received
    assert got.sender == a_label
    mail = message_from_bytes(got.data, policy=policy.default)
    assert mail["From"].addresses[0].addr_spec == a_label


def test_sessions_never_interleave_after_a_unit_fails(
    service: Callable[..., Service], sink: Sink, clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An error escaping one unit cancels its siblings mid-transaction; the next run must
    find every session in step (aiosmtpd answers 503 to a nested MAIL)."""
    svc = service(smtp_connections="4")
    message_keys = [k for i in range(12) for k in svc.ingest(created(f"e{i}", f"R{i}", person(i)))]
    sink.script.delay = 0.2
    real = Delivery._claimed
    calls = 0

    async def flaky(self: Delivery, sender: Any, claim: Any) -> None:
        nonlocal calls
        calls += 1
        if calls == 6:  # while four sessions are in the middle of DATA
            raise Injected("injected: a unit fails")
        await real(self, sender, claim)

    monkeypatch.setattr(Delivery, "_claimed", flaky)
    with pytest.raises(Injected):
        svc.deliver(message_keys)
    monkeypatch.undo()
    sink.script.delay = 0.0
    clock.advance(svc.outbox.lease + 1)  # claims cut short are taken over
    svc.deliver(message_keys)
    records = svc.outbox.records(message_keys)
    assert [r.state for r in records] == ["sent"] * 12, [r.last_reply for r in records]
    assert max(r.attempts for r in records) <= 2


def test_a_store_error_halts_the_run_but_lets_sends_under_way_finish(
    service: Callable[..., Service], sink: Sink, monkeypatch: pytest.MonkeyPatch
) -> None:
    svc = service(smtp_connections="4")
    message_keys = [k for i in range(12) for k in svc.ingest(created(f"e{i}", f"R{i}", person(i)))]
    sink.script.delay = 0.2
    real = AsyncOutbox.claim
    calls = 0

    async def flaky(self: AsyncOutbox, key: str) -> Any:
        nonlocal calls
        calls += 1
        if calls == 6:
            raise redis.ConnectionError("injected: connection lost")
        return await real(self, key)

    monkeypatch.setattr(AsyncOutbox, "claim", flaky)
    with pytest.raises(StoreUnavailable, match="ConnectionError"):
        svc.deliver(message_keys)
    monkeypatch.undo()
    states = [r.state for r in svc.outbox.records(message_keys)]
    # The five claimed before the error were sent and recorded; none was cut off.
    assert (states.count("sent"), states.count("sending"), states.count("queued")) == (5, 0, 7)
    sink.script.delay = 0.0
    svc.deliver(message_keys)  # the task's retry
    assert [r.state for r in svc.outbox.records(message_keys)] == ["sent"] * 12
    assert len(sink.received) == 12
