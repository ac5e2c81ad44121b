"""Celery's broker transport: kombu's Redis transport, made to wait while Redis refuses writes.

By default the broker and notifier's store are one Redis. When it is full (`maxmemory` with
`noeviction`) or read-only (a demoted primary after a failover), BRPOP still hands the worker a
task message, but kombu's next step, recording that message as unacknowledged (a MULTI of ZADD
and HSET), is refused. Stock kombu lets that error stop the worker ("Unrecoverable error"), and
the popped message, no longer in the queue and never in the `unacked` hash, is lost.

Here the recording waits, with a capped backoff, until Redis takes the write, and so do
acknowledgements and rejections (the only copy of a requeued message is written then). The
recording also waits through a short loss of the connection; acknowledgements leave that case
to Celery, which already handles it.

Waiting blocks the worker's event loop. That is deliberate: every other step of the worker
writes to the same Redis too (tasks, retries, acknowledgements), so nothing could progress
anyway, and not popping more messages meanwhile keeps them safe in the queue.

A task message is also never only in the worker's memory. Stock kombu pops it with BRPOP and
then records it as unacknowledged: a worker killed between the two loses it, and SIGKILL in
a stream of events hit that window. Here the pop moves it atomically into an in-flight list
of this channel's own (a script, store/scripts/pop.lua, that also numbers an ingest task in
publication order; the blocking wait before it is a BLMOVE of the queue onto itself, which
takes nothing), and it leaves that list only once it is recorded as unacknowledged. Each
channel keeps a key alive while it runs; the periodic restore that every worker runs moves
the in-flight messages of channels whose key has expired (their worker died, or was stopped
for longer than ALIVE_SECONDS) back to the queue. A message recorded and still in flight
when its worker died comes back twice; the event id makes the second a no-op.

Celery uses this class through `broker_transport` (see `notifier.tasks._configure`). The
URL's scheme is then not used to pick a transport; rediss:// still gets TLS from the
`ssl_cert_reqs` query that `notifier.settings` adds.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable
from functools import partial
from queue import Empty
from typing import Any

import redis
from kombu.transport import redis as kombu_redis
from kombu.utils import encoding, json

from notifier.store import keys, lua
from notifier.store.refusal import LOST, READ_ONLY, refused

log = logging.getLogger("notifier")
# kombu's helpers and its Redis channel carry no type hints.
bytes_to_str: Callable[[Any], str] = encoding.bytes_to_str
loads: Callable[[str], Any] = json.loads
_RedisChannel: Any = kombu_redis.Channel

FIRST_WAIT = 0.05  # seconds
MAX_WAIT = 5.0  # seconds: how late the worker notices that Redis takes writes again
#: How long a popped task waits for a lost connection before kombu's own handling takes over
#: (reconnect; the task is then lost, as with stock kombu).
BRIEF_OUTAGE = 30.0  # seconds
#: In-flight lists (hash: list key -> queue) and their channels' liveness, in kombu's namespace.
INFLIGHT_REGISTRY = "_kombu.inflight"
ALIVE_SECONDS = 30  # a channel not heard of for this long is taken to be dead
ALIVE_REFRESH = 5.0  # seconds between refreshes of a live channel's key


_refused = refused

#: Events of one registration apply in publication order. The queue is a FIFO list, so the
#: order tasks leave it is the order they were published: the pop script numbers each
#: ingest task as it leaves (a counter in the broker's Redis) and adds the number to its
#: registration's pending set, both in one step, so that two consumers cannot reorder them.
#: The number and the set's key travel in the task's headers to notifier.tasks, which
#: applies the event once no lower number of its registration is pending (and orders events
#: of equal times by it). A task that comes back (a dead channel's in-flight list, Celery's
#: restore of unacknowledged tasks) keeps its number: it is kept per delivery tag for
#: ORDER_TTL seconds, and the restored copy carries it.
STAMPED_TASK = "notifier.ingest"
ORDER_HEADER = "notifier_order"
PENDING_HEADER = "notifier_pending"
ORDER_COUNTER = keys.PUBLICATION_ORDER
ORDER_STAMP = keys.PUBLICATION_ORDER_STAMP  # + delivery tag: the number given to it
ORDER_TTL = 7 * 86_400  # seconds
POP = lua.source("pop.lua")
PENDING = keys.template(keys.registration_pending, 2)


class QoS(kombu_redis.QoS):
    """Each write is retried whole: ZADD, HSET, ZREM, HDEL and the restore transaction may
    safely run twice, and the in-memory bookkeeping of the parent class only happens after
    Redis has taken them."""

    def append(self, message: Any, delivery_tag: Any) -> None:
        # Popped with stock BRPOP, the message exists only in this process until this write
        # succeeds, so it also waits through a short loss of the connection. Popped into an
        # in-flight list, it is safe there: a lost connection is left to Celery at once.
        outage = 0.0 if getattr(self.channel, "_inflight_queue", None) else BRIEF_OUTAGE
        write = partial(super().append, message, delivery_tag)
        self._until_written(write, "record a task", outage=outage)

    # A lost connection is left to Celery here, as before: it logs "Couldn't ack",
    # reconnects, and the message comes back from `unacked` after the visibility timeout.
    def ack(self, delivery_tag: Any) -> None:
        self._until_written(partial(super().ack, delivery_tag), "acknowledge a task")

    def reject(self, delivery_tag: Any, requeue: bool = False) -> None:
        write = partial(super().reject, delivery_tag, requeue)
        self._until_written(write, "reject a task")

    def _until_written(self, write: Callable[[], Any], what: str, outage: float = 0.0) -> None:
        """Run `write` until Redis takes it. Only the error's type is logged: redis-py puts
        the refused command in the message, and an HSET of `unacked` carries personal data."""
        wait, attempt = FIRST_WAIT, 0
        lost_at: float | None = None
        error: redis.RedisError
        while True:
            try:
                write()
                break
            except LOST as exc:
                lost_at = lost_at or time.monotonic()
                if self._abandoned() or time.monotonic() - lost_at >= outage:
                    raise
                error = exc
            except redis.ResponseError as exc:
                if not _refused(exc):
                    raise
                if isinstance(exc, READ_ONLY):
                    self.channel.pool.disconnect()  # the next try opens a new connection
                error = exc
            attempt += 1
            if attempt & (attempt - 1) == 0:  # attempts 1, 2, 4, 8, ...: a log, not a flood
                log.warning(
                    "broker Redis refuses writes (%s); waiting to %s (attempt %d)",
                    type(error).__name__,
                    what,
                    attempt,
                )
            time.sleep(wait)
            wait = min(wait * 2, MAX_WAIT)
        if attempt:
            log.warning("broker Redis takes writes again; could %s", what)

    def _abandoned(self) -> bool:
        # After a lost connection Celery detaches the old channel's transport, and a late
        # acknowledgement on that channel can never succeed (notifier.tasks raises a connection
        # error for it). Celery logs it, and the message comes back after the visibility
        # timeout; waiting here would stop the worker for good.
        transport = self.channel.connection
        return transport is None or transport.client is None

    def restore_visible(self, *args: Any, **kwargs: Any) -> None:
        # The periodic restore of abandoned messages takes a lock (a SET), refused under OOM.
        # A round skipped loses nothing: the messages stay in `unacked` for the next round.
        try:
            super().restore_visible(*args, **kwargs)  # type: ignore[no-untyped-call]
            with self.channel.conn_or_acquire() as client:
                recover_inflight(client)
        except redis.ResponseError as exc:
            if not _refused(exc):
                raise
            log.warning("broker Redis refuses writes (%s); restore skipped", type(exc).__name__)


def recover_inflight(client: redis.Redis) -> int:
    """Move the in-flight messages of dead channels back to their queues; how many moved.
    Each move is one atomic RPOPLPUSH, so two workers recovering at once move each once."""
    moved = 0
    for raw_key, raw_queue in client.hgetall(INFLIGHT_REGISTRY).items():
        key, queue = bytes_to_str(raw_key), bytes_to_str(raw_queue)
        if client.exists(_alive_key(key)):
            continue
        while client.rpoplpush(key, queue) is not None:
            moved += 1
        client.hdel(INFLIGHT_REGISTRY, key)
    if moved:
        log.warning("restored %d task(s) a dead worker had taken but not recorded", moved)
    return moved


def _alive_key(inflight: str) -> str:
    return f"{inflight}.alive"


class Channel(_RedisChannel):  # type: ignore[misc]
    """Pops into an in-flight list of its own, numbering ingest tasks (see the module's
    docstring).
    Stock BRPOP is kept where that cannot apply: several queues or priority levels (one
    RPOPLPUSH takes one source list) or a global key prefix."""

    QoS = QoS

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._inflight: str | None = None
        self._inflight_queue: str | None = None
        self._alive_at = float("-inf")
        self._refusals = 0

    def _brpop_start(self, timeout: int | None = None) -> None:
        queues = self._queue_cycle.consume(len(self.active_queues))
        if len(queues) != 1 or len(self.priority_steps) != 1 or self.global_keyprefix:
            self._inflight_queue = None
            super()._brpop_start(timeout)
            return
        queue = self._q_for_pri(queues[0], self.priority_steps[0])
        self._keep_alive(queue)
        self._inflight_queue = queue
        self._in_poll = self.client.connection
        self._brpop_sent_at = time.monotonic()
        wait = self.brpop_timeout if timeout is None else timeout
        # Waits until the queue holds a task without taking it (the list's last element
        # moves to its own end): the pop itself is a script (see _pop), which a blocking
        # command cannot be.
        self.client.connection.send_command("BLMOVE", queue, queue, "RIGHT", "RIGHT", wait or 0)

    def _keep_alive(self, queue: str) -> str:
        if self._inflight is None:
            self._inflight = f"{INFLIGHT_REGISTRY}.{queue}.{uuid.uuid4().hex}"
        now = time.monotonic()
        if now - self._alive_at >= ALIVE_REFRESH:
            try:
                with self.client.pipeline() as pipe:
                    pipe.set(_alive_key(self._inflight), 1, ex=ALIVE_SECONDS)
                    pipe.hset(INFLIGHT_REGISTRY, self._inflight, queue)
                    pipe.execute()
                self._alive_at = now
            except redis.ResponseError as exc:
                if not _refused(exc):
                    raise
                # Redis takes no writes: the pop below is refused as well (and handled).
        return self._inflight

    def _brpop_read(self, **options: Any) -> bool:
        queue, inflight = self._inflight_queue, self._inflight
        if queue is None or inflight is None:
            return bool(super()._brpop_read(**options))
        try:
            try:
                ready = self.client.parse_response(self.client.connection, "BLMOVE")
                popped = self._pop(queue, inflight) if ready else None
            except self.connection_errors:
                self.client.connection.disconnect()  # reconnect on the next round, as kombu
                raise
            except redis.ResponseError as exc:
                if not _refused(exc):
                    raise
                # The pop moves the task, a write: refused while Redis takes none. The task
                # stays in the queue; ask again a little later.
                self._refusals += 1
                if self._refusals & (self._refusals - 1) == 0:
                    log.warning("broker Redis refuses writes (%s); waiting", type(exc).__name__)
                time.sleep(min(FIRST_WAIT * 2 ** min(self._refusals, 10), MAX_WAIT))
                raise Empty() from None
            self._refusals = 0
            if not popped:
                raise Empty()  # none waiting, or another consumer took it first
            item, order, pending = popped
            self._queue_cycle.rotate(queue)
            payload = loads(bytes_to_str(item))
            if order:
                headers = payload.setdefault("headers", {})
                headers[ORDER_HEADER], headers[PENDING_HEADER] = order, pending
            self.connection._deliver(payload, queue)
            # Recorded as unacknowledged by now (QoS.append, in the call above), with the
            # order header: a task restored from there keeps its place.
            self.client.lrem(inflight, 1, item)
            return True
        finally:
            self._in_poll = None
            self._flush_brpop_reauth()

    def _pop(self, queue: str, inflight: str) -> tuple[bytes, int, str] | None:
        """Move the queue's next task into the in-flight list, numbered in publication
        order if it is an ingest task (store/scripts/pop.lua)."""
        k = [queue, inflight, ORDER_COUNTER]
        a = [ORDER_STAMP, ORDER_TTL, STAMPED_TASK, PENDING]
        found = self.client.eval(POP, len(k), *k, *a)
        return (found[0], int(found[1]), bytes_to_str(found[2])) if found else None


class Transport(kombu_redis.Transport):
    Channel = Channel


#: The value for Celery's `broker_transport` setting.
TRANSPORT = f"{__name__}:Transport"
