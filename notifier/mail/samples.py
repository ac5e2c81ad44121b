"""Sample notices for previews and golden-file tests (fictional people)."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, time

from notifier.domain.conference import Conference
from notifier.domain.notice import InviteSpec, Kind, Notice, Person, invite_uid

SAMPLE_NOW = datetime(2024, 2, 14, 9, 2, 11, tzinfo=UTC)
METTE = Person("Mette Sørensen", "mette.sorensen@aarhus.dk", "Aarhus Kommune")
JENS = Person("Jens Ødegaard", "jens.odegaard@aarhus.dk", "Aarhus Kommune")
OCCURRED = datetime.fromisoformat("2024-04-02T08:30:00+02:00")


# The notice key's suffix per kind (keys name the sample in golden files and previews).
_SUFFIX = {
    Kind.CONFIRMATION: "confirmation",
    Kind.REMINDER: "reminder",
    Kind.SUBSTITUTION_OUT: "out",
    Kind.SUBSTITUTION_IN: "in",
    Kind.SUBSTITUTION_COPY: "copy",
    Kind.CANCELLATION: "cancel",
    Kind.UPDATE: "update",
    Kind.CONFERENCE_CANCELLATION: "conference-cancel",
}


def sample_before(conf: Conference) -> str:
    """What Mette's invite carried before the sample update (`InviteFacts.text`): the
    conference with other times (all day if it has times, 9.00–16.00 if it has none)."""
    now = conf.invite_facts
    if now.all_day:
        earlier = replace(now, start=time(9), end=time(16))
    else:
        earlier = replace(now, start=None, end=None)
    return earlier.text("REQUEST")


def sample_notice(kind: Kind, conf: Conference, registration: str = "REG-1001") -> Notice:
    """A realistic notice of each kind for the given conference: Mette holds the seat, and in
    a substitution passes it on to Jens. Each kind is told by how it differs from her
    confirmation."""
    if kind not in _SUFFIX:
        raise ValueError(kind)
    uid_m = invite_uid(conf.slug, registration, METTE.email, conf.sender_domain)
    uid_j = invite_uid(conf.slug, registration, JENS.email, conf.sender_domain)
    confirmation = Notice(
        f"sample:{_SUFFIX[kind]}",
        kind,
        conf.slug,
        registration,
        METTE,
        InviteSpec("REQUEST", uid_m, 0),
    )
    cancel_m = InviteSpec("CANCEL", uid_m, 1)
    match kind:
        case Kind.REMINDER:
            return replace(confirmation, batch="sample")
        case Kind.SUBSTITUTION_OUT:
            return replace(confirmation, invite=cancel_m, successor=JENS, occurred_at=OCCURRED)
        case Kind.SUBSTITUTION_IN:
            jens = InviteSpec("REQUEST", uid_j, 0)
            return replace(
                confirmation, recipient=JENS, invite=jens, previous=METTE, occurred_at=OCCURRED
            )
        case Kind.SUBSTITUTION_COPY:
            organiser = Person(conf.organiser.name, str(conf.organiser.email))
            return replace(
                confirmation,
                recipient=organiser,
                invite=None,
                previous=METTE,
                successor=JENS,
                occurred_at=OCCURRED,
                told=(("previous", "cancel"), ("successor", "confirm")),
            )
        case Kind.CANCELLATION:
            return replace(confirmation, invite=cancel_m, occurred_at=OCCURRED)
        case Kind.UPDATE:
            update = InviteSpec("REQUEST", uid_m, 1)
            return replace(
                confirmation, invite=update, batch="sample", changed_from=sample_before(conf)
            )
        case Kind.CONFERENCE_CANCELLATION:
            return replace(confirmation, invite=cancel_m, batch="sample")
    return confirmation
