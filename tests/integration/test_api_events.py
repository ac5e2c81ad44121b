"""POST /v1/events and /v1/events/batch on a real uvicorn server and a real Redis (the store
and the broker): what is published, what is refused, and how."""

from __future__ import annotations

import base64
import copy
import http.client
import json
import logging
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis
from click.testing import CliRunner

from devtools.localredis import PrivateRedis
from notifier.api.body import MAX_BATCH_BODY, MAX_BODY
from notifier.cli import main
from notifier.settings import Settings
from notifier.store import keys
from notifier.tasks import INGEST, QUEUE
from tests.api_support import Api, api, make_token
from tests.events import created

pytestmark = pytest.mark.integration
__all__ = ["api"]


@pytest.fixture
def setup(
    api: Callable[[Settings], Api], make_settings: Callable[..., Settings], redis_client: Any
) -> tuple[Api, str]:
    a = api(make_settings())
    return a, make_token(a.settings, "ingest")


def queued(client: redis.Redis) -> list[dict[str, Any]]:
    """The events of the `notifier.ingest` tasks on the queue, oldest first."""
    found = []
    for raw in reversed(client.lrange(QUEUE, 0, -1)):
        message = json.loads(raw)
        assert message["headers"]["task"] == INGEST
        args, _, _ = json.loads(base64.b64decode(message["body"]))
        found.append(args[0])
    return found


def bad_email(event_id: str) -> dict[str, Any]:
    event = copy.deepcopy(created(event_id, "REG-9"))
    event["registration"]["attendee"]["email"] = "mette(at)aarhus.dk"
    return event


def test_accepted_once_then_duplicate(setup: tuple[Api, str], redis_client: redis.Redis) -> None:
    a, token = setup
    event = created("evt-http-1", "REG-1")
    first = a.call("POST", "/v1/events", event, token=token)
    assert (first.status, first.json()) == (202, {"id": "evt-http-1", "status": "accepted"})
    # The broker holds the task as a registration system would send it
    assert queued(redis_client) == [event]
    again = a.call("POST", "/v1/events", event, token=token)
    assert (again.status, again.json()["status"]) == (202, "duplicate")
    assert len(queued(redis_client)) == 1
    # An id the worker has applied (its event marker) is a duplicate too, never published
    redis_client.set(keys.event("evt-http-2"), "{}")
    applied = a.call("POST", "/v1/events", created("evt-http-2", "REG-2"), token=token)
    assert applied.json()["status"] == "duplicate"
    assert len(queued(redis_client)) == 1


def test_refusals_are_problems(setup: tuple[Api, str], redis_client: redis.Redis) -> None:
    a, token = setup
    event = created("evt-http-3", "REG-3")
    checks: list[tuple[int, str, Any]] = [
        (401, "unauthorized", a.call("POST", "/v1/events", event)),
        (401, "unauthorized", a.call("POST", "/v1/events", event, token="ntf_" + "x" * 43)),
        (
            401,
            "unauthorized",
            a.call("POST", "/v1/events", event, headers={"Authorization": f"Basic {token}"}),
        ),
        (
            415,
            "unsupported-media-type",
            a.call(
                "POST",
                "/v1/events",
                raw=json.dumps(event).encode(),
                token=token,
                headers={"Content-Type": "text/plain"},
            ),
        ),
        (
            413,
            "too-large",
            a.call(
                "POST",
                "/v1/events",
                raw=b" " * (MAX_BODY + 1),
                token=token,
                headers={"Content-Type": "application/json"},
            ),
        ),
        (422, "invalid-event", a.call("POST", "/v1/events", bad_email("evt-x"), token=token)),
        (
            422,
            "invalid-event",
            a.call(
                "POST",
                "/v1/events",
                raw=b"{",
                token=token,
                headers={"Content-Type": "application/json"},
            ),
        ),
    ]
    for status, kind, reply in checks:
        assert reply.status == status, (status, reply.body)
        assert reply.headers["content-type"] == "application/problem+json"
        problem = reply.json()
        assert problem["type"] == f"tag:kl.dk,2026:notifier/problem/{kind}"
        assert problem["status"] == status and problem["title"] and problem["detail"]
        if status == 401:
            assert reply.headers["www-authenticate"].startswith("Bearer")
    invalid = checks[5][2].json()
    assert invalid["errors"][0]["field"] == "registration.attendee.email"
    assert "mette(at)aarhus.dk" not in invalid["detail"]
    assert queued(redis_client) == []


