"""The OpenAPI document served by a running API: its event body is the shipped JSON Schema."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from typing import Any

import jsonschema
import pytest

from notifier.settings import Settings
from tests.api_support import Api, api
from tests.conftest import ROOT
from tests.events import CONFERENCE, JENS, METTE, cancelled, created, substituted

pytestmark = pytest.mark.integration
__all__ = ["api"]

SHIPPED = json.loads((ROOT / "schema" / "events.schema.json").read_text(encoding="utf-8"))


def _samples() -> tuple[list[dict[str, Any]], list[Any]]:
    good = [
        json.loads(line)
        for path in sorted((ROOT / "examples").glob("*.jsonl"))
        if path.name != "invalid.jsonl"
        for line in path.read_text(encoding="utf-8").splitlines()
        if line.strip()
    ]
    good += [
        created("g1", "R1"),
        substituted("g2", "R1", METTE, JENS),
        cancelled("g3", "R1"),
        {
            "id": "g4",
            "type": "conference.updated",
            "occurred_at": "2024-04-01T10:00:00+02:00",
            "conference": CONFERENCE,
        },
    ]
    invalid = (ROOT / "examples" / "invalid.jsonl").read_text(encoding="utf-8")
    bad: list[Any] = [json.loads(line) for line in invalid.splitlines() if line.strip()]
    changes: list[Callable[[dict[str, Any]], object]] = [
        lambda e: e.pop("id"),
        lambda e: e.update(type="registration.moved"),
        lambda e: e.update(extra=1),
        lambda e: e["registration"].pop("attendee"),
        lambda e: e["registration"]["attendee"].update(email=5),
        lambda e: e.update(occurred_at=1707901331),
        lambda e: e.update(conference="Not A Slug"),
    ]
    for change in changes:
        event = copy.deepcopy(created("b1", "R1"))
        change(event)
        bad.append(event)
    bad += [[], "text", None]
    return good, bad


def _body_schema(doc: dict[str, Any], path: str) -> dict[str, Any]:
    content = doc["paths"][path]["post"]["requestBody"]["content"]
    assert list(content) == ["application/json"]
    schema = content["application/json"]["schema"]
    assert isinstance(schema, dict)
    return schema


def _inline(node: Any, components: dict[str, Any]) -> Any:
    """The schema with components/schemas refs turned back into the file's "#/$defs/" form."""
    if isinstance(node, dict):
        return {k: _inline(v, components) for k, v in node.items()}
    if isinstance(node, list):
        return [_inline(v, components) for v in node]
    if isinstance(node, str) and node.startswith("#/components/schemas/"):
        return "#/$defs/" + node.removeprefix("#/components/schemas/")
    return node


@pytest.fixture
def document(
    api: Callable[[Settings], Api], make_settings: Callable[..., Settings], redis_client: Any
) -> dict[str, Any]:
    reply = api(make_settings()).call("GET", "/openapi.json")
    assert reply.status == 200
    doc = reply.json()
    assert isinstance(doc, dict)
    return doc


def test_event_body_is_the_shipped_schema(document: dict[str, Any]) -> None:
    components = document["components"]["schemas"]
    body = _body_schema(document, "/v1/events")
    assert body == {"$ref": "#/components/schemas/Event"}
    # Given the shipped file's definitions, every one is a component with the same content
    defs = SHIPPED["$defs"]
    for name, schema in defs.items():
        assert _inline(components[name], components) == schema, name
    root = {k: v for k, v in SHIPPED.items() if k not in ("$defs", "$schema")}
    assert _inline(components["Event"], components) == root


def test_sample_events_get_the_same_verdict_from_both_schemas(document: dict[str, Any]) -> None:
    # The request body's schema, resolved inside the OpenAPI document (3.1: JSON Schema 2020-12)
    served = {**_body_schema(document, "/v1/events"), "components": document["components"]}
    from_api = jsonschema.Draft202012Validator(served, format_checker=None)
    shipped = jsonschema.Draft202012Validator(SHIPPED)
    jsonschema.Draft202012Validator.check_schema(served)
    good, bad = _samples()
    assert len(good) >= 10 and len(bad) >= 10
    for event in good:
        assert from_api.is_valid(event), event["id"]
        assert shipped.is_valid(event)
    # The invalid examples that a JSON Schema can tell (not an address's syntax, which only
    # the validator's email check finds) are refused by both alike.
    for event in bad:
        assert from_api.is_valid(event) == shipped.is_valid(event), event
    assert sum(not from_api.is_valid(e) for e in bad) >= 9


def test_batch_items_are_events(document: dict[str, Any]) -> None:
    body = _body_schema(document, "/v1/events/batch")
    served = {**body, "components": document["components"]}
    validator = jsonschema.Draft202012Validator(served)
    good, bad = _samples()
    assert validator.is_valid({"events": good})
    assert not validator.is_valid({"events": [*good, bad[-4]]})
    assert not validator.is_valid({"events": [good[0]] * 1001})


def test_document_names_the_bearer_scheme_and_problem_responses(document: dict[str, Any]) -> None:
    schemes = document["components"]["securitySchemes"]
    assert [s["scheme"] for s in schemes.values()] == ["bearer"]
    post = document["paths"]["/v1/events"]["post"]
    assert {"202", "401", "413", "415", "422", "503"} <= set(post["responses"])
    assert post["security"]
    assert "security" not in document["paths"]["/v1/health"]["get"]
    reminders = document["paths"]["/v1/conferences/{slug}/reminders"]["post"]
    assert {"202", "403", "409"} <= set(reminders["responses"])
