"""The suppression list: addresses that get no more mail after a hard bounce or a complaint.

One hash, keys.SUPPRESSIONS: normalised address (recipients.normalise, so every spelling of
a mailbox is one entry) -> JSON {"reason", "at", "message"}. That is all suppression needs:
the address to match, why (for the organiser who is asked), when (for the retention purge)
and the message whose report caused it (None for an organiser's entry). The reason's
diagnostic has its addresses masked and is cut to 200 characters.

When an address is suppressed again, the newest entry wins (its reason and time), unless the
stored one is newer still: reports can be handled out of order.

Not per conference: a mailbox that is gone is gone for the next conference too. The retention
purge removes entries older than its cut-off (`purge_older_than`), and a conference's purge
unlinks its messages from entries (`unlink_messages`).
"""

from __future__ import annotations

import builtins
import json
import re
from collections.abc import Collection
from dataclasses import dataclass

import redis
import redis.asyncio

from notifier.domain.recipients import mask, normalise
from notifier.logs import scrub
from notifier.store import keys, lua
from notifier.store.codec import text

__all__ = [
    "COMPLAINT",
    "MAILBOX_FULL",
    "ORGANISER",
    "AsyncSuppressions",
    "Suppression",
    "Suppressions",
    "hard_bounce_reason",
]

COMPLAINT = "complaint"
MAILBOX_FULL = "mailbox full"  # "mailbox full 3 times in 5 days"
ORGANISER = "added by an organiser"
MAX_DIAGNOSTIC = 200

_SUPPRESS = lua.source("suppress.lua")
_REPLACE = lua.source("replace_unchanged.lua")


def hard_bounce_reason(status: str, diagnostic: str, address: str = "") -> str:
    """'hard bounce 5.1.1: <diagnostic>': addresses masked before the cut, so that no cut
    leaves half an address the mask would no longer recognise. Given the bounced `address`,
    its mailbox name is masked too where the diagnostic names it alone ("user mette.sorensen
    unknown"), as the mask would not see it."""
    said = scrub(" ".join(diagnostic.split()))
    local = address.rpartition("@")[0]
    if len(local) >= 3:  # a shorter one would cut into ordinary words
        said = re.sub(re.escape(local), mask(address).partition("@")[0], said, flags=re.I)
    said = said[:MAX_DIAGNOSTIC]
    return f"hard bounce {status.strip()}: {said}" if said else f"hard bounce {status.strip()}"


@dataclass(frozen=True, slots=True)
class Suppression:
    address: str  # normalised
    reason: str
    at: float  # epoch seconds
    message: str | None  # the outbox key whose report caused it; None for an organiser's


def _entry(reason: str, at: float, message: str | None) -> str:
    return json.dumps({"reason": reason, "at": at, "message": message}, ensure_ascii=False)


def _parse(address: str, raw: bytes | str) -> Suppression:
    d = json.loads(raw)
    return Suppression(address, str(d["reason"]), float(d["at"]), d.get("message"))


class Suppressions:
    """The suppression list on a blocking client (intake, the CLI, the purge)."""

    def __init__(self, client: redis.Redis) -> None:
        self.r = client
        self._suppress = client.register_script(_SUPPRESS)
        self._replace = client.register_script(_REPLACE)

    def add(self, address: str, reason: str, *, message: str | None, now: float) -> bool:
        """Suppress `address` (any spelling) from `now` on. True when it was not suppressed
        before; False when it was, and then the newest entry is kept (this one, unless the
        stored one is newer)."""
        entry = _entry(reason, now, message)
        found = self._suppress(keys=[keys.SUPPRESSIONS], args=[normalise(address), entry, now])
        return int(found) == 1

    def remove(self, address: str) -> bool:
        """Lift a suppression; False when the address was not suppressed."""
        return bool(self.r.hdel(keys.SUPPRESSIONS, normalise(address)))

    def get(self, address: str) -> Suppression | None:
        found = normalise(address)
        raw = self.r.hget(keys.SUPPRESSIONS, found)
        return _parse(found, raw) if raw is not None else None

    def list(self) -> builtins.list[Suppression]:
        """Every entry, oldest first."""
        found = [_parse(text(a), raw) for a, raw in self._entries()]
        return sorted(found, key=lambda s: (s.at, s.address))

    def purge_older_than(self, older_than: float) -> int:
        """Remove entries suppressed before `older_than` (epoch seconds); how many went. An
        entry renewed meanwhile (a newer bounce) is kept."""
        removed = 0
        for address, raw in self._entries():
            if _parse(text(address), raw).at < older_than:
                removed += self._swap(address, raw, "")
        return removed

    def unlink_messages(self, messages: Collection[str], *, dry_run: bool = False) -> int:
        """Drop the link to any of `messages` (a purged conference's outbox keys) from the
        entries that name one, so that no entry ties an address to that conference. The
        address stays suppressed. How many entries were (or would be) changed."""
        changed = 0
        for address, raw in self._entries():
            entry = _parse(text(address), raw)
            if entry.message is None or entry.message not in messages:
                continue
            unlinked = _entry(entry.reason, entry.at, None)
            changed += 1 if dry_run else self._swap(address, raw, unlinked)
        return changed

    def _entries(self) -> builtins.list[tuple[bytes | str, bytes | str]]:
        return list(self.r.hscan_iter(keys.SUPPRESSIONS, count=1000))

    def _swap(self, address: bytes | str, was: bytes | str, now: str) -> int:
        return int(self._replace(keys=[keys.SUPPRESSIONS], args=[address, was, now]))


class AsyncSuppressions:
    """What delivery asks before each send, on its asyncio client."""

    def __init__(self, client: redis.asyncio.Redis) -> None:
        self.r = client

    async def reason(self, address: str) -> str | None:
        """Why `address` (any spelling) is suppressed, or None when it is not. One HGET."""
        found = normalise(address)
        raw = await self.r.hget(keys.SUPPRESSIONS, found)
        return None if raw is None else _parse(found, raw).reason
