"""Dead letters: events the worker could not process, kept with their reason."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import redis

from notifier import keys
from notifier.notice import digest
from notifier.outbox import text


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


def _describe(payload: Any) -> tuple[str, str]:
    if isinstance(payload, dict):
        return str(payload.get("id", ""))[:128], str(payload.get("type", ""))[:64]
    return "", ""


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
        )
