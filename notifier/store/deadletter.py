"""Dead letters: events the worker could not process, kept with their reason."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import redis

from notifier.domain.notice import digest
from notifier.store import keys, lua
from notifier.store.codec import text


@dataclass(frozen=True, slots=True)
class DeadLetter:
    id: str
    event_id: str
    event_type: str
    at: float
    reason: str
    fields: tuple[str, ...]
    payload: Any
    purged_at: float | None = None  # set by a retention purge, which drops the payload
    # The record as stored: a replay removes the letter only if it is still this record, so
    # that the same event failing again meanwhile (same id, new time) is kept.
    raw: str = field(default="", repr=False, compare=False)


def event_of(payload: Any) -> dict[str, Any] | None:
    """The event a payload holds, if it can hold one: an object, or JSON text of one.

    A sender may publish the event as JSON text; the letter keeps it as it came.
    """
    if isinstance(payload, str | bytes):
        try:
            payload = json.loads(payload)
        except (ValueError, UnicodeDecodeError):
            return None
    return payload if isinstance(payload, dict) else None


def _describe(payload: Any) -> tuple[str, str]:
    event = event_of(payload)
    if event is not None:
        return str(event.get("id", ""))[:128], str(event.get("type", ""))[:64]
    return "", ""


@dataclass
class Replay:
    """What a replay did with each chosen letter."""

    replayed: list[str] = field(default_factory=list)
    not_events: list[str] = field(default_factory=list)  # kept: the payload is no event
    purged: list[str] = field(default_factory=list)  # kept for statistics, no payload
    not_tried: list[str] = field(default_factory=list)  # kept: publishing failed first
    error: str = ""  # why publishing failed

    @property
    def complete(self) -> bool:
        return not (self.not_events or self.not_tried)


_REMOVE_UNCHANGED = lua.source("remove_unchanged.lua")


class DeadLetters:
    def __init__(self, client: redis.Redis) -> None:
        self.r = client

    def put(self, payload: Any, errors: Sequence[tuple[str, str]], *, now: float) -> str:
        """Keep an event with its errors; the same payload and reason are kept once."""
        event_id, event_type = _describe(payload)
        body = json.dumps(payload, ensure_ascii=False, sort_keys=True, default=str)
        reason = "; ".join(f"{f}: {r}" for f, r in errors)
        dl_id = "dl-" + digest(body, reason, length=16)
        record = {
            "id": dl_id,
            "event_id": event_id,
            "type": event_type,
            "at": now,
            "reason": reason,
            "fields": [f for f, _ in errors],
            "payload": payload,
        }
        pipe = self.r.pipeline(transaction=True)
        pipe.hset(keys.DEAD, dl_id, json.dumps(record, ensure_ascii=False, default=str))
        pipe.zadd(keys.DEAD_ORDER, {dl_id: now}, nx=True)
        pipe.execute()
        return dl_id

    def list(self) -> list[DeadLetter]:
        ids = [text(i) for i in self.r.zrange(keys.DEAD_ORDER, 0, -1)]
        raws = self.r.hmget(keys.DEAD, ids) if ids else []
        return [self._load(text(raw)) for raw in raws if raw]

    def get(self, dl_id: str) -> DeadLetter | None:
        raw = self.r.hget(keys.DEAD, dl_id)
        return self._load(text(raw)) if raw else None

    def remove(self, dl_id: str) -> None:
        pipe = self.r.pipeline(transaction=True)
        pipe.hdel(keys.DEAD, dl_id)
        pipe.zrem(keys.DEAD_ORDER, dl_id)
        pipe.execute()

    def remove_unchanged(self, letter: DeadLetter) -> bool:
        """Remove the letter if it is still as read; False if it changed or is gone."""
        done = self.r.eval(_REMOVE_UNCHANGED, 2, keys.DEAD, keys.DEAD_ORDER, letter.id, letter.raw)
        return bool(done)

    def replay(
        self, letters: Sequence[DeadLetter], send: Callable[[dict[str, Any]], None]
    ) -> Replay:
        """Hand each letter's event to `send` (which publishes it), then remove the letter.

        A letter leaves only once `send` returned, so its event is on the queue. When `send`
        raises, that letter and the rest stay; the error is reported, not raised.
        """
        report = Replay()
        for i, letter in enumerate(letters):
            event = event_of(letter.payload)
            if letter.purged_at is not None:
                report.purged.append(letter.id)
                continue
            if event is None:
                report.not_events.append(letter.id)
                continue
            try:
                send(event)
            except Exception as exc:  # whatever the broker client raises: stop, keep the rest
                report.error = f"{type(exc).__name__}: {exc}"
                report.not_tried = [d.id for d in letters[i:] if d.purged_at is None]
                return report
            self.remove_unchanged(letter)
            report.replayed.append(letter.id)
        return report

    @staticmethod
    def _load(raw: str) -> DeadLetter:
        d = json.loads(raw)
        return DeadLetter(
            d["id"],
            d["event_id"],
            d["type"],
            d["at"],
            d["reason"],
            tuple(d["fields"]),
            d["payload"],
            d.get("purged_at"),
            raw,
        )
