"""The console's admin pages on a real server and Redis: announcing a conference change
(forecast, confirmation, one `conference.updated` event), dead letters with replay, and the
suppression list with remove and add. Workers are played by the `service` fixture, which
applies the queued events with the worker's own code."""

from __future__ import annotations

import re
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import pytest
import redis

from notifier.console import deadletters
from notifier.service import Service
from notifier.store.deadletter import DeadLetters
from notifier.store.suppressions import Suppressions, hard_bounce_reason
from tests.api_support import api
from tests.conferences import announce
from tests.conftest import wait_for
from tests.console_support import Client, folder, form_for, forms, organiser, server
from tests.events import CONFERENCE, JENS, METTE, cancelled, created
from tests.integration.test_api_events import queued

pytestmark = pytest.mark.integration
__all__ = ["api", "folder", "organiser", "server"]

UPDATES = f"/conferences/{CONFERENCE}/updates"
TIME_LINE = "Tid: ikke meldt ud → kl.\u00a09.00–16.00"  # no break after "kl."
EVIL = "<script>alert('x')</script>"


@pytest.fixture
def svc(service: Callable[..., Service], folder: Path) -> Service:
    return service(conferences_dir=str(folder))


def events_of(client: redis.Redis, since: int) -> list[dict[str, Any]]:
    return queued(client)[since:]


# -- announcing a change ------------------------------------------------------------------


def two_invited(svc: Service) -> None:
    """Two attendees whose invites (all-day) went out."""
    for i, who in enumerate((METTE, JENS)):
        svc.deliver(svc.ingest(created(f"evt-u{i}", f"REG-U{i}", who)))


def changed_page(organiser: Client, text: str) -> str:
    """The update page once the server has read the edited file (within CHECK_SECONDS)."""

    def page() -> str:
        body = organiser.get(UPDATES).body.decode()
        return body if text in body else ""

    found: str = wait_for(page, 20, f"the update page to say {text!r}")
    return found


def test_update_page_shows_before_and_now_and_a_look_publishes_nothing(
    organiser: Client, svc: Service, folder: Path, redis_client: redis.Redis
) -> None:
    two_invited(svc)
    before = len(queued(redis_client))
    unchanged = organiser.get(UPDATES).body.decode()
    assert "Ingen ændringer at meddele" in unchanged
    assert not [f for f in forms(unchanged.encode()) if f["_action"] == UPDATES]  # no send
    announce(folder / f"{CONFERENCE}.toml", times=True)
    page = changed_page(organiser, TIME_LINE)
    assert re.search(r"data-recipients>2<", page)
    assert f"<li data-change>{TIME_LINE}</li>" in page
    assert re.search(r"<td data-count>2</td>", page)
    assert "Ingen ændringer" not in page and "aflysning" not in page
    assert len(queued(redis_client)) == before  # looking publishes nothing


def test_send_publishes_one_update_event_once_and_follows_it_to_the_batch(
    organiser: Client, svc: Service, folder: Path, redis_client: redis.Redis
) -> None:
    two_invited(svc)
    announce(folder / f"{CONFERENCE}.toml", times=True)
    confirm = form_for(changed_page(organiser, TIME_LINE).encode(), UPDATES)
    assert confirm["step"] == "send" and "allow_past" not in confirm
    before = len(queued(redis_client))
    past = organiser.post(UPDATES, confirm)  # 2024: past, and the box is not ticked
    assert past.status == 409 and "overstået" in past.body.decode()
    assert len(queued(redis_client)) == before
    confirm["allow_past"] = "1"
    replies = [organiser.post(UPDATES, confirm) for _ in range(2)]  # posted twice
    assert [r.status for r in replies] == [303, 303]
    events = events_of(redis_client, before)
    assert len(events) == 1, events
    [event] = events
    assert event["type"] == "conference.updated" and event["conference"] == CONFERENCE
    assert event["id"] == confirm["event"]
    status = replies[0].headers["location"]
    assert unquote(status) == f"{UPDATES}/{event['id']}"
    waiting = organiser.get(status)
    assert waiting.status == 200 and 'data-state="waiting"' in waiting.body.decode()
    svc.ingest(event)  # a worker plans the batch
    planned = organiser.get(status)
    assert planned.status == 303
    assert planned.headers["location"] == f"/conferences/{CONFERENCE}/batches/update-1"
    assert organiser.get(planned.headers["location"]).status == 200


