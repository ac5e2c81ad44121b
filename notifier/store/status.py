"""Delivery status for organisers and other tools: counts per state, the failures, and the
messages that bounced after the relay's 250 (with the report's reason, and how many bounced
for each reason) or were suppressed."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass

import redis

from notifier.domain.eta import eta_seconds
from notifier.errors import UnknownBatch
from notifier.store import keys
from notifier.store.batches import Batches, BatchInfo
from notifier.store.codec import text
from notifier.store.gate import Pacing
from notifier.store.outbox import STATES, Outbox, Record
from notifier.store.roster import Roster

__all__ = ["Failure", "Status", "status"]

FINISHED = ("sent", "failed", "skipped", "unknown", "bounced", "suppressed")
UNSETTLED = ("queued", "sending", "retrying")
# The states whose messages status lists one by one (each with its reply).
LISTED = ("failed", "unknown", "bounced", "suppressed")


@dataclass(frozen=True, slots=True)
class Failure:
    """One listed message. `recipient` is the address it went to (a reminder's real one);
    `reply` the last SMTP reply, for a bounced message the report's status and diagnostic,
    for a suppressed one the suppression's reason. `reason`: a bounced message's reason
    (notifier.bounces.reason: "user_unknown", "mailbox_full", "blocked"...); "" for the rest
    and for a message bounced before reasons were recorded."""

    key: str
    registration: str
    recipient: str
    attempts: int
    reply: str
    reason: str = ""


@dataclass(frozen=True, slots=True)
class Status:
    counts: dict[str, int]
    failures: tuple[Failure, ...]
    batch: BatchInfo | None = None
    unknown: tuple[Failure, ...] = ()  # the relay may have these: no reply to the final dot
    bounced: tuple[Failure, ...] = ()  # accepted by the relay, then reported undeliverable
    suppressed: tuple[Failure, ...] = ()  # not sent: the address is on the suppression list

    @property
    def bounce_reasons(self) -> dict[str, int]:
        """How many listed bounced messages have each reason, most first ("" unrecorded)."""
        return dict(Counter(f.reason for f in self.bounced).most_common())

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    @property
    def finished(self) -> int:
        return sum(self.counts[s] for s in FINISHED)

    @property
    def done(self) -> bool:
        """For a batch: planned and every message settled."""
        if self.batch is None:
            return self.finished == self.total
        return self.batch.state == "planned" and self.finished >= self.batch.total


def eta(st: Status, pace: Pacing) -> float | None:
    """Seconds until the messages still to send are sent (see counts_eta); a batch still
    being planned has at least its size minus what is settled left."""
    left = 0
    if st.batch is not None and st.batch.state != "planned":
        left = st.batch.total - st.finished
    requested = st.batch.requested_at if st.batch else None
    return counts_eta(st.counts, requested, pace, left=left)


def counts_eta(
    counts: Mapping[str, int], requested_at: float | None, pace: Pacing, *, left: int = 0
) -> float | None:
    """Seconds until the unsettled messages of `counts` (at least `left`) are sent, None when
    nothing tells: at the rate the senders go by, after a pause they are in; unpaced, at the
    rate the settled ones went since the batch was requested (`requested_at`, epoch s)."""
    remaining = max(sum(counts.get(s, 0) for s in UNSETTLED), left)
    finished = sum(counts.get(s, 0) for s in FINISHED)
    observed = None
    if requested_at and finished and pace.now > requested_at:
        observed = finished / (pace.now - requested_at)
    return eta_seconds(remaining, pace.rate, pace.pause_left, observed)


def _failure(record: Record) -> Failure:
    reply, reason = record.last_reply, ""
    if record.state == "bounced":
        reply = f"{record.bounce_status} {record.bounce_diagnostic}".strip()
        reason = record.bounce_reason
    return Failure(record.key, record.registration, record.sent_to, record.attempts, reply, reason)


def _rows(records: list[Record], state: str) -> tuple[Failure, ...]:
    return tuple(_failure(r) for r in records if r.state == state)


def status(client: redis.Redis, batch: str | None = None, *, failures: bool = True) -> Status:
    """Counts per state (all messages, or one batch); every failed, unknown, bounced and
    suppressed message, with its reply.

    `batch` is a batch key ("conference:batch-id") or a batch id that names one batch.
    With failures=False only the counts are read (cheap enough to poll).

    Raises:
        UnknownBatch: no such batch, or the id is ambiguous (also a LookupError).
        redis.RedisError: from `client`, untranslated: callers tell a restart from others.
    """
    outbox = Outbox(client)
    if batch is None:
        rows: list[Record] = []
        if failures:
            listed = outbox.failed_keys() + outbox.unknown_keys()
            listed += outbox.bounced_keys() + outbox.suppressed_keys()
            rows = outbox.records(listed)
        return _status(outbox.counts(), rows, None)
    batches = Batches(client, outbox, Roster(client, outbox))
    found = batches.find(batch)
    if len(found) != 1:
        raise UnknownBatch(batch, found)
    info = batches.get(found[0])
    counts = outbox.counts(found[0])
    records: list[Record] = []
    if failures and any(counts[s] for s in LISTED):
        records = outbox.records(sorted(outbox.keys_in(found[0])))
    return _status({s: counts[s] for s in STATES}, records, info)


def _status(counts: dict[str, int], records: list[Record], info: BatchInfo | None) -> Status:
    return Status(
        counts,
        _rows(records, "failed"),
        info,
        unknown=_rows(records, "unknown"),
        bounced=_rows(records, "bounced"),
        suppressed=_rows(records, "suppressed"),
    )


def bounce_reasons(client: redis.Redis, batch: str) -> dict[str, int]:
    """How many of the batch's bounced messages have each reason, most first ("" for one
    bounced before reasons were recorded). Reads only the bounced messages (one SINTER, one
    HGET each): cheap enough for a polled progress resource.

    Raises:
        redis.RedisError: from `client`.
    """
    bounced = client.sinter([keys.BOUNCED, keys.batch_members(batch)])
    if not bounced:
        return {}
    pipe = client.pipeline(transaction=False)
    for key in sorted(text(k) for k in bounced):
        pipe.hget(keys.message(key), "bounce_reason")
    found = Counter(text(r) if r is not None else "" for r in pipe.execute())
    return dict(found.most_common())
