"""The OpenAPI document: the events' request bodies are the shipped JSON Schema itself.

The routes read their bodies themselves (so that 413, 415 and 422 come out the same
everywhere, and events are validated by parse_event, the one validator the queue uses too).
Their bodies are therefore declared here: the schema of notifier.domain.events.event_schema(),
its `$defs` moved to `components/schemas` and every `$ref` pointed there. OpenAPI 3.1 schemas
are JSON Schema 2020-12, so nothing else changes; a test validates sample events against the
schema taken from /openapi.json and against schema/events.schema.json.

Errors: every error response the routes declare with the ProblemBody model (and FastAPI's
own 422, which the API answers as a problem too) is declared as `application/problem+json`,
the media type the server sends.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from pydantic import BaseModel

from notifier.api.problems import MEDIA_TYPE
from notifier.domain.events import event_schema

COMPONENTS = "#/components/schemas/"
EVENT = "Event"
PROBLEM = "ProblemBody"
#: FastAPI's own 422 body, which the API never sends (problems.install answers it as a problem).
FASTAPI_422 = ("HTTPValidationError", "ValidationError")


def _ref(name: str) -> dict[str, Any]:
    return {"$ref": COMPONENTS + name}


def _json_body(schema: dict[str, Any]) -> dict[str, Any]:
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": schema}}}}


def request_body(name: str) -> dict[str, Any]:
    return _json_body(_ref(name))


def model_body(model: type[BaseModel]) -> dict[str, Any]:
    """A small body model's schema, inline (optional: every field has a default)."""
    found = _json_body(model.model_json_schema())
    found["requestBody"]["required"] = False
    return found


def batch_body(limit: int) -> dict[str, Any]:
    return _json_body(
        {
            "type": "object",
            "required": ["events"],
            "additionalProperties": False,
            "properties": {
                "events": {
                    "type": "array",
                    "maxItems": limit,
                    "items": _ref(EVENT),
                    "description": "Events; an invalid one is answered in its result, "
                    "not by refusing the batch.",
                }
            },
        }
    )


def _rewrite(node: Any) -> Any:
    """Point every "#/$defs/X" at "#/components/schemas/X" (refs and discriminator mappings)."""
    if isinstance(node, dict):
        return {k: _rewrite(v) for k, v in node.items()}
    if isinstance(node, list):
        return [_rewrite(v) for v in node]
    if isinstance(node, str) and node.startswith("#/$defs/"):
        return COMPONENTS + node.removeprefix("#/$defs/")
    return node


def event_components() -> dict[str, Any]:
    """The event schema as components: every $def, and `Event` for the root."""
    schema = event_schema()
    defs = schema.pop("$defs", {})
    schema.pop("$schema", None)
    found = {name: _rewrite(d) for name, d in defs.items()}
    found[EVENT] = _rewrite(schema)
    return found


def _is_problem(content: dict[str, Any]) -> bool:
    refs = {str(c.get("schema", {}).get("$ref", "")) for c in content.values()}
    return bool(refs & {COMPONENTS + name for name in (PROBLEM, *FASTAPI_422)})


def declare_problems(doc: dict[str, Any]) -> None:
    """Declare every problem response as application/problem+json (in place)."""
    for operations in doc.get("paths", {}).values():
        for operation in operations.values():
            for response in operation.get("responses", {}).values():
                content = response.get("content", {})
                if _is_problem(content):
                    response["content"] = {MEDIA_TYPE: {"schema": _ref(PROBLEM)}}
    schemas = doc.get("components", {}).get("schemas", {})
    for name in FASTAPI_422:
        schemas.pop(name, None)


def install(app: FastAPI) -> None:
    """Generate the document once, with the event components merged in."""

    def document() -> dict[str, Any]:
        if app.openapi_schema is None:
            doc = get_openapi(
                title=app.title,
                version=app.version,
                description=app.description,
                routes=app.routes,
            )
            schemas = doc.setdefault("components", {}).setdefault("schemas", {})
            for name, schema in event_components().items():
                if name in schemas:  # a response model of the same name would be replaced
                    raise RuntimeError(f"OpenAPI component {name} defined twice")
                schemas[name] = schema
            declare_problems(doc)
            app.openapi_schema = doc
        return app.openapi_schema

    app.openapi = document  # type: ignore[method-assign]
