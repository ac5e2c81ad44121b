"""Received delivery reports: each handled once, and every outcome counted.

A report can arrive twice: an MTA retries a pipe that timed out, a mailbox poll is
interrupted before it moved the mail away, a relay sends the same DSN again. `first` tells
the first arrival from the others, by a fingerprint the caller derives from the report (for
instance its Message-ID, or a digest of the message id, recipient and status). Only a
SHA-256 digest of the fingerprint is stored, so no address ends up in a key whatever the
caller passes, and it expires after 90 days: long after any MTA stops retrying.

`count` keeps totals per outcome in one hash (keys.BOUNCE_STATS) for `notifier status`,
`/metrics` and the tests (OUTCOMES); `count_reason` the applied reports per reason
(keys.BOUNCE_REASONS) and `signal` when a report last said our side has a problem
(keys.BOUNCE_SIGNALS) and how many did per UTC day (keys.bounce_signal_day, kept
SIGNAL_DAYS_KEPT days), which `recent_signals` sums for the console's notice. None of them
holds personal data.

`mailbox_full` counts full-mailbox failures per address, keyed by a SHA-256 digest of the
normalised address (never the address), each entry expiring after the counting span.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import redis

from notifier.domain.recipients import normalise
from notifier.store import keys
from notifier.store.codec import text

__all__ = [
    "ALL_OUTCOMES",
    "OUTCOMES",
    "RECENT_SIGNAL_DAYS",
    "SEEN_SECONDS",
    "BounceLog",
    "FullMailbox",
    "Signal",
]

SEEN_SECONDS = 90 * 24 * 3600
SIGNAL_DAYS_KEPT = 31
RECENT_SIGNAL_DAYS = 7  # "recently", for the console's notice and `notifier status`
OUTCOMES = (
    "bounced",
    "delayed",
    "complaint",
    "auth_failure",
    "auto_reply",
    "mismatched",
    "duplicate",
    "unmatched",
    "forged",
    "unrecognised",
    "too_large",
    "too_many_parts",
)
# Every outcome the intake counts: OUTCOMES, and those of reports applied to nothing
# (ignored), left to be received again (early) or kept for a look (error).
ALL_OUTCOMES = (*OUTCOMES, "ignored", "early", "error")


@dataclass(frozen=True, slots=True)
class FullMailbox:
    """Full-mailbox failures for one address within the span: how many, the first's time."""

    count: int
    first_at: float


@dataclass(frozen=True, slots=True)
class Signal:
    """Reports of one kind of our side's problem within the last days: how many, and the
    time of the latest (epoch seconds)."""

    reason: str
    count: int
    last_at: float


def _day(at: float) -> str:
    return datetime.fromtimestamp(at, UTC).strftime("%Y-%m-%d")


class BounceLog:
    def __init__(self, client: redis.Redis) -> None:
        self.r = client

    def seen(self, fingerprint: str) -> bool:
        """Whether `first` has been told of `fingerprint` (within 90 days), without telling it."""
        digest = hashlib.sha256(fingerprint.encode("utf-8")).hexdigest()
        return bool(self.r.exists(keys.bounce_report(digest)))

    def first(self, fingerprint: str, now: float) -> bool:
        """True the first time `fingerprint` is seen (within 90 days), False after that.
        `now` (epoch seconds) is stored as the value, for whoever inspects the key."""
        digest = hashlib.sha256(fingerprint.encode("utf-8")).hexdigest()
        return bool(self.r.set(keys.bounce_report(digest), now, nx=True, ex=SEEN_SECONDS))

    def count(self, outcome: str) -> int:
        """Count one report with this outcome; the new total."""
        if not outcome:
            raise ValueError("an outcome must be named")
        return int(self.r.hincrby(keys.BOUNCE_STATS, outcome, 1))

    def count_reason(self, reason: str) -> None:
        self.r.hincrby(keys.BOUNCE_REASONS, reason, 1)

    def reasons(self) -> dict[str, int]:
        return {text(k): int(v) for k, v in self.r.hgetall(keys.BOUNCE_REASONS).items()}

    def signal(self, reason: str, now: float) -> None:
        """A report said our side has a problem of this kind, at `now` (epoch seconds)."""
        day = keys.bounce_signal_day(_day(now))
        pipe = self.r.pipeline(transaction=True)
        pipe.hset(keys.BOUNCE_SIGNALS, reason, now)
        pipe.hincrby(day, reason, 1)
        pipe.expire(day, SIGNAL_DAYS_KEPT * 86_400)
        pipe.execute()

    def recent_signals(self, now: float, days: int) -> list[Signal]:
        """The kinds of our side's problem reported on the last `days` UTC days (today
        included, at most SIGNAL_DAYS_KEPT), most reported first."""
        today = datetime.fromtimestamp(now, UTC)
        dates = [_day((today - timedelta(days=n)).timestamp()) for n in range(days)]
        pipe = self.r.pipeline(transaction=False)
        for date in dates:
            pipe.hgetall(keys.bounce_signal_day(date))
        pipe.hgetall(keys.BOUNCE_SIGNALS)
        *per_day, last = pipe.execute()
        counts: dict[str, int] = {}
        for found in per_day:
            for reason, n in found.items():
                counts[text(reason)] = counts.get(text(reason), 0) + int(n)
        latest = {text(k): float(v) for k, v in last.items()}
        found = [Signal(r, n, latest.get(r, 0.0)) for r, n in counts.items()]
        return sorted(found, key=lambda s: (-s.count, s.reason))

    def signals(self) -> dict[str, float]:
        """When each kind of our side's problem was last reported."""
        return {text(k): float(v) for k, v in self.r.hgetall(keys.BOUNCE_SIGNALS).items()}

    def mailbox_full(self, address: str, bounce_id: str, now: float, span: float) -> FullMailbox:
        """Record a full-mailbox failure of message `bounce_id` for `address`; the failures
        within the last `span` seconds (this one included)."""
        digest = hashlib.sha256(normalise(address).encode("utf-8")).hexdigest()
        key = keys.mailbox_full(digest)
        pipe = self.r.pipeline(transaction=True)
        pipe.zadd(key, {bounce_id: now})
        pipe.zremrangebyscore(key, "-inf", now - span)
        pipe.expire(key, int(span) + 1)
        pipe.zrange(key, 0, 0, withscores=True)
        pipe.zcard(key)
        *_, first, count = pipe.execute()
        return FullMailbox(int(count), float(first[0][1]) if first else now)

    def stats(self) -> dict[str, int]:
        """The totals per outcome; every outcome of OUTCOMES is present (0 when none)."""
        got = {text(k): int(v) for k, v in self.r.hgetall(keys.BOUNCE_STATS).items()}
        return {o: 0 for o in OUTCOMES} | got
