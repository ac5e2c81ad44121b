"""GET /v1/conferences/{slug}/registrations/{id}: the seat and every message of one
registration, read from Redis.

The messages come from the registration's index (keys.registration_messages), which
create.lua fills for every message it creates. Messages created before that index existed
are not listed: finding them would mean scanning every message of the store, which one
request must not do (`notifier status` still counts them).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import redis
from pydantic import BaseModel

from notifier.domain.notice import Person
from notifier.domain.plan import Fact, Seat
from notifier.store import keys
from notifier.store.codec import text
from notifier.store.outbox import Outbox, Record


class PersonView(BaseModel):
    name: str
    email: str
    organisation: str | None = None


class FactView(BaseModel):
    kind: str  # created | substituted | cancelled | snapshot (a seat stored before facts)
    at: str
    attendee: PersonView | None = None
    previous: PersonView | None = None


class SeatView(BaseModel):
    attendee: PersonView
    status: str  # active | cancelled
    registered_at: str | None
    as_of: str
    history: list[FactView]  # in arrival order; substitutions name both people


class BounceView(BaseModel):
    status: str
    diagnostic: str
    at: str | None
    # The report's reason (notifier.bounces.reason: user_unknown, mailbox_full, blocked...);
    # None for a report recorded before reasons were.
    reason: str | None = None


class MessageView(BaseModel):
    key: str
    kind: str
    state: str
    attempts: int
    recipient: str
    last_reply: str
    batch: str | None
    created_at: str | None
    updated_at: str | None
    bounce: BounceView | None = None
    delay: BounceView | None = None
    suppression_reason: str | None = None


class RegistrationView(BaseModel):
    conference: str
    registration: str
    seat: SeatView | None
    messages: list[MessageView]


def _person(p: Person | None) -> PersonView | None:
    if p is None:
        return None
    return PersonView(name=p.name, email=p.email, organisation=p.organisation)


def _time(value: Any) -> str | None:
    """An epoch-seconds field as RFC 3339 UTC (None when absent)."""
    if value in (None, b"", ""):
        return None
    try:
        return datetime.fromtimestamp(float(text(value)), UTC).isoformat()
    except ValueError:
        return text(value)


def _fact(f: Fact) -> FactView:
    return FactView(
        kind=f.kind, at=f.at.isoformat(), attendee=_person(f.attendee), previous=_person(f.previous)
    )


def _seat(seat: Seat) -> SeatView:
    attendee = _person(seat.attendee)
    assert attendee is not None
    return SeatView(
        attendee=attendee,
        status=seat.status,
        registered_at=seat.registered_at.isoformat() if seat.registered_at else None,
        as_of=seat.as_of.isoformat(),
        history=[_fact(f) for f in seat.history],
    )


def _message(record: Record, fields: list[Any]) -> MessageView:
    """`fields`: the message's created_at, updated_at and delay_reason, as stored."""
    times, delay_reason = fields[:2], text(fields[2]) if fields[2] else None
    bounce = delay = None
    if record.bounce_status:
        bounce = BounceView(
            status=record.bounce_status,
            diagnostic=record.bounce_diagnostic,
            at=_time(record.bounced_at),
            reason=record.bounce_reason or None,
        )
    if record.delay_status:
        delay = BounceView(
            status=record.delay_status,
            diagnostic=record.delay_diagnostic,
            at=_time(record.delayed_at),
            reason=delay_reason,
        )
    return MessageView(
        key=record.key,
        kind=record.kind,
        state=record.state,
        attempts=record.attempts,
        recipient=record.sent_to,
        last_reply=record.last_reply,
        batch=record.batch or None,
        created_at=_time(times[0]),
        updated_at=_time(times[1]),
        bounce=bounce,
        delay=delay,
        # A suppressed message records the suppression's reason as its reply.
        suppression_reason=record.last_reply if record.state == "suppressed" else None,
    )


def registration_view(
    client: redis.Redis, conference: str, registration: str
) -> RegistrationView | None:
    """The registration's seat and messages; None when neither exists."""
    raw_seat = client.get(keys.seat(conference, registration))
    members = client.smembers(keys.registration_messages(conference, registration))
    message_keys = sorted(text(k) for k in members)
    if raw_seat is None and not message_keys:
        return None
    records = Outbox(client).records(message_keys)
    with client.pipeline(transaction=False) as pipe:
        for record in records:
            pipe.hmget(keys.message(record.key), "created_at", "updated_at", "delay_reason")
        fields = pipe.execute()
    messages = [_message(r, f) for r, f in zip(records, fields, strict=True)]
    messages.sort(key=lambda m: (m.created_at or "", m.key))
    return RegistrationView(
        conference=conference,
        registration=registration,
        seat=_seat(Seat.from_json(raw_seat)) if raw_seat else None,
        messages=messages,
    )