def _chunked(a: Api, token: str, chunks: list[bytes]) -> int:
    """POST a body without Content-Length, in chunks; the status."""
    conn = http.client.HTTPConnection("127.0.0.1", a.port, timeout=30)
    try:
        conn.request(
            "POST",
            "/v1/events",
            body=iter(chunks),
            headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
            encode_chunked=True,
        )
        return conn.getresponse().status
    finally:
        conn.close()


def test_size_limit_holds_without_content_length(setup: tuple[Api, str]) -> None:
    a, token = setup
    assert _chunked(a, token, [b" " * 65536] * (MAX_BODY // 65536 + 1)) == 413
    event = json.dumps(created("evt-http-4", "REG-4")).encode()
    assert _chunked(a, token, [event[:20], event[20:]]) == 202


def test_batch_answers_per_item(setup: tuple[Api, str], redis_client: redis.Redis) -> None:
    a, token = setup
    a.call("POST", "/v1/events", created("evt-b0", "REG-0"), token=token)
    items = [
        created("evt-b0", "REG-0"),  # accepted before
        created("evt-b1", "REG-1"),
        bad_email("evt-b2"),
        created("evt-b3", "REG-3"),
        created("evt-b1", "REG-1"),  # the same id twice in one batch
        ["not an event"],
    ]
    reply = a.call("POST", "/v1/events/batch", {"events": items}, token=token)
    assert reply.status == 200
    got = reply.json()
    statuses = [(r["index"], r["id"], r["status"]) for r in got["results"]]
    assert statuses == [
        (0, "evt-b0", "duplicate"),
        (1, "evt-b1", "accepted"),
        (2, "evt-b2", "invalid"),
        (3, "evt-b3", "accepted"),
        (4, "evt-b1", "duplicate"),
        (5, None, "invalid"),
    ]
    assert got["results"][2]["errors"] == [
        {"field": "registration.attendee.email", "reason": got["results"][2]["errors"][0]["reason"]}
    ]
    assert (got["accepted"], got["duplicate"], got["invalid"]) == (2, 2, 2)
    assert [e["id"] for e in queued(redis_client)] == ["evt-b0", "evt-b1", "evt-b3"]


def test_batch_limits(setup: tuple[Api, str]) -> None:
    a, token = setup
    many = [created(f"evt-m{i}", f"REG-{i}") for i in range(1001)]
    reply = a.call("POST", "/v1/events/batch", {"events": many}, token=token)
    assert (reply.status, reply.json()["errors"][0]["field"]) == (422, "events")
    wrapped = a.call("POST", "/v1/events/batch", many[:2], token=token)
    assert wrapped.status == 422
    huge = b'{"events": ["' + b"x" * MAX_BATCH_BODY + b'"]}'
    reply = a.call(
        "POST",
        "/v1/events/batch",
        raw=huge,
        token=token,
        headers={"Content-Type": "application/json"},
    )
    assert reply.status == 413


def test_a_full_batch_of_the_largest_events_fits(setup: tuple[Api, str]) -> None:
    a, token = setup
    event = created("evt-big-0", "REG-0")
    # Padded with spaces in the organisation to just under 16 KiB each
    event["registration"]["attendee"] = {**event["registration"]["attendee"]}
    base = len(json.dumps(event, ensure_ascii=False).encode())
    events = []
    for i in range(1000):
        e = copy.deepcopy(event)
        e["id"] = f"evt-big-{i:04d}"
        e["registration"]["attendee"]["organisation"] = "K" + " " * (16_300 - base) + "K"
        events.append(e)
    reply = a.call("POST", "/v1/events/batch", {"events": events}, token=token, timeout=120)
    assert reply.status == 200, reply.body[:300]
    assert {r["status"] for r in reply.json()["results"]} <= {"accepted", "invalid"}


@pytest.fixture
def broker(private_redis: Callable[..., PrivateRedis]) -> Iterator[PrivateRedis]:
    """A broker of its own (the store stays the session's Redis), to stop and start."""
    yield private_redis()


def test_broker_down_is_503_and_nothing_is_marked(
    api: Callable[[Settings], Api],
    make_settings: Callable[..., Settings],
    redis_client: redis.Redis,
    redis_url: str,
    broker: PrivateRedis,
) -> None:
    settings = make_settings(broker_url=broker.url, REDIS_URL=redis_url)  # not the factory arg
    a = api(settings)
    token = make_token(settings, "ingest")
    broker.stop()
    event = created("evt-down-1", "REG-1")
    reply = a.call("POST", "/v1/events", event, token=token)
    assert reply.status == 503
    assert int(reply.headers["retry-after"]) > 0
    assert reply.json()["type"] == "tag:kl.dk,2026:notifier/problem/unavailable"
    assert not redis_client.exists(keys.accepted("evt-down-1"))
    health = a.call("GET", "/v1/health")
    assert (health.status, health.json()["redis"], health.json()["broker"]) == (
        503,
        "ok",
        "unreachable",
    )
    assert health.json()["detail"] == "The broker (Redis) cannot be reached"
    broker.start()
    # The client retries with the same id
    reply = a.call("POST", "/v1/events", event, token=token)
    assert (reply.status, reply.json()["status"]) == (202, "accepted")
    assert queued(redis.Redis.from_url(broker.url)) == [event]
    assert a.call("GET", "/v1/health").json() == {"redis": "ok", "broker": "ok"}


def test_tokens_from_the_command_line(
    api: Callable[[Settings], Api],
    make_settings: Callable[..., Settings],
    redis_client: redis.Redis,
    redis_url: str,
) -> None:
    env = {"NOTIFIER_BROKER_URL": redis_url}
    a = api(make_settings())
    runner = CliRunner()
    made = runner.invoke(main, ["tokens", "create", "kl-tilmelding", "--scope", "ingest"], env=env)
    assert made.exit_code == 0, made.output
    token = made.output.splitlines()[-1]
    assert token.startswith("ntf_") and " " not in token
    # Only a digest is stored
    assert token.encode() not in b"".join(
        redis_client.dump(k) or b"" for k in redis_client.scan_iter()
    )
    event = created("evt-cli-1", "REG-1")
    assert a.call("POST", "/v1/events", event, token=token).status == 202
    listed = runner.invoke(main, ["tokens", "list"], env=env)
    assert "kl-tilmelding" in listed.output and "ingest" in listed.output
    assert token not in listed.output and token[4:20] not in listed.output
    twice = runner.invoke(main, ["tokens", "create", "kl-tilmelding", "--scope", "ingest"], env=env)
    assert twice.exit_code != 0
    revoked = runner.invoke(main, ["tokens", "revoke", "kl-tilmelding"], env=env)
    assert revoked.exit_code == 0
    # A revoked token stops working at once
    reply = a.call("POST", "/v1/events", created("evt-cli-2", "REG-2"), token=token)
    assert reply.status == 401
    listed = runner.invoke(main, ["tokens", "list"], env=env)
    line = next(x for x in listed.output.splitlines() if x.startswith("kl-tilmelding"))
    assert line.rstrip().endswith("UTC")  # the revocation time
    assert runner.invoke(main, ["tokens", "revoke", "kl-tilmelding"], env=env).exit_code != 0


class Lines(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))


def test_access_log_has_paths_only(setup: tuple[Api, str]) -> None:
    a, token = setup
    lines = Lines()
    access = logging.getLogger("uvicorn.access")
    access.addHandler(lines)
    try:
        event = created("evt-log-1", "REG-1")
        a.call("POST", "/v1/events?token=secret-in-query", event, token=token)
        a.call("POST", "/v1/events", event, token="ntf_wrong-token")
    finally:
        access.removeHandler(lines)
    assert len(lines.lines) == 2
    text = "\n".join(lines.lines)
    assert '"POST /v1/events HTTP/1.1" 202' in text
    for secret in (token, "ntf_wrong-token", "secret-in-query", "Bearer", "Mette", "aarhus.dk"):
        assert secret not in text
