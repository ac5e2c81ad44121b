"""`--json` of status, remind and update: one JSON document on stdout, notes on stderr, the
exit statuses of the table output. Against the tests' Redis, with messages delivered to the
aiosmtpd sink by a Service in the test (the batches are planned and sent before the command
follows them, so no worker is needed: `remind` and `update` publish and find them done)."""

from __future__ import annotations

import base64
import json
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import redis
from click.testing import CliRunner, Result

from devtools.sink import Sink
from notifier.cli import main
from notifier.service import Service
from notifier.store import keys
from notifier.tasks import INGEST, QUEUE
from tests.conferences import announce, conference_copy
from tests.conftest import TEST_REDIS_URL
from tests.events import CONFERENCE, cancelled, created, person, reminder

pytestmark = pytest.mark.integration

ENV = {"NOTIFIER_BROKER_URL": TEST_REDIS_URL}


def run(args: list[str], env: dict[str, str] = ENV) -> tuple[Result, dict[str, Any]]:
    """The command's result and its stdout parsed as one JSON document (json.loads fails
    on anything else there: a table, a progress bar, a second document)."""
    result = CliRunner().invoke(main, args, env=env)
    assert result.exception is None or isinstance(result.exception, SystemExit), result.output
    document: dict[str, Any] = json.loads(result.stdout)
    return result, document


