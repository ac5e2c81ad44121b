"""Sample notices for previews and golden-file tests (fictional people)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from notifier.domain.conference import Conference
from notifier.domain.notice import InviteSpec, Kind, Notice, Person, invite_uid

SAMPLE_NOW = datetime(2024, 2, 14, 9, 2, 11, tzinfo=UTC)
METTE = Person("Mette Sørensen", "mette.sorensen@aarhus.dk", "Aarhus Kommune")
JENS = Person("Jens Ødegaard", "jens.odegaard@aarhus.dk", "Aarhus Kommune")
OCCURRED = datetime.fromisoformat("2024-04-02T08:30:00+02:00")


def sample_notice(kind: Kind, conf: Conference, registration: str = "REG-1001") -> Notice:
    """A realistic notice of each kind for the given conference."""
    domain = conf.sender_domain
    uid_m = invite_uid(conf.slug, registration, METTE.email, domain)
    uid_j = invite_uid(conf.slug, registration, JENS.email, domain)
    organiser = Person(conf.organiser.name, str(conf.organiser.email))
    base: dict[str, Any] = {"conference": conf.slug, "registration_id": registration}
    match kind:
        case Kind.CONFIRMATION:
            return Notice(
                "sample:confirmation",
                kind,
                recipient=METTE,
                invite=InviteSpec("REQUEST", uid_m, 0),
                **base,
            )
        case Kind.REMINDER:
            return Notice(
                "sample:reminder",
                kind,
                recipient=METTE,
                invite=InviteSpec("REQUEST", uid_m, 0),
                batch="sample",
                **base,
            )
        case Kind.SUBSTITUTION_OUT:
            return Notice(
                "sample:out",
                kind,
                recipient=METTE,
                successor=JENS,
                invite=InviteSpec("CANCEL", uid_m, 1),
                occurred_at=OCCURRED,
                **base,
            )
        case Kind.SUBSTITUTION_IN:
            return Notice(
                "sample:in",
                kind,
                recipient=JENS,
                previous=METTE,
                invite=InviteSpec("REQUEST", uid_j, 0),
                occurred_at=OCCURRED,
                **base,
            )
        case Kind.SUBSTITUTION_COPY:
            return Notice(
                "sample:copy",
                kind,
                recipient=organiser,
                previous=METTE,
                successor=JENS,
                occurred_at=OCCURRED,
                **base,
            )
        case Kind.CANCELLATION:
            return Notice(
                "sample:cancel",
                kind,
                recipient=METTE,
                invite=InviteSpec("CANCEL", uid_m, 1),
                occurred_at=OCCURRED,
                **base,
            )
    raise ValueError(kind)
