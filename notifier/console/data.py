"""What the console's pages show, read from Redis through the store's own classes (the
Redis model stays in notifier.store): a conference's counts, its batches, its messages
that need attention, and a batch's progress."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import redis

from notifier.announce import seats_of
from notifier.domain.conference import Conference
from notifier.store.batches import Batches, BatchInfo, batch_key
from notifier.store.gate import pacing
from notifier.store.outbox import STATES, Outbox, Record
from notifier.store.roster import Roster
from notifier.store.status import counts_eta

#: The states a page lists message by message, with their replies.
ATTENTION = ("failed", "bounced", "unknown", "suppressed")
#: Danish names of the message states, as the pages show them.
STATE_NAMES = {
    "queued": "I kø",
    "sending": "Sendes",
    "retrying": "Prøves igen",
    "sent": "Sendt",
    "failed": "Fejlet",
    "skipped": "Sprunget over",
    "unknown": "Uvis levering",
    "bounced": "Afvist (bounce)",
    "suppressed": "Spærret",
}
KIND_NAMES = {
    "confirmation": "Bekræftelse",
    "reminder": "Påmindelse",
    "substitution_out": "Overdraget (afgiver)",
    "substitution_in": "Overdraget (modtager)",
    "substitution_copy": "Kopi til arrangør",
    "cancellation": "Afmelding",
    "update": "Ændring",
    "conference_cancellation": "Aflysning",
}


@dataclass(frozen=True)
class Summary:
    conference: Conference
    active: int
    cancelled: int
    states: dict[str, int] = field(default_factory=dict)

    @property
    def messages(self) -> int:
        return sum(self.states.values())


@dataclass(frozen=True)
class BatchRow:
    info: BatchInfo
    counts: dict[str, int]

    @property
    def finished(self) -> int:
        return sum(n for s, n in self.counts.items() if s not in ("queued", "sending", "retrying"))

    @property
    def planned(self) -> bool:
        return self.info.state == "planned"

    @property
    def total(self) -> int | None:
        """The batch's size; None while it is being planned (no size is known yet)."""
        return self.info.total if self.planned else None

    @property
    def so_far(self) -> int:
        """The messages created so far (while planning: no total to compare with)."""
        return sum(self.counts.values())

    @property
    def done(self) -> bool:
        return self.planned and self.finished >= self.info.total


def summary(client: redis.Redis, conf: Conference) -> Summary:
    """Seats by status and the conference's messages by state (the messages found through
    each registration's index)."""
    seats = seats_of(client, conf)
    outbox = Outbox(client)
    message_keys = outbox.keys_of_registrations(conf.slug, [s.registration for s in seats])
    found = Counter(s for s in outbox.states(message_keys).values() if s)
    states = {s: found.get(s, 0) for s in STATES}
    active = sum(1 for s in seats if s.status == "active")
    return Summary(conf, active, len(seats) - active, states)


def batches(client: redis.Redis, slug: str) -> list[BatchRow]:
    """The conference's batches, newest first (by their cutoff)."""
    outbox = Outbox(client)
    store = Batches(client, outbox, Roster(client, outbox))
    rows = []
    for key in store.of_conference(slug):
        info = store.get(key)
        if info is not None:
            rows.append(BatchRow(info, outbox.counts(key)))
    return sorted(rows, key=lambda r: r.info.cutoff, reverse=True)


def batch(client: redis.Redis, slug: str, batch_id: str) -> BatchRow | None:
    outbox = Outbox(client)
    key = batch_key(slug, batch_id)
    info = Batches(client, outbox, Roster(client, outbox)).get(key)
    return None if info is None else BatchRow(info, outbox.counts(key))


def pace_text(client: redis.Redis, cap: float, row: BatchRow | None) -> str:
    """In Danish: when the batch is expected to be done, the pace the relay allows, and a
    pause every sender is in ("" when nothing is to tell)."""
    if row is None or row.done:
        return ""
    pace = pacing(client, cap)
    parts = []
    if pace.pause_left:
        pause = f"{pace.pause_left:.0f} sek."
        parts.append(f"Afsendelsen holder pause i {pause}, fordi mailserveren bad om det.")
    if pace.learned:
        parts.append(f"Mailserveren tager imod ca. {pace.learned * 60:.0f} mails i minuttet.")
    left = counts_eta(row.counts, row.info.requested_at, pace)
    if left is not None and left > 0:
        minutes = int(left // 60) + 1
        when = "under et minut." if left < 60 else f"ca. {minutes} min."
        parts.insert(0, f"Forventet færdig om {when}")
    return " ".join(parts)


def attention(client: redis.Redis, slug: str) -> list[Record]:
    """The conference's failed, bounced, unknown and suppressed messages, newest key last."""
    outbox = Outbox(client)
    listed = outbox.failed_keys() + outbox.bounced_keys()
    listed += outbox.unknown_keys() + outbox.suppressed_keys()
    return [r for r in outbox.records(listed) if r.notice.conference == slug]
