"""Delivery status for organisers and other tools: counts per state and the failures."""

from __future__ import annotations

from dataclasses import dataclass

import redis

from notifier.errors import UnknownBatch
from notifier.store.batches import Batches, BatchInfo
from notifier.store.outbox import STATES, Outbox, Record
from notifier.store.roster import Roster

__all__ = ["Failure", "Status", "status"]

FINISHED = ("sent", "failed", "skipped", "unknown")


@dataclass(frozen=True, slots=True)
class Failure:
    key: str
    registration: str
    recipient: str
    attempts: int
    reply: str


@dataclass(frozen=True, slots=True)
class Status:
    counts: dict[str, int]
    failures: tuple[Failure, ...]
    batch: BatchInfo | None = None
    unknown: tuple[Failure, ...] = ()  # the relay may have these: no reply to the final dot

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


def _failure(record: Record) -> Failure:
    return Failure(
        record.key,
        record.registration,
        record.notice.recipient.email,
        record.attempts,
        record.last_reply,
    )


def status(client: redis.Redis, batch: str | None = None, *, failures: bool = True) -> Status:
    """Counts per state (all messages, or one batch); every failed message and every message
    whose delivery is unknown, with its reply.

    `batch` is a batch key ("conference:batch-id") or a batch id that names one batch.
    With failures=False only the counts are read (cheap enough to poll).

    Raises:
        UnknownBatch: no such batch, or the id is ambiguous (also a LookupError).
        redis.RedisError: from `client`, untranslated: callers tell a restart from others.
    """
    outbox = Outbox(client)
    if batch is None:
        everywhere = outbox.records(outbox.failed_keys()) if failures else []
        unsure = outbox.records(outbox.unknown_keys()) if failures else []
        return Status(
            outbox.counts(),
            tuple(_failure(r) for r in everywhere),
            unknown=tuple(_failure(r) for r in unsure),
        )
    batches = Batches(client, outbox, Roster(client, outbox))
    found = batches.find(batch)
    if len(found) != 1:
        raise UnknownBatch(batch, found)
    info = batches.get(found[0])
    counts = outbox.counts(found[0])
    records: list[Record] = []
    if failures and (counts["failed"] or counts["unknown"]):
        records = outbox.records(sorted(outbox.keys_in(found[0])))
    return Status(
        {s: counts[s] for s in STATES},
        tuple(_failure(r) for r in records if r.state == "failed"),
        info,
        tuple(_failure(r) for r in records if r.state == "unknown"),
    )
