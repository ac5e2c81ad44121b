"""Seats and processed events in Redis: applying an event is one optimistic transaction.

The event marker, the seat and the event's outbox messages are written together (WATCH/MULTI),
so a crash leaves either nothing (the redelivered event is planned again) or everything (the
redelivered event finds its marker and only its unfinished messages are handed on).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterator

import redis

from notifier.domain.events import Event
from notifier.domain.plan import Plan, Seat
from notifier.store import keys
from notifier.store.outbox import Outbox

log = logging.getLogger(__name__)

Planner = Callable[[Seat | None], Plan]


class Roster:
    def __init__(self, client: redis.Redis, outbox: Outbox) -> None:
        self.r = client
        self.outbox = outbox

    def seat(self, conference: str, registration: str) -> Seat | None:
        raw = self.r.get(keys.seat(conference, registration))
        return Seat.from_json(raw) if raw else None

    def seen(self, event_id: str) -> bool:
        """Whether an event with this id has been applied (its marker exists)."""
        return bool(self.r.exists(keys.event(event_id)))

    def registrations(self, conference: str) -> Iterator[str]:
        for reg in self.r.sscan_iter(keys.roster(conference), count=1000):
            yield reg.decode()

    def apply(
        self, event: Event, registration: str, planner: Planner, *, now: float
    ) -> tuple[list[str], Plan | None]:
        """Apply an event to its seat once. Returns its message keys and the plan (None when
        the event had been applied before)."""
        ekey = keys.event(event.id)
        skey = keys.seat(event.conference, registration)
        while True:
            with self.r.pipeline(transaction=True) as pipe:
                try:
                    pipe.watch(ekey, skey)  # type: ignore[no-untyped-call]
                    done, raw = pipe.mget(ekey, skey)
                    if done:
                        return list(json.loads(done)["messages"]), None
                    plan = planner(Seat.from_json(raw) if raw else None)
                    pipe.multi()
                    self._write(pipe, event, plan, skey, ekey, now)
                    pipe.execute()
                    return [n.key for n in plan.notices], plan
                except redis.WatchError:
                    continue

    def _write(
        self,
        pipe: redis.client.Pipeline,
        event: Event,
        plan: Plan,
        skey: str,
        ekey: str,
        now: float,
    ) -> None:
        if plan.seat is not None:
            pipe.set(skey, plan.seat.to_json())
            pipe.sadd(keys.roster(event.conference), plan.seat.registration)
        for notice in plan.notices:
            self.outbox.create(notice, now, pipe)
        record = {
            "type": event.type,
            "at": now,
            "note": plan.note,
            "messages": [n.key for n in plan.notices],
        }
        pipe.set(ekey, json.dumps(record))
