"""The organisers' endpoints on a real server and Redis; events are applied and sent by a
Service in the test (the worker's code, without Celery), as the integration tests do."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import redis

from notifier.service import Service
from notifier.settings import Settings
from notifier.store import keys
from notifier.store.outbox import Outbox
from notifier.store.suppressions import Suppressions
from tests.api_support import Api, api, make_token
from tests.conferences import announce, conference_copy
from tests.conftest import wait_for
from tests.events import CONFERENCE, JENS, METTE, created, substituted
from tests.integration.test_api_events import queued

pytestmark = pytest.mark.integration
__all__ = ["api"]

BASE = f"/v1/conferences/{CONFERENCE}"


class Org:
    def __init__(self, a: Api, token: str) -> None:
        self.a, self.token = a, token

    def get(self, path: str) -> Any:
        return self.a.call("GET", BASE + path, token=self.token)

    def post(self, path: str, body: Any) -> Any:
        return self.a.call("POST", BASE + path, body, token=self.token)


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    conference_copy(tmp_path / "conferences")
    return tmp_path / "conferences"


@pytest.fixture
def org(
    api: Callable[[Settings], Api],
    make_settings: Callable[..., Settings],
    redis_client: redis.Redis,
    folder: Path,
) -> Org:
    a = api(make_settings(conferences_dir=str(folder)))
    return Org(a, make_token(a.settings, "organiser"))


def test_registration_shows_seat_history_and_every_message(
    org: Org, service: Callable[..., Service], redis_client: redis.Redis, folder: Path
) -> None:
    svc = service(conferences_dir=str(folder))
    svc.deliver(svc.ingest(created("evt-1", "REG-1")))
    svc.deliver(svc.ingest(substituted("evt-2", "REG-1", METTE, JENS)))
    reply = org.get("/registrations/REG-1")
    assert reply.status == 200, reply.body
    got = reply.json()
    seat = got["seat"]
    assert (seat["attendee"]["name"], seat["status"]) == (JENS["name"], "active")
    assert [f["kind"] for f in seat["history"]] == ["created", "substituted"]
    assert seat["history"][1]["previous"]["email"] == METTE["email"]
    kinds = sorted(m["kind"] for m in got["messages"])
    assert kinds == ["confirmation", "substitution_copy", "substitution_in", "substitution_out"]
    for m in got["messages"]:
        assert m["state"] == "sent" and m["attempts"] == 1
        assert m["last_reply"].startswith("250")
        assert m["created_at"] and m["updated_at"]
        assert m["bounce"] is None and m["suppression_reason"] is None
    # A bounce after the relay's 250 shows on its message
    confirmation = next(m for m in got["messages"] if m["kind"] == "confirmation")
    Outbox(redis_client).bounce(confirmation["key"], "5.1.1", "user unknown", 1_712_000_000.0)
    bounced = next(
        m for m in org.get("/registrations/REG-1").json()["messages"] if m["kind"] == "confirmation"
    )
    assert bounced["state"] == "bounced"
    assert bounced["bounce"] == {
        "status": "5.1.1",
        "diagnostic": "user unknown",
        "at": "2024-04-01T19:33:20+00:00",
        "reason": None,  # recorded without one, as before reasons were
    }


def test_suppressed_message_names_the_reason(
    org: Org, service: Callable[..., Service], redis_client: redis.Redis, folder: Path
) -> None:
    Suppressions(redis_client).add(METTE["email"], "hard bounce 5.1.1", message=None, now=1.0)
    svc = service(conferences_dir=str(folder))
    svc.deliver(svc.ingest(created("evt-3", "REG-3")))
    [message] = org.get("/registrations/REG-3").json()["messages"]
    assert message["state"] == "suppressed"
    assert message["suppression_reason"] and "hard bounce 5.1.1" in message["suppression_reason"]


def test_unknown_registration_and_conference_are_404(org: Org) -> None:
    assert org.get("/registrations/REG-404").json()["type"].endswith("unknown-registration")
    reply = org.a.call("GET", "/v1/conferences/nope/registrations/R", token=org.token)
    assert (reply.status, reply.json()["type"]) == (
        404,
        "tag:kl.dk,2026:notifier/problem/unknown-conference",
    )


def test_ingest_tokens_cannot_use_organiser_endpoints(org: Org) -> None:
    ingest = make_token(org.a.settings, "ingest")
    for method, path, body in (
        ("GET", "/registrations/REG-1", None),
        ("POST", "/reminders", {"dry_run": True, "allow_past": True}),
        ("POST", "/updates", {"dry_run": True, "allow_past": True}),
        ("GET", "/batches/reminder", None),
    ):
        reply = org.a.call(method, BASE + path, body, token=ingest)
        assert (reply.status, reply.json()["type"]) == (
            403,
            "tag:kl.dk,2026:notifier/problem/forbidden",
        )


def test_reminders_dry_run_request_and_progress(
    org: Org, service: Callable[..., Service], redis_client: redis.Redis, folder: Path
) -> None:
    svc = service(conferences_dir=str(folder))
    for i in range(3):
        svc.ingest(created(f"evt-r{i}", f"REG-{i}"))
    # The shipped conference took place in 2024
    past = org.post("/reminders", {})
    assert (past.status, past.json()["type"]) == (
        409,
        "tag:kl.dk,2026:notifier/problem/conference-past",
    )
    dry = org.post("/reminders", {"dry_run": True, "allow_past": True})
    assert (dry.status, dry.json()["recipients"]) == (200, 3)
    bad = org.post("/reminders", {"batch": "no spaces", "allow_past": True, "colour": 1})
    assert bad.status == 422
    assert {e["field"] for e in bad.json()["errors"]} == {"batch", "colour"}
    reply = org.post("/reminders", {"batch": "uge-16", "allow_past": True})
    assert reply.status == 202
    assert reply.json() == {"batch": f"{CONFERENCE}:uge-16", "url": f"{BASE}/batches/uge-16"}
    assert org.get("/batches/uge-16").json()["state"] == "requested"
    # Asked again: the same batch, not published twice
    assert org.post("/reminders", {"batch": "uge-16", "allow_past": True}).status == 202
    [event] = [e for e in queued(redis_client) if e["type"] == "reminder.requested"]
    assert event["id"] == f"remind:{CONFERENCE}:uge-16"
    # A worker plans it
    svc.ingest(event)
    progress = org.get("/batches/uge-16").json()
    assert (progress["state"], progress["total"], progress["done"]) == ("planned", 3, False)
    assert progress["counts"]["queued"] == 3
    assert progress["pacing"] == {"cap": None, "learned_rate": None, "paused_until": None}
    assert progress["eta_seconds"] is None  # unpaced, nothing sent yet: nothing tells
    # The relay throttled us: the learned rate and the ETA at it.
    redis_client.hset(keys.PACE, "rate", 0.5)
    progress = org.get("/batches/uge-16").json()
    assert progress["pacing"]["learned_rate"] == 0.5
    assert progress["eta_seconds"] == pytest.approx(6.0)
    assert org.get("/batches/other").status == 404


def test_cancelled_conference_refuses_reminders(org: Org, folder: Path) -> None:
    announce(folder / f"{CONFERENCE}.toml", cancelled=True)
    reply = org.post("/reminders", {"allow_past": True})
    assert (reply.status, reply.json()["type"]) == (
        409,
        "tag:kl.dk,2026:notifier/problem/conference-cancelled",
    )


def test_updates_forecast_and_nothing_changed(
    org: Org, service: Callable[..., Service], folder: Path, redis_client: redis.Redis
) -> None:
    svc = service(conferences_dir=str(folder))
    svc.deliver(svc.ingest(created("evt-u1", "REG-1")))
    assert org.post("/updates", {}).status == 409  # past, without allow_past
    same = org.post("/updates", {"allow_past": True})
    assert (same.status, same.json()["changed"]) == (200, False)
    announce(folder / f"{CONFERENCE}.toml", times=True)
    # The server reads the edited file again within a second
    plan = wait_for(
        lambda: (
            (r := org.post("/updates", {"dry_run": True, "allow_past": True}).json())["changed"]
            and r
        ),
        5,
        "the edit to be read",
    )
    assert (plan["changed"], plan["recipients"]) == (True, 1)
    assert plan["groups"][0]["changes"]
    assert not [e for e in queued(redis_client) if e["type"] == "conference.updated"]
