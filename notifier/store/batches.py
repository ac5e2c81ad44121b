"""Batches: reminders and conference updates, a snapshot of a conference's seats, planned
once, sent in chunks.

A batch is keyed by conference and batch id. Planning a reminder batch creates one outbox
message per active seat registered by the time the reminder was requested (so nobody gets a
reminder retroactively); an update batch, one per active seat whose attendee's invite carries
other facts than the conference file now states. Creation is idempotent, so two planners at
once, or a planner that crashed and is run again, produce each message exactly once. Whoever
holds the seat is looked up again at send time.

Update batches are numbered per conference (`update-1`, `update-2`, ...): a new number when
the facts announced differ from the last announcement's, the same batch again (resumed, never
planned twice) when they do not.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime

import redis

from notifier.domain.conference import Conference
from notifier.domain.itip import awaits_invite, would_update
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


def update_key(batch: str, registration: str) -> str:
    return f"update:{batch}:{registration}"


UPDATE_BATCH = "update-{}"


@dataclass(frozen=True, slots=True)
class BatchInfo:
    key: str
    conference: str
    batch_id: str
    state: str  # planning | planned
    cutoff: datetime
    total: int
    kind: Kind = Kind.REMINDER  # reminder or update
    requested_at: float | None = None  # epoch seconds, when it was first asked for


class Batches:
    def __init__(self, client: redis.Redis, outbox: Outbox, roster: Roster) -> None:
        self.r = client
        self.outbox = outbox
        self.roster = roster

    def open(
        self,
        conference: str,
        batch_id: str,
        cutoff: datetime,
        now: float,
        kind: Kind = Kind.REMINDER,
    ) -> BatchInfo:
        """The batch's record, created on first request (later requests keep the first cutoff)."""
        key = batch_key(conference, batch_id)
        rkey = keys.batch(key)
        pipe = self.r.pipeline(transaction=True)
        pipe.hsetnx(rkey, "conference", conference)
        pipe.hsetnx(rkey, "kind", kind.value)
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
            Kind(d.get("kind", Kind.REMINDER.value)),
            float(d["requested_at"]) if d.get("requested_at") else None,
        )

    def open_update(self, conf: Conference, occurred_at: datetime, now: float) -> BatchInfo:
        """The update batch for the facts the conference file states now: the last one if it
        announced the same facts and is still being planned or has nobody left to tell (to
        resume it), else a new one with the next number. An attendee whose invite has since
        carried other facts (an edit nobody announced, then reverted) makes a new one."""
        rkey = keys.updates(conf.slug)
        version = conf.invite_facts.text("REQUEST")
        while True:
            with self.r.pipeline(transaction=True) as pipe:
                try:
                    pipe.watch(rkey)  # type: ignore[no-untyped-call]
                    number, facts = pipe.hmget(rkey, "number", "facts")
                    n = int(number or 0)
                    if facts is not None and text(facts) == version and self._current(conf, n):
                        break
                    pipe.multi()
                    pipe.hset(rkey, mapping={"number": n + 1, "facts": version})
                    pipe.execute()
                except redis.WatchError:
                    continue
            if n:  # the previous announcement, if its planner died, is left as far as it got
                self._close(batch_key(conf.slug, UPDATE_BATCH.format(n)))
            n += 1
            break
        return self.open(conf.slug, UPDATE_BATCH.format(n), occurred_at, now, Kind.UPDATE)

    def _current(self, conf: Conference, number: int) -> bool:
        """Whether update batch `number` still stands for the conference: being planned, or
        planned with every attendee's invite carrying its facts (or on its way to)."""
        info = self.get(batch_key(conf.slug, UPDATE_BATCH.format(number)))
        if info is None or info.state == "planning":
            return True
        waiting = set(self.unfinished(info.key))
        return not any(
            seat.status == "active"
            and would_update(seat, conf)
            and update_key(info.key, seat.registration) not in waiting
            for seats in self.pages(conf.slug)
            for seat in seats
        )

    def _close(self, key: str) -> None:
        info = self.get(key)
        if info is not None and info.state == "planning":
            total = int(self.r.scard(keys.batch_members(key)))
            self.r.hset(keys.batch(key), mapping={"state": "planned", "total": total})

    def of_conference(self, conference: str) -> list[str]:
        """The keys of the conference's batches."""
        prefix = batch_key(conference, "")
        return sorted(
            k for k in (text(k) for k in self.r.smembers(keys.BATCHES)) if k.startswith(prefix)
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
            notices = [self._notice(info, seat, conf) for seat in seats if _due(info, seat, conf)]
            for notice in notices:
                self.outbox.create(notice, now, pipe)
            pipe.execute()
            if notices:
                on_page([n.key for n in notices])
        total = int(self.r.scard(keys.batch_members(info.key)))
        self.r.hset(keys.batch(info.key), mapping={"state": "planned", "total": total})
        return total

    def _notice(self, info: BatchInfo, seat: Seat, conf: Conference) -> Notice:
        # The recipient is a placeholder: the seat is read again when the mail is sent.
        if info.kind is Kind.REMINDER:
            key, kind = reminder_key(info.key, seat.registration), Kind.REMINDER
        else:
            key = update_key(info.key, seat.registration)
            kind = Kind.CONFERENCE_CANCELLATION if conf.cancelled else Kind.UPDATE
        return Notice(
            key,
            kind,
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


def _due(info: BatchInfo, seat: Seat, conf: Conference) -> bool:
    """Whether the batch has a message for the seat: a reminder for every active seat
    registered by the time it was asked for, an update for every attendee whose invite
    carries other facts than the conference file states now, or who has none recorded yet."""
    if seat.status != "active":
        return False
    if info.kind is Kind.REMINDER:
        return (seat.registered_at or seat.as_of) <= info.cutoff
    # A confirmation on its way may carry facts read before the edit: the update follows it.
    return would_update(seat, conf) or awaits_invite(seat, conf)
