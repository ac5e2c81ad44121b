"""The event contract: what registration systems and organisers put on the queue.

The JSON Schema in schema/events.schema.json is generated from these models
(`python -m notifier.schema`); a test fails when it is stale.
"""

from __future__ import annotations

import json
import re
from collections.abc import Container
from typing import Annotated, Any, Literal

from pydantic import (
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StringConstraints,
    TypeAdapter,
    ValidationError,
)

from notifier.domain.conference import SLUG_PATTERN
from notifier.domain.recipients import Address, PersonName
from notifier.errors import InvalidEvent

# The contract producers build and check events with (schema/events.schema.json is made
# from these models).
__all__ = [
    "EVENT_TYPES",
    "MAX_EVENT_BYTES",
    "Attendee",
    "Batch",
    "ConferenceUpdated",
    "Event",
    "NewRegistration",
    "RegistrationCancelled",
    "RegistrationCreated",
    "RegistrationRef",
    "RegistrationSubstituted",
    "ReminderRequested",
    "Substitution",
    "event_schema",
    "parse_event",
]

MAX_EVENT_BYTES = 16_384

EventId = Annotated[str, StringConstraints(pattern=r"^[\x21-\x7e]{1,128}$")]
RegistrationId = Annotated[str, StringConstraints(pattern=r"^[\x21-\x7e]{1,64}$")]
BatchId = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,99}$")]
Slug = Annotated[str, StringConstraints(pattern=SLUG_PATTERN)]
Organisation = PersonName  # 1..200 characters, no control or line-break characters
_DATE_TIME_TEXT = re.compile(r"^\d{4}-\d{2}-\d{2}")


def _timestamp_text(value: Any) -> Any:
    # pydantic would also take Unix seconds (1707901331, 1707901331.5 or "1707901331").
    if not isinstance(value, str) or not _DATE_TIME_TEXT.match(value):
        raise ValueError(
            "must be an RFC 3339 timestamp with offset, e.g. 2024-02-14T10:02:11+01:00"
        )
    return value


Timestamp = Annotated[AwareDatetime, BeforeValidator(_timestamp_text)]


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Attendee(_Model):
    """A person who holds, or held, a seat."""

    name: PersonName
    email: Address
    organisation: Organisation | None = None


class _Envelope(_Model):
    id: EventId = Field(description="Unique per event; the idempotency key.")
    occurred_at: Timestamp = Field(
        description="RFC 3339 timestamp with offset, when it happened in the source system."
    )
    conference: Slug = Field(description="Slug of a conference config file.")


class NewRegistration(_Model):
    id: RegistrationId
    attendee: Attendee


class Substitution(_Model):
    id: RegistrationId
    previous_attendee: Attendee
    attendee: Attendee


class RegistrationRef(_Model):
    id: RegistrationId


class Batch(_Model):
    id: BatchId


class RegistrationCreated(_Envelope):
    """A binding registration: sends the confirmation with a calendar invite."""

    type: Literal["registration.created"]
    registration: NewRegistration


class RegistrationSubstituted(_Envelope):
    """The registrant sends a colleague; carries both people."""

    type: Literal["registration.substituted"]
    registration: Substitution


class RegistrationCancelled(_Envelope):
    """The organiser cancels a registration."""

    type: Literal["registration.cancelled"]
    registration: RegistrationRef


class ReminderRequested(_Envelope):
    """An organiser asks for a reminder to every current attendee."""

    type: Literal["reminder.requested"]
    batch: Batch


class ConferenceUpdated(_Envelope):
    """An organiser announces what the conference file says now: every current attendee
    whose invite carries other facts (title, date, times, venue, cancelled or not) gets an
    update, or a cancellation of the conference."""

    type: Literal["conference.updated"]


Event = Annotated[
    RegistrationCreated
    | RegistrationSubstituted
    | RegistrationCancelled
    | ReminderRequested
    | ConferenceUpdated,
    Field(discriminator="type"),
]
EVENT_ADAPTER: TypeAdapter[Event] = TypeAdapter(Event)
EVENT_TYPES = (
    "registration.created",
    "registration.substituted",
    "registration.cancelled",
    "reminder.requested",
    "conference.updated",
)


EVENT_DESCRIPTION = (
    f"One event. At most {MAX_EVENT_BYTES} bytes (16 KiB) as UTF-8 JSON, which JSON Schema "
    "cannot state: a larger event is refused. The conference must name a conference file of "
    "the service."
)


def _field_path(loc: tuple[int | str, ...]) -> str:
    # pydantic puts the discriminator's value in the path ("registration.created"); drop it.
    parts = [str(p) for p in loc if str(p) not in EVENT_TYPES]
    return ".".join(parts) or "event"


def _translate(exc: ValidationError) -> InvalidEvent:
    errors = []
    for err in exc.errors(include_url=False):
        reason = err["msg"].removeprefix("Value error, ")
        if err["type"] == "union_tag_invalid":
            reason = f"must be one of {', '.join(EVENT_TYPES)}"
            errors.append(("type", reason))
            continue
        if err["type"] == "union_tag_not_found":
            errors.append(("type", "is required"))
            continue
        if err["type"] == "extra_forbidden":
            reason = "unknown field"
        errors.append((_field_path(err["loc"]), reason))
    return InvalidEvent(errors)


def _size(raw: Any) -> int:
    if isinstance(raw, bytes):
        return len(raw)
    if isinstance(raw, str):
        return len(raw.encode("utf-8", "surrogatepass"))
    try:
        return len(json.dumps(raw, ensure_ascii=False, default=str).encode("utf-8", "replace"))
    except (TypeError, ValueError):
        return 0  # not JSON-like at all: the type check below rejects it


def parse_event(raw: Any, *, conferences: Container[str] | None = None) -> Event:
    """Validate one event (a mapping, or JSON text/bytes).

    Raises:
        InvalidEvent: naming each offending field and the reason.
    """
    if _size(raw) > MAX_EVENT_BYTES:
        raise InvalidEvent([("event", f"larger than {MAX_EVENT_BYTES} bytes")])
    if isinstance(raw, str | bytes):
        try:
            raw = json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise InvalidEvent([("event", f"not valid JSON: {exc}")]) from None
    if not isinstance(raw, dict):
        raise InvalidEvent([("event", "must be a JSON object")])
    try:
        event = EVENT_ADAPTER.validate_python(raw)
    except ValidationError as exc:
        raise _translate(exc) from None
    if conferences is not None and event.conference not in conferences:
        raise InvalidEvent([("conference", f"no conference config named {event.conference!r}")])
    return event


def event_schema() -> dict[str, Any]:
    """The JSON Schema of every event type, for registration systems in any language."""
    schema = EVENT_ADAPTER.json_schema(mode="validation")
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "notifier event"
    schema["description"] = EVENT_DESCRIPTION
    return schema
