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

Celery uses this class through `broker_transport` (see `notifier.tasks._configure`). The
URL's scheme is then not used to pick a transport; rediss:// still gets TLS from the
`ssl_cert_reqs` query that `notifier.settings` adds.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from functools import partial
from typing import Any

import redis
from kombu.transport import redis as kombu_redis

log = logging.getLogger("notifier")

#: Refusals that end by themselves on the same connection: memory is freed, the disk (MISCONF)
#: takes snapshots again. ExecAbortError is how redis-py may report a MULTI refused for these.
REFUSED = (redis.exceptions.OutOfMemoryError, redis.exceptions.ExecAbortError)
#: Refused by a demoted primary: only a new connection can reach the new one.
READ_ONLY = redis.exceptions.ReadOnlyError
LOST = (redis.ConnectionError, redis.TimeoutError)
FIRST_WAIT = 0.05  # seconds
MAX_WAIT = 5.0  # seconds: how late the worker notices that Redis takes writes again
#: How long a popped task waits for a lost connection before kombu's own handling takes over
#: (reconnect; the task is then lost, as with stock kombu).
BRIEF_OUTAGE = 30.0  # seconds


def _refused(exc: redis.RedisError) -> bool:
    return isinstance(exc, (*REFUSED, READ_ONLY)) or "MISCONF" in str(exc)[:200]


class QoS(kombu_redis.QoS):
    """Each write is retried whole: ZADD, HSET, ZREM, HDEL and the restore transaction may
    safely run twice, and the in-memory bookkeeping of the parent class only happens after
    Redis has taken them."""

    def append(self, message: Any, delivery_tag: Any) -> None:
        # The popped message exists only in this process until this write succeeds, so it
        # also waits through a short loss of the connection.
        write = partial(super().append, message, delivery_tag)
        self._until_written(write, "record a task", outage=BRIEF_OUTAGE)

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
        except redis.ResponseError as exc:
            if not _refused(exc):
                raise
            log.warning("broker Redis refuses writes (%s); restore skipped", type(exc).__name__)


class Channel(kombu_redis.Channel):
    QoS = QoS


class Transport(kombu_redis.Transport):
    Channel = Channel


#: The value for Celery's `broker_transport` setting.
TRANSPORT = f"{__name__}:Transport"