@contextmanager
def taking_events(svc: Service, client: redis.Redis) -> Iterator[None]:
    """Stands in for a worker while the command runs: takes each ingest task the command
    publishes off the real queue, ingests it and delivers its messages with `svc`."""
    stop = threading.Event()

    def work() -> None:
        while not stop.is_set():
            popped = client.brpop([QUEUE], timeout=0.1)
            if popped is None:
                continue
            message = json.loads(popped[1])
            assert message["headers"]["task"] == INGEST
            event = json.loads(base64.b64decode(message["body"]))[0][0]
            svc.deliver(svc.ingest(event))

    thread = threading.Thread(target=work, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(10)


@pytest.fixture
def delivered(service: Callable[..., Service], sink: Sink) -> Service:
    """Three confirmations: two sent, one refused for good (5xx)."""
    sink.script.rcpt["refused"] = "550 5.1.1 no such user"
    svc = service()
    for i in range(2):
        svc.deliver(svc.ingest(created(f"e{i}", f"R{i}", person(i))))
    svc.deliver(svc.ingest(created("e2", "R2", person(2, domain="refused.example.dk"))))
    return svc


def test_status_json_counts_and_lists_the_failure(
    delivered: Service, redis_client: redis.Redis
) -> None:
    result, doc = run(["status", "--json"])
    assert result.exit_code == 0
    assert doc["batch"] is None
    assert doc["counts"]["sent"] == 2 and doc["counts"]["failed"] == 1
    assert (doc["total"], doc["finished"], doc["done"]) == (3, 3, True)
    # The organiser's own terminal: the address as the table shows it (documented in ops).
    assert doc["failures"] == [
        {
            "key": "e2:confirmation",
            "registration": "R2",
            "recipient": "deltager2@refused.example.dk",
            "attempts": 1,
            "reply": "550 5.1.1 no such user",
        }
    ]
    assert doc["unknown"] == doc["bounced"] == doc["suppressed"] == []


def test_status_json_shows_the_pacing_and_an_eta(
    delivered: Service, redis_client: redis.Redis
) -> None:
    redis_client.hset(keys.PACE, "rate", 0.25)
    _, doc = run(["status", "--json"])
    assert doc["pacing"] == {"cap": None, "learned_rate": 0.25, "paused_until": None}
    assert doc["eta_seconds"] == 0.0  # nothing left to send
    result = CliRunner().invoke(main, ["status"], env=ENV)
    assert "learned 0.25/s (learned from the relay)" in result.stdout


def test_status_json_of_an_unknown_batch_fails_as_before(redis_client: redis.Redis) -> None:
    result = CliRunner().invoke(main, ["status", "--json", "--batch", "nope"], env=ENV)
    assert result.exit_code == 1
    assert result.stdout == ""
    assert "nope" in result.stderr


def test_remind_json_summarises_the_batch_and_exits_1_on_a_failure(
    delivered: Service, redis_client: redis.Redis, sink: Sink
) -> None:
    svc = delivered
    planned = svc.ingest(reminder("remind:x", "reminder"))  # the batch `remind` asks for
    svc.deliver(svc.ingest(cancelled("c0", "R0")))  # after planning: its reminder is skipped
    svc.deliver(planned)
    result, doc = run(["remind", CONFERENCE, "--allow-past", "--json", "--timeout", "20"])
    assert result.exit_code == 1  # one reminder was refused, as without --json
    assert doc["batch"] == f"{CONFERENCE}:reminder" and doc["kind"] == "reminder"
    assert doc["done"] is True and doc["total"] == 3
    assert {s: doc["counts"][s] for s in ("sent", "failed", "skipped")} == {
        "sent": 1,
        "failed": 1,
        "skipped": 1,
    }
    assert [f["registration"] for f in doc["failures"]] == ["R2"]
    assert list(doc["skipped_reasons"].values()) == [1]
    assert "Requested batch" in result.stderr  # notes for a human go to stderr
    assert "· retrying" not in result.stderr  # and no progress bar anywhere
    assert redis_client.llen(QUEUE) == 1  # it did publish (no worker takes it here)


def test_remind_dry_run_json(delivered: Service, tmp_path: Path) -> None:
    out = tmp_path / "sample.eml"
    args = ["remind", CONFERENCE, "--allow-past", "--dry-run", "--json", "--out", str(out)]
    result, doc = run(args)
    assert result.exit_code == 0
    assert doc == {
        "conference": CONFERENCE,
        "dry_run": True,
        "recipients": 3,
        "not_sent": 0,
        "sample": str(out),
        "sample_registration": doc["sample_registration"],
    }
    assert out.exists()


def test_update_json_carries_the_forecast_and_the_summary(
    service: Callable[..., Service], sink: Sink, tmp_path: Path, redis_client: redis.Redis
) -> None:
    conf_file = conference_copy(tmp_path / "conferences")
    env = {**ENV, "NOTIFIER_CONFERENCES_DIR": str(conf_file.parent)}
    svc = service(conferences_dir=str(conf_file.parent))
    for i in range(2):
        svc.deliver(svc.ingest(created(f"e{i}", f"R{i}", person(i))))

    result, doc = run(["update", CONFERENCE, "--allow-past", "--json"], env=env)
    assert result.exit_code == 0
    assert doc["changed"] is False and doc["recipients"] == 0 and doc["sample"] is None
    assert redis_client.llen(QUEUE) == 0

    announce(conf_file, times=True)
    out = tmp_path / "sample.eml"
    dry = ["update", CONFERENCE, "--allow-past", "--dry-run", "--json", "--out", str(out)]
    result, doc = run(dry, env=env)
    assert result.exit_code == 0
    assert (doc["dry_run"], doc["changed"], doc["recipients"]) == (True, True, 2)
    [group] = doc["groups"]
    assert group["count"] == 2
    assert [c["aspect"] for c in group["changes"]] == ["time"]
    assert doc["sample"] == str(out) and out.exists()
    assert redis_client.llen(QUEUE) == 0


def test_update_json_follows_the_batch_a_worker_plans(
    service: Callable[..., Service], sink: Sink, tmp_path: Path, redis_client: redis.Redis
) -> None:
    conf_file = conference_copy(tmp_path / "conferences")
    env = {**ENV, "NOTIFIER_CONFERENCES_DIR": str(conf_file.parent)}
    svc = service(conferences_dir=str(conf_file.parent))
    for i in range(3):
        svc.deliver(svc.ingest(created(f"e{i}", f"R{i}", person(i))))
    svc.deliver(svc.ingest(cancelled("c2", "R2")))
    announce(conf_file, times=True)
    with taking_events(svc, redis_client):
        result, doc = run(["update", CONFERENCE, "--allow-past", "--json", "--timeout", "30"], env)
    assert result.exit_code == 0, result.stderr
    forecast = doc["forecast"]
    assert (forecast["changed"], forecast["recipients"]) == (True, 2)
    assert forecast["not_sent"] == {"registration cancelled": 1}
    assert forecast["event"].startswith(f"update:{CONFERENCE}:")
    assert doc["batch"] == f"{CONFERENCE}:update-1" and doc["kind"] == "update"
    assert doc["done"] is True and doc["counts"]["sent"] == 2 and doc["failures"] == []
    assert "Published update:" in result.stderr
