"""What the API, the CLI and the console say is true (issue 23), on the app `notifier serve`
runs (create_app through uvicorn_config), a real uvicorn and real redis-servers: the tests'
one, and private ones made full (maxmemory) or read-only (a replica)."""

from __future__ import annotations

import copy
import json
import logging
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest
import redis
from click.testing import CliRunner
from prometheus_client.parser import text_string_to_metric_families

from devtools.localredis import PrivateRedis
from devtools.sink import free_port
from notifier.api import registrations
from notifier.cli import main
from notifier.settings import Settings
from notifier.store import keys
from notifier.store.batches import Batches
from notifier.store.outbox import Outbox
from notifier.store.roster import Roster
from tests.api_support import Api, api, make_token
from tests.conftest import wait_for
from tests.console_support import Client, folder, organiser, server
from tests.events import CONFERENCE, created
from tests.integration.test_api_events import queued

pytestmark = pytest.mark.integration
__all__ = ["api", "folder", "organiser", "server"]

BASE = f"/v1/conferences/{CONFERENCE}"


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    found = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            found[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return found


def planning_batch(client: redis.Redis, batch_id: str, so_far: int) -> str:
    """A reminder batch a worker is still planning, with `so_far` messages queued."""
    outbox = Outbox(client)
    store = Batches(client, outbox, Roster(client, outbox))
    info = store.open(CONFERENCE, batch_id, datetime.now(UTC), 0.0)
    client.hset(keys.batch_counts(info.key), "queued", so_far)
    return info.key


# -- /metrics ------------------------------------------------------------------------------


def test_metrics_of_the_served_app_count_requests_by_route_and_refusals(
    server: Api, redis_client: redis.Redis
) -> None:
    token = make_token(server.settings, "organiser")
    secret_id = "REG-mette.sorensen"
    assert server.call("GET", f"{BASE}/registrations/{secret_id}", token=token).status == 404
    bad = copy.deepcopy(created("evt-bad", "REG-1"))
    bad["registration"]["attendee"]["email"] = "not an address"
    assert server.call("POST", "/v1/events", bad, token=token).status == 422
    good = created("evt-good", "REG-2")
    for _ in range(2):
        assert server.call("POST", "/v1/events", good, token=token).status == 202
    redis_client.zadd(keys.WEBHOOK_DUE, {"msg_1": 1.0, "msg_2": 2.0})
    reply = server.call("GET", "/metrics")
    assert reply.status == 200
    found = samples(reply.body.decode())
    route = "/v1/conferences/{slug}/registrations/{registration}"
    labels = (("method", "GET"), ("route", route), ("status", "4xx"))
    assert found[("notifier_api_requests_total", labels)] == 1
    latency = (("method", "POST"), ("route", "/v1/events"))
    assert found[("notifier_api_request_duration_seconds_count", latency)] == 3
    assert found[("notifier_api_events_total", (("outcome", "refused"),))] == 1
    assert found[("notifier_api_events_total", (("outcome", "duplicate"),))] == 1
    assert found[("notifier_webhook_backlog", ())] == 2
    assert "mette" not in reply.body.decode().lower()


def test_a_finished_batch_keeps_its_series_for_a_day_only(
    server: Api, redis_client: redis.Redis
) -> None:
    key = planning_batch(redis_client, "old-round", 0)
    redis_client.hset(keys.batch(key), mapping={"state": "planned", "total": 1})
    redis_client.hset(keys.batch_counts(key), mapping={"queued": 0, "sent": 1})
    labels = (("batch", "old-round"), ("conference", CONFERENCE), ("kind", "reminder"))
    series = ("notifier_batch_finished_messages", labels)
    first = samples(server.call("GET", "/metrics").body.decode())
    assert first[series] == 1  # done: shown, and stamped finished now
    assert redis_client.hget(keys.batch(key), "finished_at") is not None
    redis_client.hset(keys.batch(key), "finished_at", 1.0)  # finished long ago
    later = samples(server.call("GET", "/metrics").body.decode())
    assert series not in later


# -- strict input --------------------------------------------------------------------------


def test_a_string_for_a_boolean_is_refused_and_nothing_starts(
    server: Api, redis_client: redis.Redis
) -> None:
    token = make_token(server.settings, "organiser")
    body = {"dry_run": "no", "allow_past": "yes"}
    reply = server.call("POST", f"{BASE}/reminders", body, token=token)
    assert reply.status == 422
    assert reply.headers["content-type"] == "application/problem+json"
    assert {e["field"] for e in reply.json()["errors"]} == {"dry_run", "allow_past"}
    assert queued(redis_client) == []
    update = server.call("POST", f"{BASE}/updates", {"dry_run": 0}, token=token)
    assert (update.status, update.json()["errors"][0]["field"]) == (422, "dry_run")


def test_a_batch_answers_per_item_and_keeps_the_valid_ones(
    server: Api, redis_client: redis.Redis
) -> None:
    token = make_token(server.settings, "ingest")
    twice = json.dumps(created("evt-twice", "REG-1"))  # a client that encodes twice
    items = [created("evt-a", "REG-2"), twice, None, 7, created("evt-b", "REG-3")]
    reply = server.call("POST", "/v1/events/batch", {"events": items}, token=token)
    assert reply.status == 200, reply.body
    doc = reply.json()
    assert [r["status"] for r in doc["results"]] == [
        "accepted",
        "invalid",
        "invalid",
        "invalid",
        "accepted",
    ]
    reason = doc["results"][1]["errors"][0]["reason"]
    assert "encoded as JSON twice" in reason
    assert [e["id"] for e in queued(redis_client)] == ["evt-a", "evt-b"]


# -- honest state --------------------------------------------------------------------------


def test_a_batch_being_planned_has_no_total_anywhere(
    server: Api, organiser: Client, redis_client: redis.Redis
) -> None:
    key = planning_batch(redis_client, "round-9", 134)
    token = make_token(server.settings, "organiser")
    progress = server.call("GET", f"{BASE}/batches/round-9", token=token).json()
    assert (progress["state"], progress["total"], progress["done"]) == ("planning", None, False)
    assert progress["counts"]["queued"] == 134
    env = {"NOTIFIER_BROKER_URL": server.settings.redis_url}
    result = CliRunner().invoke(main, ["status", "--json", "--batch", key], env=env)
    doc = json.loads(result.output)
    assert (doc["state"], doc["total"]) == ("planning", None)
    table = CliRunner().invoke(main, ["status", "--batch", key], env=env)
    assert "planning: 134 so far" in table.output
    page = organiser.get(f"/conferences/{CONFERENCE}/batches/round-9").body.decode()
    assert 'Planlægges: <span data-field="so_far">134</span> mails indtil videre' in page
    assert '<progress data-field="bar"' in page  # no value: an indeterminate bar
    assert "af 0" not in page
    polled = organiser.get(f"/conferences/{CONFERENCE}/batches/round-9/progress").json()
    assert (polled["state"], polled["total"], polled["so_far"]) == ("planning", None, 134)


def test_the_console_shows_the_pace_the_relay_allows_and_an_eta(
    organiser: Client, redis_client: redis.Redis
) -> None:
    planning_batch(redis_client, "round-8", 90)
    redis_client.hset(keys.PACE, "rate", 0.5)  # the relay throttled: 30 a minute learned
    page = organiser.get(f"/conferences/{CONFERENCE}/batches/round-8").body.decode()
    assert "Forventet færdig om ca. 4 min. Mailserveren tager imod ca. 30 mails i minuttet." in page
    polled = organiser.get(f"/conferences/{CONFERENCE}/batches/round-8/progress").json()
    assert polled["pace"].startswith("Forventet færdig om ca. 4 min.")
    redis_client.delete(keys.PACE)
    polled = organiser.get(f"/conferences/{CONFERENCE}/batches/round-8/progress").json()
    assert polled["pace"] == ""  # unpaced and nothing sent yet: nothing to tell


def test_personal_data_is_not_cached(server: Api, redis_client: redis.Redis) -> None:
    token = make_token(server.settings, "organiser")
    reply = server.call("GET", f"{BASE}/registrations/REG-1", token=token)
    assert reply.headers["cache-control"] == "no-store"
    assert server.call("GET", "/static/console.css").headers["cache-control"] == "max-age=300"


def _fill(client: redis.Redis) -> None:
    """Every write refused from now on: the ballast is written in small pieces (one large
    SET would leave a query buffer that Redis frees later, ending the OOM by itself)."""
    for _ in range(100):
        client.append("ballast", b"x" * 10_000)
    client.config_set("maxmemory-policy", "noeviction")
    client.config_set("maxmemory", client.info("memory")["used_memory"] - 500_000)
    with pytest.raises(redis.exceptions.OutOfMemoryError):
        client.set("probe", 1)


def test_health_says_when_the_store_is_full_read_only_or_gone(
    api: Callable[[Settings], Api],
    make_settings: Callable[..., Settings],
    private_redis: Callable[..., PrivateRedis],
) -> None:
    store, primary = private_redis(), private_redis()
    a = api(make_settings(store.url))
    ok = a.call("GET", "/v1/health")
    assert (ok.status, ok.json()) == (200, {"redis": "ok", "broker": "ok"})
    client = redis.Redis.from_url(store.url)
    token = make_token(a.settings, "ingest")
    _fill(client)
    assert client.ping()  # a PING still answers
    full = a.call("GET", "/v1/health")
    assert (full.status, full.json()["redis"]) == (503, "full")
    assert "full" in full.json()["detail"] and full.headers["retry-after"]
    event = a.call("POST", "/v1/events", created("evt-1", "REG-1"), token=token)
    assert event.status == 503 and "full" in event.json()["detail"]
    client.config_set("maxmemory", 0)
    client.replicaof("127.0.0.1", primary.port)
    wait_for(lambda: a.call("GET", "/v1/health").json()["redis"] == "read-only", 20, "read-only")
    assert "read-only" in a.call("GET", "/v1/health").json()["detail"]
    client.close()
    gone = api(make_settings(f"redis://127.0.0.1:{free_port()}/0")).call("GET", "/v1/health")
    assert (gone.status, gone.json()["redis"]) == (503, "unreachable")
    assert "cannot be reached" in gone.json()["detail"]


def test_an_unexpected_error_is_a_logged_problem_without_personal_data(
    server: Api, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    secret = "Mette Sørensen <mette.sorensen@aarhus.dk>"  # what an error's message may hold

    def broken(*args: object) -> None:
        raise RuntimeError(secret)

    monkeypatch.setattr(registrations, "registration_view", broken)
    monkeypatch.setattr("notifier.api.conferences.registration_view", broken)
    token = make_token(server.settings, "organiser")
    with caplog.at_level(logging.ERROR, logger="notifier.api"):
        reply = server.call("GET", f"{BASE}/registrations/REG-1", token=token)
    assert reply.status == 500
    assert reply.headers["content-type"] == "application/problem+json"
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert "Traceback" in logged and "in broken" in logged and "RuntimeError" in logged
    assert "Mette" not in logged and "aarhus" not in logged


def test_the_served_document_states_the_limits_and_problem_media(
    server: Api, tmp_path: Path
) -> None:
    doc = server.call("GET", "/openapi.json").json()
    attendee = doc["components"]["schemas"]["Attendee"]["properties"]
    assert attendee["name"]["maxLength"] == 200 and attendee["name"]["minLength"] == 1
    assert attendee["email"]["format"] == "email" and "pattern" in attendee["name"]
    assert "16384 bytes" in doc["components"]["schemas"]["Event"]["description"]
    for path, operations in doc["paths"].items():
        for method, operation in operations.items():
            for code, response in operation["responses"].items():
                if code.startswith(("4", "5")) and path != "/v1/health":
                    assert list(response["content"]) == ["application/problem+json"], (
                        method,
                        path,
                        code,
                    )
