"""Reminder batches: a snapshot of a conference's seats, planned once, sent in chunks.

A batch is keyed by conference and batch id. Planning creates one outbox message per active
seat registered by the time the reminder was requested (so nobody gets a reminder
retroactively); creation is idempotent, so two planners at once, or a planner that crashed
and is run again, produce each message exactly once. Whoever holds the seat is looked up
again at send time.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime

import redis

from notifier.domain.conference import Conference
from notifier.domain.notice import Kind, Notice
from notifier.domain.plan import Seat
from notifier.store import keys
from notifier.store.codec import text
from notifier.store.outbox import Outbox
from notifier.store.roster import Roster

PAGE = 500


def batch_key(conference: str, batch_id: str) -> str:
    return f"{conference}:{batch_id}"


def reminder_key(batch: str, registration: str) -> str:
    return f"reminder:{batch}:{registration}"


@dataclass(frozen=True, slots=True)
class BatchInfo:
    key: str
    conference: str
    batch_id: str
    state: str  # planning | planned
    cutoff: datetime
    total: int


class Batches:
    def __init__(self, client: redis.Redis, outbox: Outbox, roster: Roster) -> None:
        self.r = client
        self.outbox = outbox
        self.roster = roster

    def open(self, conference: str, batch_id: str, cutoff: datetime, now: float) -> BatchInfo:
        """The batch's record, created on first request (later requests keep the first cutoff)."""
        key = batch_key(conference, batch_id)
        rkey = keys.batch(key)
        pipe = self.r.pipeline(transaction=True)
        pipe.hsetnx(rkey, "conference", conference)
        pipe.hsetnx(rkey, "batch_id", batch_id)
        pipe.hsetnx(rkey, "state", "planning")
        pipe.hsetnx(rkey, "cutoff", cutoff.isoformat())
        pipe.hsetnx(rkey, "requested_at", str(now))
        pipe.sadd(keys.BATCHES, key)
        pipe.execute()
        info = self.get(key)
        assert info is not None
        return info

    def get(self, key: str) -> BatchInfo | None:
        raw = self.r.hgetall(keys.batch(key))
        if not raw:
            return None
        d = {text(k): text(v) for k, v in raw.items()}
        return BatchInfo(
            key,
            d["conference"],
            d["batch_id"],
            d["state"],
            datetime.fromisoformat(d["cutoff"]),
            int(d.get("total", 0)),
        )

    def find(self, batch_id: str) -> list[str]:
        """Batch keys whose id (or whole key) is `batch_id`."""
        found = [text(k) for k in self.r.smembers(keys.BATCHES)]
        return sorted(k for k in found if k == batch_id or k.partition(":")[2] == batch_id)

    def plan(
        self, info: BatchInfo, conf: Conference, now: float, on_page: Callable[[list[str]], None]
    ) -> int:
        """Create the batch's messages (idempotent); returns the batch's size.

        Each page's message keys go to `on_page` as soon as they exist, so sending starts
        while the rest of a large batch is still being planned.
        """
        for seats in self.pages(conf.slug):
            pipe = self.r.pipeline(transaction=False)
            notices = [
                self._notice(info, seat)
                for seat in seats
                if seat.status == "active" and (seat.registered_at or seat.as_of) <= info.cutoff
            ]
            for notice in notices:
                self.outbox.create(notice, now, pipe)
            pipe.execute()
            if notices:
                on_page([n.key for n in notices])
        total = int(self.r.scard(keys.batch_members(info.key)))
        self.r.hset(keys.batch(info.key), mapping={"state": "planned", "total": total})
        return total

    def _notice(self, info: BatchInfo, seat: Seat) -> Notice:
        # The recipient is a placeholder: the seat is read again when the mail is sent.
        return Notice(
            reminder_key(info.key, seat.registration),
            Kind.REMINDER,
            info.conference,
            seat.registration,
            seat.attendee,
            batch=info.key,
        )

    def pages(self, conference: str) -> Iterator[list[Seat]]:
        """The conference's seats, a page (one MGET) at a time."""
        page: list[str] = []
        for reg in self.roster.registrations(conference):
            page.append(reg)
            if len(page) == PAGE:
                yield self._seats(conference, page)
                page = []
        if page:
            yield self._seats(conference, page)

    def _seats(self, conference: str, registrations: list[str]) -> list[Seat]:
        raws = self.r.mget([keys.seat(conference, reg) for reg in registrations])
        return [Seat.from_json(text(raw)) for raw in raws if raw]

    def record_request(self, event_id: str, event_type: str, key: str) -> None:
        """The event marker of a reminder request: the same event id again is seen before."""
        self.r.set(keys.event(event_id), json.dumps({"type": event_type, "batch": key}))

    def unfinished(self, key: str) -> list[str]:
        members = sorted(self.outbox.keys_in(key))
        states = self.outbox.states(members)
        return [k for k in members if states[k] in ("queued", "retrying")]
