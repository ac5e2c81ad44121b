"""The event contract: valid events parse, and every bad input names its field and reason."""

from __future__ import annotations

import contextlib
import copy
import json
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from notifier.domain.events import (
    MAX_EVENT_BYTES,
    RegistrationCancelled,
    RegistrationCreated,
    RegistrationSubstituted,
    ReminderRequested,
    parse_event,
)
from notifier.errors import InvalidEvent
from tests.events import JENS, METTE
from tests.unit.support import SLUG

# The examples of contract.md section 1 (the cancellation has no example there).
CREATED: dict[str, Any] = {
    "id": "evt-0001",
    "type": "registration.created",
    "occurred_at": "2024-02-14T10:02:11+01:00",
    "conference": SLUG,
    "registration": {"id": "REG-1001", "attendee": METTE},
}
SUBSTITUTED: dict[str, Any] = {
    "id": "evt-0002",
    "type": "registration.substituted",
    "occurred_at": "2024-04-02T08:30:00+02:00",
    "conference": SLUG,
    "registration": {"id": "REG-1001", "previous_attendee": METTE, "attendee": JENS},
}
CANCELLED: dict[str, Any] = {
    "id": "evt-0003",
    "type": "registration.cancelled",
    "occurred_at": "2024-04-03T12:00:00+02:00",
    "conference": SLUG,
    "registration": {"id": "REG-1001"},
}
REMINDER: dict[str, Any] = {
    "id": "evt-0100",
    "type": "reminder.requested",
    "occurred_at": "2024-04-15T09:00:00+02:00",
    "conference": SLUG,
    "batch": {"id": "reminder-1-week"},
}


def test_created_parses() -> None:
    event = parse_event(json.dumps(CREATED))
    assert isinstance(event, RegistrationCreated)
    assert event.registration.id == "REG-1001"
    assert event.registration.attendee.name == "Mette Sørensen"
    assert event.registration.attendee.email == "mette.sorensen@aarhus.dk"
    assert event.occurred_at.utcoffset() == timedelta(hours=1)


def test_substituted_parses_with_both_people() -> None:
    event = parse_event(json.dumps(SUBSTITUTED).encode("utf-8"))
    assert isinstance(event, RegistrationSubstituted)
    assert event.registration.previous_attendee.email == "mette.sorensen@aarhus.dk"
    assert event.registration.attendee.name == "Jens Ødegaard"


def test_cancelled_parses() -> None:
    event = parse_event(CANCELLED)
    assert isinstance(event, RegistrationCancelled)
    assert event.registration.id == "REG-1001"


def test_reminder_parses() -> None:
    event = parse_event(REMINDER)
    assert isinstance(event, ReminderRequested)
    assert event.batch.id == "reminder-1-week"


def test_known_conference_passes_the_conference_check() -> None:
    assert parse_event(CREATED, conferences={SLUG}).conference == SLUG


def _changed(change: Callable[[dict[str, Any]], object]) -> dict[str, Any]:
    event = copy.deepcopy(CREATED)
    change(event)
    return event


def _set_attendee(key: str, value: str) -> Callable[[dict[str, Any]], object]:
    return lambda e: e["registration"]["attendee"].__setitem__(key, value)


BAD_EVENTS: list[tuple[str, Any, str, str]] = [
    ("missing type", _changed(lambda e: e.pop("type")), "type", "required"),
    ("unknown type", _changed(lambda e: e.update(type="registration.deleted")), "type", "one of"),
    (
        "naive occurred_at",
        _changed(lambda e: e.update(occurred_at="2024-02-14T10:02:11")),
        "occurred_at",
        "timezone",
    ),
    (
        "bad email",
        _changed(_set_attendee("email", "mette.sorensen.aarhus.dk")),
        "registration.attendee.email",
        "not a valid email address",
    ),
    (
        "name with CR/LF",
        _changed(_set_attendee("name", "Mette\r\nBcc: all@kl.dk")),
        "registration.attendee.name",
        "line-break",
    ),
    ("empty name", _changed(_set_attendee("name", "  ")), "registration.attendee.name", "empty"),
    ("id of 129 characters", _changed(lambda e: e.update(id="x" * 129)), "id", "pattern"),
    ("unknown extra field", _changed(lambda e: e.update(priority=1)), "priority", "unknown field"),
    ("non-object JSON", "[1, 2, 3]", "event", "JSON object"),
    ("invalid JSON text", '{"id": "evt-0001",', "event", "not valid JSON"),
    ("oversize text", " " * MAX_EVENT_BYTES + json.dumps(CREATED), "event", "larger than"),
]


@pytest.mark.parametrize(
    ("raw", "field", "reason"),
    [pytest.param(raw, field, reason, id=name) for name, raw, field, reason in BAD_EVENTS],
)
def test_bad_event_names_field_and_reason(raw: Any, field: str, reason: str) -> None:
    with pytest.raises(InvalidEvent) as caught:
        parse_event(raw)
    errors = caught.value.errors
    assert any(f == field and reason in r for f, r in errors), errors


def test_id_of_128_characters_is_accepted() -> None:
    assert parse_event(_changed(lambda e: e.update(id="x" * 128))).id == "x" * 128


def test_unknown_conference_is_named() -> None:
    raw = _changed(lambda e: e.update(conference="kommunaldage-2025"))
    with pytest.raises(InvalidEvent) as caught:
        parse_event(raw, conferences={SLUG})
    assert caught.value.field == "conference"
    assert "kommunaldage-2025" in caught.value.errors[0][1]


def test_oversize_is_measured_in_utf8_bytes() -> None:
    # 9,000 'ø' are 9,000 characters but 18,000 bytes on the wire.
    raw = json.dumps(_changed(_set_attendee("organisation", "ø" * 9000)), ensure_ascii=False)
    assert len(raw) < MAX_EVENT_BYTES < len(raw.encode("utf-8"))
    with pytest.raises(InvalidEvent) as caught:
        parse_event(raw)
    assert caught.value.errors == (("event", f"larger than {MAX_EVENT_BYTES} bytes"),)


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=6,
)
FIELDS = [
    ("id",),
    ("type",),
    ("occurred_at",),
    ("conference",),
    ("registration",),
    ("registration", "id"),
    ("registration", "attendee"),
    ("registration", "attendee", "name"),
    ("registration", "attendee", "email"),
]


@settings(max_examples=200, deadline=None)
@given(st.sampled_from(FIELDS), JSON_VALUES)
def test_any_bad_value_is_an_invalid_event_never_a_crash(
    path: tuple[str, ...], value: object
) -> None:
    event = copy.deepcopy(CREATED)
    parent = event
    for key in path[:-1]:
        parent = parent[key]
    parent[path[-1]] = value
    with contextlib.suppress(InvalidEvent):
        parse_event(json.dumps(event, ensure_ascii=False))
