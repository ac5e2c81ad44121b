"""GET /metrics scraped from a real uvicorn serving the app `notifier serve` serves
(create_app, through uvicorn_config), over the tests' Redis, after real ingest and real
deliveries to the aiosmtpd sink; parsed with prometheus_client's own parser."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import httpx
import pytest
import redis
from prometheus_client.parser import text_string_to_metric_families

from devtools.sink import Sink, free_port
from notifier.service import Service
from notifier.settings import Settings
from notifier.store import keys
from notifier.tasks import INGEST, QUEUE, create_app
from tests.api_support import Api
from tests.conftest import Clock
from tests.events import METTE, created, person, reminder

pytestmark = pytest.mark.integration

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


@contextmanager
def serving(settings: Settings) -> Iterator[str]:
    """The app of `notifier serve` on a real uvicorn on a free loopback port; its URL."""
    api = Api(settings).start()
    try:
        yield f"http://127.0.0.1:{api.port}"
    finally:
        api.stop()


def scrape(url: str) -> tuple[Samples, httpx.Response]:
    response = httpx.get(f"{url}/metrics", timeout=10)
    assert response.status_code == 200
    samples: Samples = {}
    for family in text_string_to_metric_families(response.text):
        for s in family.samples:
            samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return samples, response


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples[(name, tuple(sorted(labels.items())))]


def events(samples: Samples) -> dict[tuple[str, str], float]:
    """(type, outcome) -> count."""
    found = {}
    for (name, labels), v in samples.items():
        if name == "notifier_events_total":
            found[(dict(labels)["type"], dict(labels)["outcome"])] = v
    return found


def by_class(samples: Samples) -> dict[str, float]:
    return {
        dict(labels)["class"]: v
        for (name, labels), v in samples.items()
        if name == "notifier_smtp_replies_total"
    }


def test_a_scrape_reports_what_redis_holds(
    service: Callable[..., Service],
    make_settings: Callable[..., Settings],
    redis_url: str,
    redis_client: redis.Redis,
    sink: Sink,
    clock: Clock,
) -> None:
    svc = service(max_attempts="3")
    sink.script.rcpt["refused"] = "550 5.1.1 no such user"
    sink.script.rcpt["busy"] = "451 4.3.0 try again later"
    ok = svc.ingest(created("evt-1", "REG-1", METTE))
    assert svc.ingest(created("evt-1", "REG-1", METTE)) == ok  # the same id: a duplicate
    bad = svc.ingest(created("evt-2", "REG-2", person(2, domain="refused.example.dk")))
    busy = svc.ingest(created("evt-3", "REG-3", person(3, domain="busy.example.dk")))
    svc.ingest({"id": "evt-4", "type": "registration.created", "conference": "nope"})
    svc.ingest({"id": "evt-5", "type": "mette.sorensen@aarhus.dk"})  # never a label
    svc.deliver(ok + bad + busy)
    svc.ingest(reminder("evt-6", "round-1"))  # planned; its 3 messages stay queued
    svc.ingest(created("evt-7", "REG-7", person(7)))  # queued, never sent
    app = create_app(make_settings(redis_url))
    try:  # two tasks on the queue that no worker takes
        for n in (8, 9):
            app.send_task(INGEST, args=[created(f"evt-{n}", f"REG-{n}")], queue=QUEUE)
    finally:
        app.close()
    queued_at = clock().timestamp()  # the store clock the service queued its messages on

    with serving(make_settings(redis_url)) as url:
        samples, response = scrape(url)

    assert response.headers["content-type"].startswith("text/plain; version=")
    assert value(samples, "notifier_redis_up") == 1
    assert value(samples, "notifier_broker_up") == 1
    messages = {s: value(samples, "notifier_messages", state=s) for s in ("sent", "failed")}
    assert messages == {"sent": 1, "failed": 1}
    assert value(samples, "notifier_messages", state="retrying") == 1
    assert value(samples, "notifier_messages", state="queued") == 4  # 3 reminders, evt-7
    assert events(samples) == {
        ("registration.created", "applied"): 4,
        ("registration.created", "duplicate"): 1,
        ("registration.created", "dead_letter"): 1,
        ("invalid", "dead_letter"): 1,
        ("reminder.requested", "applied"): 1,
    }
    assert by_class(samples) == {"2xx": 1, "4xx": 1, "5xx": 1, "unknown": 0}
    batch = {"conference": "digitaliseringstraef-2024", "batch": "round-1", "kind": "reminder"}
    assert value(samples, "notifier_batch_messages", **batch) == 3
    assert value(samples, "notifier_batch_finished_messages", **batch) == 0
    assert value(samples, "notifier_batch_planned", **batch) == 1
    assert value(samples, "notifier_queue_depth", queue=QUEUE) == 2
    age = value(samples, "notifier_oldest_waiting_message_age_seconds")
    assert abs(age - (time.time() - queued_at)) < 5
    for secret in ("mette", "Sørensen", "deltager", "aarhus", "refused.example"):
        assert secret.lower() not in response.text.lower()


def test_batch_progress_and_the_oldest_wait_follow_the_deliveries(
    service: Callable[..., Service],
    make_settings: Callable[..., Settings],
    redis_url: str,
    redis_client: redis.Redis,
    sink: Sink,
) -> None:
    svc = service()
    for n in range(3):
        svc.deliver(svc.ingest(created(f"evt-{n}", f"REG-{n}", person(n))))
    planned = svc.ingest(reminder("evt-r", "round-1"))
    batch = {"conference": "digitaliseringstraef-2024", "batch": "round-1", "kind": "reminder"}
    with serving(make_settings(redis_url)) as url:
        before, _ = scrape(url)
        svc.deliver(planned[:2])
        during, _ = scrape(url)
        svc.deliver(planned[2:])
        after, _ = scrape(url)
    progress = [
        value(s, "notifier_batch_finished_messages", **batch) for s in (before, during, after)
    ]
    assert progress == [0, 2, 3]
    assert value(after, "notifier_batch_messages", **batch) == 3
    assert value(before, "notifier_oldest_waiting_message_age_seconds") > 0
    assert value(after, "notifier_oldest_waiting_message_age_seconds") == 0
    assert by_class(after)["2xx"] == 6
    assert value(after, "notifier_batch_eta_seconds", **batch) == 0


def test_the_pacing_is_a_gauge(
    service: Callable[..., Service],
    make_settings: Callable[..., Settings],
    redis_url: str,
    redis_client: redis.Redis,
) -> None:
    svc = service()
    for n in range(2):
        svc.ingest(created(f"evt-{n}", f"REG-{n}", person(n)))
    svc.ingest(reminder("evt-r", "round-1"))  # planned, nothing sent
    redis_client.hset(keys.PACE, "rate", 0.5)
    batch = {"conference": "digitaliseringstraef-2024", "batch": "round-1", "kind": "reminder"}
    with serving(make_settings(redis_url, rate_limit="2")) as url:
        samples, _ = scrape(url)
    assert value(samples, "notifier_pacing_rate_per_second", source="cap") == 2
    assert value(samples, "notifier_pacing_rate_per_second", source="learned") == 0.5
    assert value(samples, "notifier_pacing_pause_seconds") == 0
    # 2 reminders (and 2 confirmations, not in the batch) at the lower of the two rates.
    assert value(samples, "notifier_batch_eta_seconds", **batch) == 4


def test_a_relay_that_cannot_be_reached_counts_as_unknown(
    service: Callable[..., Service],
    make_settings: Callable[..., Settings],
    redis_url: str,
    redis_client: redis.Redis,
) -> None:
    svc = service(smtp_port=str(free_port()))  # nothing listens there
    svc.deliver(svc.ingest(created("evt-1", "REG-1", METTE)))
    with serving(make_settings(redis_url)) as url:
        samples, _ = scrape(url)
    assert by_class(samples) == {"2xx": 0, "4xx": 0, "5xx": 0, "unknown": 1}
    assert value(samples, "notifier_messages", state="retrying") == 1


def test_the_scrape_answers_when_redis_is_down(make_settings: Callable[..., Settings]) -> None:
    closed = f"redis://127.0.0.1:{free_port()}/0"
    with serving(make_settings(closed)) as url:
        samples, response = scrape(url)
    assert value(samples, "notifier_redis_up") == 0
    assert value(samples, "notifier_broker_up") == 0
    # Of what is read from Redis only the two gauges are left; the API's own figures stay
    store = [name for name, _ in samples if not name.startswith("notifier_api_")]
    assert store == ["notifier_redis_up", "notifier_broker_up"]
    assert "127.0.0.1" not in response.text


def test_no_token_is_needed(make_settings: Callable[..., Settings], redis_url: str) -> None:
    # Documented choice (notifier/api/metrics.py): loopback or the proxy guards /metrics.
    with serving(make_settings(redis_url)) as url:
        response = httpx.get(f"{url}/metrics", headers={"Authorization": "Bearer wrong"})
    assert response.status_code == 200
