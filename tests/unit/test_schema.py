"""The shipped JSON Schema is the one the models generate (python -m notifier.schema)."""

from __future__ import annotations

import json
from pathlib import Path

from notifier.domain.events import event_schema

SCHEMA_FILE = Path(__file__).resolve().parents[2] / "schema" / "events.schema.json"


def test_committed_schema_matches_the_models() -> None:
    assert SCHEMA_FILE.is_file(), f"{SCHEMA_FILE} is missing: run python -m notifier.schema"
    committed = json.loads(SCHEMA_FILE.read_text(encoding="utf-8"))
    generated = json.loads(json.dumps(event_schema()))
    assert committed == generated, "schema/events.schema.json is stale: python -m notifier.schema"


def test_schema_covers_every_event_type() -> None:
    text = json.dumps(event_schema())
    for event_type in (
        "registration.created",
        "registration.substituted",
        "registration.cancelled",
        "reminder.requested",
    ):
        assert f'"{event_type}"' in text
