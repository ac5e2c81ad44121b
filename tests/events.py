"""Event builders for tests: the contract's examples, with ids and people varied."""

from __future__ import annotations

from typing import Any

CONFERENCE = "digitaliseringstraef-2024"
METTE = {
    "name": "Mette Sørensen",
    "email": "mette.sorensen@aarhus.dk",
    "organisation": "Aarhus Kommune",
}
JENS = {
    "name": "Jens Ødegaard",
    "email": "jens.odegaard@aarhus.dk",
    "organisation": "Aarhus Kommune",
}
ASTRID = {
    "name": "Astrid Kjærgård",
    "email": "astrid.kjaergaard@aarhus.dk",
    "organisation": "Aarhus Kommune",
}


def person(n: int, domain: str = "kommune.example.dk") -> dict[str, str]:
    return {
        "name": f"Deltager Nr. {n} Åkjær",
        "email": f"deltager{n}@{domain}",
        "organisation": "Testkommune",
    }


def created(
    event_id: str, reg: str, attendee: dict[str, str] = METTE, at: str = "2024-02-14T10:02:11+01:00"
) -> dict[str, Any]:
    return {
        "id": event_id,
        "type": "registration.created",
        "occurred_at": at,
        "conference": CONFERENCE,
        "registration": {"id": reg, "attendee": attendee},
    }


def substituted(
    event_id: str,
    reg: str,
    previous: dict[str, str],
    attendee: dict[str, str],
    at: str = "2024-04-02T08:30:00+02:00",
) -> dict[str, Any]:
    return {
        "id": event_id,
        "type": "registration.substituted",
        "occurred_at": at,
        "conference": CONFERENCE,
        "registration": {"id": reg, "previous_attendee": previous, "attendee": attendee},
    }


def cancelled(event_id: str, reg: str, at: str = "2024-04-10T12:00:00+02:00") -> dict[str, Any]:
    return {
        "id": event_id,
        "type": "registration.cancelled",
        "occurred_at": at,
        "conference": CONFERENCE,
        "registration": {"id": reg},
    }


def reminder(event_id: str, batch: str, at: str = "2024-04-15T09:00:00+02:00") -> dict[str, Any]:
    return {
        "id": event_id,
        "type": "reminder.requested",
        "occurred_at": at,
        "conference": CONFERENCE,
        "batch": {"id": batch},
    }