def test_update_without_csrf_is_refused_and_publishes_nothing(
    organiser: Client, svc: Service, folder: Path, redis_client: redis.Redis
) -> None:
    two_invited(svc)
    announce(folder / f"{CONFERENCE}.toml", times=True)
    confirm = form_for(changed_page(organiser, TIME_LINE).encode(), UPDATES)
    confirm["allow_past"] = "1"
    before = len(queued(redis_client))
    for csrf in (None, "wrong"):
        fields = {k: v for k, v in confirm.items() if k != "csrf"}
        if csrf is not None:
            fields["csrf"] = csrf
        assert organiser.post(UPDATES, fields).status == 403
    assert Client(organiser.api).post(UPDATES, confirm).status == 403  # no session
    assert len(queued(redis_client)) == before


def test_nothing_changed_publishes_nothing_even_when_posted(
    organiser: Client, svc: Service, redis_client: redis.Redis
) -> None:
    two_invited(svc)
    csrf = form_for(organiser.get("/").body, "/logout")["csrf"]
    before = len(queued(redis_client))
    event = f"update:{CONFERENCE}:2f1d7c8e-8a64-4a38-9a55-0f8f4d1d2b11"
    fields = {"csrf": csrf, "step": "send", "event": event, "allow_past": "1"}
    reply = organiser.post(UPDATES, fields)
    assert reply.status == 409 and "Ingen ændringer at meddele" in reply.body.decode()
    forged = organiser.post(UPDATES, {**fields, "event": "remind:x:reminder"})
    assert forged.status == 422
    assert len(queued(redis_client)) == before


def test_a_cancelled_conference_is_announced_as_a_cancellation(
    organiser: Client, svc: Service, folder: Path
) -> None:
    two_invited(svc)
    announce(folder / f"{CONFERENCE}.toml", cancelled=True)
    page = changed_page(organiser, "aflysning af konferencen")
    assert "data-cancellation" in page and re.search(r"data-recipients>2<", page)
    assert "Send aflysningen til 2 deltagere" in page


# -- dead letters ---------------------------------------------------------------------------


def evil_event() -> dict[str, Any]:
    """An invalid event (no attendee e-mail) whose values would run as script if not escaped."""
    return {
        "id": "evt-evil",
        "type": "registration.created",
        "occurred_at": "2024-02-14T10:02:11+01:00",
        "conference": CONFERENCE,
        "registration": {"id": "REG-EVIL", "attendee": {"name": EVIL}},
    }


def csrf_of(organiser: Client) -> str:
    return form_for(organiser.get("/").body, "/logout")["csrf"]


@pytest.fixture
def worker(svc: Service, redis_client: redis.Redis) -> Iterator[Callable[[], None]]:
    """Start: a thread applies the next event put on the queue, as a worker would."""
    threads: list[threading.Thread] = []

    def start() -> None:
        seen = len(queued(redis_client))

        def run() -> None:
            found = wait_for(lambda: events_of(redis_client, seen), 30, "an event on the queue")
            svc.ingest(found[0])

        threads.append(threading.Thread(target=run, daemon=True))
        threads[-1].start()

    yield start
    for t in threads:
        t.join(35)


def test_dead_letters_are_listed_escaped_with_their_errors(organiser: Client, svc: Service) -> None:
    svc.ingest(evil_event())
    [letter] = DeadLetters(svc.r).list()
    page = organiser.get("/dead-letters").body.decode()
    assert letter.id in page and "evt-evil" in page and "registration.created" in page
    for field in letter.fields:
        assert f"<code>{field}</code>" in page
    assert "<details>" in page and "Vis hændelsen" in page
    assert "<script>alert" not in page  # escaped, not markup
    assert "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;" in page
    assert Client(organiser.api).get("/dead-letters").status == 303  # no session, no data


