"""Every Redis key notifier uses, in one place."""

from __future__ import annotations

PREFIX = "notifier"

COUNTS = f"{PREFIX}:counts"  # hash: state -> number of messages in it
SENDING = f"{PREFIX}:sending"  # zset: message key -> lease deadline (epoch s)
RETRY = f"{PREFIX}:retry"  # zset: message key -> due time (epoch s)
QUEUED = f"{PREFIX}:queued"  # zset: message key -> enqueued at (epoch s), for the sweeper
FAILED = f"{PREFIX}:failed"  # set: keys of failed messages, for status
UNKNOWN = f"{PREFIX}:unknown"  # set: keys of messages whose delivery is unknown, for status
BATCHES = f"{PREFIX}:batches"  # set: batch keys ("conference:batch-id")
DEAD = f"{PREFIX}:dead"  # hash: dead-letter id -> JSON record
DEAD_ORDER = f"{PREFIX}:dead:order"  # zset: dead-letter id -> time
RATE = f"{PREFIX}:rate"  # rate limiter: the next free send slot (epoch s)
PAUSE = f"{PREFIX}:pause"  # every sender waits until this time (epoch s) after a 432


def message(key: str) -> str:
    return f"{PREFIX}:msg:{key}"


def event(event_id: str) -> str:
    return f"{PREFIX}:event:{event_id}"


def batch(batch_id: str) -> str:
    return f"{PREFIX}:batch:{batch_id}"


def batch_counts(batch_id: str) -> str:
    return f"{PREFIX}:batch:{batch_id}:counts"


def batch_members(batch_id: str) -> str:
    return f"{PREFIX}:batch:{batch_id}:messages"


def roster(conference: str) -> str:
    """Hash: registration id -> JSON of the seat (current attendee, invite UID, SEQUENCE)."""
    return f"{PREFIX}:roster:{conference}"


def invites(conference: str) -> str:
    """Hash: invite UID -> last SEQUENCE sent for it."""
    return f"{PREFIX}:invites:{conference}"
