"""Received delivery reports: each handled once, and every outcome counted.

A report can arrive twice: an MTA retries a pipe that timed out, a mailbox poll is
interrupted before it moved the mail away, a relay sends the same DSN again. `first` tells
the first arrival from the others, by a fingerprint the caller derives from the report (for
instance its Message-ID, or a digest of the message id, recipient and status). Only a
SHA-256 digest of the fingerprint is stored, so no address ends up in a key whatever the
caller passes, and it expires after 90 days: long after any MTA stops retrying.

`count` keeps totals per outcome in one hash (keys.BOUNCE_STATS) for `notifier status` and
the tests: "bounced", "delayed", "complaint", "duplicate", "unmatched", "forged",
"unrecognised" (OUTCOMES). They hold no personal data.
"""

from __future__ import annotations

import hashlib

import redis

from notifier.store import keys
from notifier.store.codec import text

__all__ = ["OUTCOMES", "SEEN_SECONDS", "BounceLog"]

SEEN_SECONDS = 90 * 24 * 3600
OUTCOMES = ("bounced", "delayed", "complaint", "duplicate", "unmatched", "forged", "unrecognised")


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

    def stats(self) -> dict[str, int]:
        """The totals per outcome; every outcome of OUTCOMES is present (0 when none)."""
        got = {text(k): int(v) for k, v in self.r.hgetall(keys.BOUNCE_STATS).items()}
        return {o: 0 for o in OUTCOMES} | got
