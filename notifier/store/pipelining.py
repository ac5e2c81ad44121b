"""Lua script calls made at about the same time go to Redis together, in one pipeline.

A worker process runs several SMTP sessions on one event loop, and each message costs two
script calls (claim and finish). Sent one by one, every call is a write, a wake-up and a
reply of its own; in a reminder batch those round trips took a measurable share of the
worker's CPU. Calls that arrive while one pipeline is on its way wait for the next, which
leaves as soon as the first returns: no timer, no added delay when the worker is idle, and larger
pipelines exactly when it is busy. Every call still gets its own reply (or error), and a
pipeline runs its calls in order, so nothing about the state machine changes.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import redis.asyncio
from redis.exceptions import NoScriptError


@dataclass(frozen=True, slots=True)
class Script:
    source: str
    sha: str = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "sha", hashlib.sha1(self.source.encode()).hexdigest())


@dataclass(slots=True)
class _Call:
    script: Script
    keys: Sequence[str]
    args: Sequence[Any]
    reply: asyncio.Future[Any]


class Pipelined:
    """Runs script calls on one asyncio client, each flush as one pipeline."""

    def __init__(self, client: redis.asyncio.Redis) -> None:
        self.client = client
        self._waiting: list[_Call] = []
        self._flushing = False
        self._flusher: asyncio.Task[None] | None = None  # held: the loop keeps only weak refs

    async def call(self, script: Script, keys: Sequence[str], args: Sequence[Any]) -> Any:
        return await self.submit(script, keys, args)

    def submit(
        self, script: Script, keys: Sequence[str], args: Sequence[Any]
    ) -> asyncio.Future[Any]:
        """Queue a call; its reply, once it ran. Calls run in the order they were queued."""
        loop = asyncio.get_running_loop()
        reply: asyncio.Future[Any] = loop.create_future()
        self._waiting.append(_Call(script, keys, args, reply))
        if not self._flushing:
            # Started on the next turn of the loop: calls the other sessions make in this
            # turn travel along.
            self._flushing = True
            self._flusher = loop.create_task(self._flush())
        return reply

    async def _flush(self) -> None:
        try:
            while self._waiting:
                calls, self._waiting = self._waiting, []
                try:
                    await self._run(calls)
                except Exception as exc:  # the connection failed: every call hears of it
                    for c in calls:
                        if not c.reply.done():
                            c.reply.set_exception(exc)
        finally:
            self._flushing = False

    async def _run(self, calls: list[_Call]) -> None:
        replies = await self._send(calls)
        unknown = [i for i, r in enumerate(replies) if isinstance(r, NoScriptError)]
        if unknown:  # a restarted or flushed Redis has forgotten the scripts
            for script in {calls[i].script for i in unknown}:
                await self.client.script_load(script.source)
            again = await self._send([calls[i] for i in unknown])
            for i, r in zip(unknown, again, strict=True):
                replies[i] = r
        for c, r in zip(calls, replies, strict=True):
            if c.reply.done():  # its caller was cancelled
                continue
            if isinstance(r, Exception):
                c.reply.set_exception(r)
            else:
                c.reply.set_result(r)

    async def _send(self, calls: Sequence[_Call]) -> list[Any]:
        pipe = self.client.pipeline(transaction=False)
        for c in calls:
            pipe.evalsha(c.script.sha, len(c.keys), *c.keys, *c.args)
        return list(await pipe.execute(raise_on_error=False))
