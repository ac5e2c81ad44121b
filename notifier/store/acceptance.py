"""Events accepted over HTTP when the broker is this same Redis: each event's task pushed
onto the queue and its id marked accepted by one script (scripts/accept.lua), one round trip
for a request instead of four (look up, publish, mark), and nothing half-accepted.

The task messages come from notifier.api.taskmessage (kombu's Redis transport format); a
broker on another server goes through kombu's producer instead (notifier.api.context).
"""

from __future__ import annotations

from collections.abc import Sequence

import redis.asyncio

from notifier.store import keys, lua

_ACCEPT = lua.source("accept.lua")


class AsyncAcceptance:
    def __init__(self, client: redis.asyncio.Redis, queue: str, ttl_seconds: int) -> None:
        self._accept = client.register_script(_ACCEPT)
        self.queue = queue
        self.ttl = ttl_seconds

    async def accept(self, tasks: Sequence[tuple[str, str]]) -> list[bool]:
        """Queue the (event id, task message) pairs not seen before; per pair, whether it
        was accepted now (False: a duplicate)."""
        if not tasks:
            return []
        event_keys = [self.queue]
        for event_id, _ in tasks:
            event_keys += [keys.event(event_id), keys.accepted(event_id)]
        found = await self._accept(keys=event_keys, args=[self.ttl, *(m for _, m in tasks)])
        return [bool(n) for n in found]
