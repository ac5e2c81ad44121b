"""Replaying dead letters: a letter leaves only once its event is on the queue, whatever
form its payload has, and the command counts truthfully what it did. And which errors make a
dead letter of an event, under which field."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis
from click.testing import CliRunner

from devtools.sink import free_port
from notifier.cli import main
from notifier.domain.events import RegistrationCreated
from notifier.domain.plan import Plan, Seat
from notifier.service import Service
from notifier.settings import Settings
from notifier.store.deadletter import DeadLetter, DeadLetters
from notifier.tasks import INGEST, QUEUE
from tests.conftest import TEST_REDIS_URL
from tests.events import cancelled, created, person

pytestmark = pytest.mark.integration

ENV = {"NOTIFIER_BROKER_URL": TEST_REDIS_URL}
UNKNOWN = [("conference", "no conference config named 'x'")]


def _queued(client: redis.Redis) -> list[Any]:
    """The single argument of every ingest task waiting in the queue, oldest first."""
    bodies = [json.loads(m) for m in reversed(client.lrange(QUEUE, 0, -1))]
    assert all(b["headers"]["task"] == INGEST for b in bodies)
    args = []
    for b in bodies:
        assert b["content-type"] == "application/json"
        decoded = json.loads(base64.b64decode(b["body"]))
        args.append(decoded[0][0])
    return args


def _ids(dead: DeadLetters) -> list[str]:
    return [d.id for d in dead.list()]


def test_replay_all_decodes_json_text_and_keeps_what_is_no_event(
    redis_client: redis.Redis,
) -> None:
    dead = DeadLetters(redis_client)
    as_dict = created("evt-1", "REG-1", person(1))
    as_text = created("evt-2", "REG-2", person(2))
    dict_letter = dead.put(as_dict, UNKNOWN, now=1.0)
    text_letter = dead.put(json.dumps(as_text, ensure_ascii=False), UNKNOWN, now=2.0)
    not_json = dead.put("{not json", [("event", "not valid JSON")], now=3.0)
    a_list = dead.put([1, 2], [("event", "must be a JSON object")], now=4.0)
    assert dead.get(text_letter) is not None
    assert dead.get(text_letter).event_id == "evt-2"  # type: ignore[union-attr]

    result = CliRunner().invoke(main, ["dead-letters", "--replay-all"], env=ENV)

    assert result.exit_code == 1, result.output
    assert "replayed 2 event(s)" in result.output
    assert "not replayed, kept: 2 whose payload is not an event" in result.output
    assert not_json in result.output and a_list in result.output
    assert _queued(redis_client) == [as_dict, as_text]
    assert sorted(_ids(dead)) == sorted([not_json, a_list])
    assert dict_letter not in _ids(dead)


def test_replay_one_json_text_letter(redis_client: redis.Redis) -> None:
    dead = DeadLetters(redis_client)
    event = created("evt-3", "REG-3", person(3))
    other = dead.put(created("evt-4", "REG-4", person(4)), UNKNOWN, now=1.0)
    letter = dead.put(json.dumps(event), UNKNOWN, now=2.0)

    result = CliRunner().invoke(main, ["dead-letters", "--replay", letter], env=ENV)

    assert result.exit_code == 0, result.output
    assert "replayed 1 event(s)" in result.output
    assert _queued(redis_client) == [event]
    assert _ids(dead) == [other]


def test_replay_one_that_is_no_event_is_refused_and_kept(redis_client: redis.Redis) -> None:
    dead = DeadLetters(redis_client)
    letter = dead.put("[]", [("event", "must be a JSON object")], now=1.0)
    result = CliRunner().invoke(main, ["dead-letters", "--replay", letter], env=ENV)
    assert result.exit_code == 1
    assert "replayed 0 event(s)" in result.output and letter in result.output
    assert _ids(dead) == [letter]
    assert redis_client.llen(QUEUE) == 0


def test_nothing_is_removed_when_the_broker_is_unreachable(redis_client: redis.Redis) -> None:
    dead = DeadLetters(redis_client)
    letters = [
        dead.put(created("evt-5", "REG-5", person(5)), UNKNOWN, now=1.0),
        dead.put(json.dumps(created("evt-6", "REG-6", person(6))), UNKNOWN, now=2.0),
    ]
    closed = f"redis://127.0.0.1:{free_port()}/0"
    env = {"NOTIFIER_BROKER_URL": closed, "NOTIFIER_REDIS_URL": TEST_REDIS_URL}

    result = CliRunner().invoke(main, ["dead-letters", "--replay-all"], env=env)

    assert result.exit_code == 1
    assert "replayed 0 event(s)" in result.output
    assert "not replayed, kept: 2 after publishing failed" in result.output
    assert sorted(_ids(dead)) == sorted(letters)


def test_a_letter_that_failed_again_during_its_replay_stays(redis_client: redis.Redis) -> None:
    """A fast worker may fail the replayed event again before the replay removes the letter:
    same payload and reason, so the same letter id, with a new time. It must stay."""
    dead = DeadLetters(redis_client)
    event = created("evt-7", "REG-7", person(7))
    letter = dead.put(event, UNKNOWN, now=1.0)
    first = dead.list()

    def fails_again(replayed: dict[str, Any]) -> None:
        assert dead.put(replayed, UNKNOWN, now=2.0) == letter

    report = dead.replay(first, fails_again)

    assert report.replayed == [letter]
    kept = dead.get(letter)
    assert kept is not None and kept.at == 2.0


def test_publishing_stops_at_the_first_failure_and_keeps_the_rest(
    redis_client: redis.Redis,
) -> None:
    dead = DeadLetters(redis_client)
    ids = [dead.put(created(f"e{i}", f"R{i}", person(i)), UNKNOWN, now=i) for i in range(3)]
    sent: list[dict[str, Any]] = []

    def send(event: dict[str, Any]) -> None:
        if len(sent) == 1:
            raise ConnectionError("broker went away")
        sent.append(event)

    report = dead.replay(dead.list(), send)

    assert report.replayed == ids[:1]
    assert report.not_tried == ids[1:]
    assert "broker went away" in report.error
    assert _ids(dead) == ids[1:]


@pytest.fixture
def svc(make_settings: Callable[..., Settings], redis_client: redis.Redis) -> Iterator[Service]:
    service = Service(make_settings(), redis_client)
    yield service
    service.close()


def _only_letter(svc: Service) -> DeadLetter:
    [letter] = svc.dead.list()
    return letter


def test_a_cancellation_of_an_unknown_registration_is_a_dead_letter_on_its_id(
    svc: Service,
) -> None:
    assert svc.ingest(cancelled("evt-c", "REG-NEW")) == []
    letter = _only_letter(svc)
    assert letter.fields == ("registration.id",)
    assert letter.reason == (
        "registration.id: registration REG-NEW is unknown: no attendee to notify"
    )
    assert letter.event_id == "evt-c"


def test_a_key_error_in_planning_is_an_internal_error_not_an_unknown_registration(
    svc: Service, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A KeyError is a LookupError: caught as one, a bug passed for an unknown registration.
    def broken(
        event: RegistrationCreated, seat: Seat | None, conf: object, order: int | None = None
    ) -> Plan:
        plans: dict[str, Plan] = {}
        return plans["attendee"]  # a lookup that misses, as a bug's would

    monkeypatch.setattr("notifier.service.plan_created", broken)
    assert svc.ingest(created("evt-k", "REG-K", person(1))) == []
    letter = _only_letter(svc)
    assert letter.fields == ("event",)
    assert letter.reason == "event: internal error: KeyError"