def test_replay_needs_csrf_and_republishes_the_event(
    organiser: Client, svc: Service, redis_client: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(deadletters, "REPLAY_WAIT", 0.0)  # no worker here: do not wait
    svc.ingest(evil_event())
    [letter] = DeadLetters(redis_client).list()
    path = f"/dead-letters/{letter.id}/replay"
    before = len(queued(redis_client))
    for fields in ({}, {"csrf": "wrong"}):
        assert organiser.post(path, fields).status == 403
    assert len(queued(redis_client)) == before and DeadLetters(redis_client).get(letter.id)
    page = organiser.get("/dead-letters").body
    replay = organiser.post(path, form_for(page, path))
    assert (replay.status, replay.headers["location"]) == (303, "/dead-letters?done=replayed")
    assert events_of(redis_client, before) == [evil_event()]
    assert DeadLetters(redis_client).get(letter.id) is None
    notice = organiser.get(replay.headers["location"]).body.decode()
    assert "Hændelsen er sendt igen" in notice and letter.id not in notice


def test_replay_tells_whether_the_worker_applied_it_or_refused_it_again(
    organiser: Client,
    svc: Service,
    redis_client: redis.Redis,
    worker: Callable[[], None],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(deadletters, "REPLAY_WAIT", 30.0)  # ends as soon as the worker did
    svc.ingest(cancelled("evt-cx", "REG-X"))  # unknown registration: a dead letter
    svc.ingest(evil_event())
    fixed, evil = sorted(DeadLetters(redis_client).list(), key=lambda d: d.event_id)
    svc.ingest(created("evt-cr", "REG-X"))  # now the registration exists
    csrf = csrf_of(organiser)
    worker()
    applied = organiser.post(f"/dead-letters/{fixed.id}/replay", {"csrf": csrf})
    assert applied.headers["location"] == "/dead-letters?done=applied"
    worker()
    again = organiser.post(f"/dead-letters/{evil.id}/replay", {"csrf": csrf})
    assert again.headers["location"] == "/dead-letters?done=again"
    assert [d.event_id for d in DeadLetters(redis_client).list()] == ["evt-evil"]
    assert "blev afvist igen" in organiser.get(again.headers["location"]).body.decode()


def test_replay_all_republishes_every_letter(
    organiser: Client, svc: Service, redis_client: redis.Redis
) -> None:
    svc.ingest(evil_event())
    svc.ingest(cancelled("evt-cx", "REG-X"))
    before = len(queued(redis_client))
    assert organiser.post("/dead-letters/replay", {}).status == 403
    page = organiser.get("/dead-letters").body
    done = organiser.post("/dead-letters/replay", form_for(page, "/dead-letters/replay"))
    assert done.headers["location"] == "/dead-letters?done=all"
    assert sorted(e["id"] for e in events_of(redis_client, before)) == ["evt-cx", "evt-evil"]
    assert DeadLetters(redis_client).list() == []


# -- suppressions ---------------------------------------------------------------------------


def test_suppression_is_listed_and_removed_only_with_csrf(
    organiser: Client, redis_client: redis.Redis
) -> None:
    store = Suppressions(redis_client)
    reason = hard_bounce_reason("5.1.1", "user unknown")
    store.add(METTE["email"], reason, message="msg:test:1", now=1_700_000_000.0)
    page = organiser.get("/suppressions").body.decode()
    assert METTE["email"] in page and "Permanent afvist (hard bounce) 5.1.1" in page
    assert "msg:test:1" in page and "14.11.2023 kl. 23.13.20" in page
    fields = form_for(page.encode(), "/suppressions/remove")
    assert fields["address"] == METTE["email"]
    for csrf in (None, "wrong"):
        sent = {"address": METTE["email"]} | ({} if csrf is None else {"csrf": csrf})
        assert organiser.post("/suppressions/remove", sent).status == 403
    assert store.get(METTE["email"]) is not None
    removed = organiser.post("/suppressions/remove", fields)
    assert (removed.status, removed.headers["location"]) == (303, "/suppressions?done=removed")
    assert store.get(METTE["email"]) is None
    after = organiser.get(removed.headers["location"]).body.decode()
    assert "Spærringen er fjernet" in after and METTE["email"] not in after
    again = organiser.post("/suppressions/remove", fields)
    assert again.headers["location"] == "/suppressions?done=not-found"


def test_suppression_add_validates_the_address(
    organiser: Client, redis_client: redis.Redis
) -> None:
    fields = form_for(organiser.get("/suppressions").body, "/suppressions/add")
    bad = organiser.post("/suppressions/add", {**fields, "address": "mette(at)aarhus.dk"})
    assert bad.status == 422 and "ikke en gyldig mailadresse" in bad.body.decode()
    assert Suppressions(redis_client).list() == []
    assert organiser.post("/suppressions/add", {"address": "Mette@Aarhus.dk"}).status == 403
    good = {**fields, "address": "Mette.Sorensen@Aarhus.DK", "reason": "Bad om det i telefonen"}
    added = organiser.post("/suppressions/add", good)
    assert (added.status, added.headers["location"]) == (303, "/suppressions?done=added")
    entry = Suppressions(redis_client).get(METTE["email"])
    assert entry is not None and entry.message is None
    page = organiser.get("/suppressions").body.decode()
    assert "Tilføjet af en arrangør: Bad om det i telefonen" in page
    assert organiser.post("/suppressions/add", good).headers["location"].endswith("already")
