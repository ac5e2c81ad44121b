"""The only Celery module: the app, its two tasks and the sweeper that runs inside workers.

Tasks are thin: they hand the payload to the Service of their process. The real clock is
read here (through Service's default) and nowhere in the pure modules.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from functools import partial
from typing import Any, ClassVar

import redis
from celery import Celery, Task, bootsteps, signals
from celery.exceptions import Reject
from celery.schedules import crontab

from notifier import broker, logs
from notifier.errors import StoreUnavailable
from notifier.service import Service
from notifier.settings import Settings
from notifier.store.pending import in_turn
from notifier.store.purge import purge_expired, purge_suppressions
from notifier.webhooks import SenderThread

# What a registration system or a worker host imports; the rest serves the worker.
__all__ = ["DELIVER", "INGEST", "PURGE", "QUEUE", "SCHEDULE", "create_app"]

log = logging.getLogger("notifier")

QUEUE = "notifier"
INGEST = broker.STAMPED_TASK  # "notifier.ingest": its tasks are numbered as they leave the queue
DELIVER = "notifier.deliver"
SCHEDULE = "notifier.schedule"
PURGE = "notifier.purge"
INLINE_MAX = 8
#: How long an event waits for an earlier event of its registration to be applied (that
#: task's worker may have died; the task comes back later and still applies in time order).
ORDER_WAIT_SECONDS = 10.0
UNACKED_MUTEX_EXPIRE = 10  # seconds; see broker_transport_options


class _Runtime:
    """One Service per process: a prefork child must not share the parent's sockets."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._pid = -1
        self._service: Service | None = None
        self.hand_on: Callable[[list[str]], None] | None = None
        self._broker: redis.Redis | None = None
        self._broker_pid = -1

    def broker_client(self) -> redis.Redis:
        """The broker's Redis (where the pending sets are): the store's client when the
        broker is the store's Redis, as by default."""
        svc = self.service()
        if self.settings.broker_url == self.settings.redis_url:
            return svc.r
        if self._broker is None or self._broker_pid != os.getpid():
            self._broker = redis.Redis.from_url(self.settings.broker_url)
            self._broker_pid = os.getpid()
        return self._broker

    def service(self) -> Service:
        if self._service is None or self._pid != os.getpid():
            client = redis.Redis.from_url(self.settings.redis_url, health_check_interval=30)
            self._service = Service(self.settings, client)
            self._service.hand_on = self.hand_on
            self._pid = os.getpid()
        return self._service

    #: The worker's exit status once it stops (recorded by the worker_shutdown signal).
    exitcode: int | None = None

    def close(self) -> None:
        if self._service is not None and self._pid == os.getpid():
            self._service.close()
        self._service = None


def create_app(settings: Settings) -> Celery:
    """The Celery app for these settings, with tasks `notifier.ingest` and `notifier.deliver`."""
    app = Celery("notifier", broker=settings.broker_url, set_as_current=False)
    _configure(app, settings)
    runtime = _Runtime(settings)
    app.notifier_runtime = runtime
    _register_tasks(app, runtime, settings)
    app.steps["consumer"].add(_sweeper_step(runtime, settings))
    if settings.webhooks_enabled:
        app.steps["consumer"].add(_webhook_step(settings))
    _connect_signals(runtime, settings)
    _survive_broker_restarts()
    return app


def _configure(app: Celery, settings: Settings) -> None:
    app.conf.update(
        task_serializer="json",
        accept_content=["json"],
        result_serializer="json",
        result_backend=None,
        task_ignore_result=True,
        task_default_queue=QUEUE,
        task_routes={"notifier.*": {"queue": QUEUE}},
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=4,
        worker_hijack_root_logger=False,
        broker_connection_retry_on_startup=True,
        # kombu's Redis transport, but a task taken from the queue while Redis refuses writes
        # (out of memory, read-only) is held until Redis records it, not lost with the worker.
        # An explicit transport also takes the place of the URL's scheme (redis, rediss).
        broker_transport=broker.TRANSPORT,
        # Wait for Redis as long as it takes: a worker that gives up after kombu's default 100
        # attempts exits, and then nothing is delivered until a person starts it again.
        broker_connection_max_retries=None,
        # Celery beat asks once a minute which scheduled reminders are due (notifier.schedule).
        beat_schedule={
            "scheduled-reminders": {"task": SCHEDULE, "schedule": 60.0},
            # Personal data of conferences past their retention period, once a day.
            "purge-expired": {"task": PURGE, "schedule": crontab(hour=3, minute=17)},
        },
        broker_transport_options=_transport_options(settings),
    )


def _transport_options(settings: Settings) -> dict[str, Any]:
    # Retries are scheduled in our own Redis index, never as Celery countdowns, so a short
    # visibility timeout is safe and a crashed worker's tasks come back quickly.
    return {
        "visibility_timeout": settings.visibility_timeout_seconds,
        # Look for abandoned (unacked) tasks every 5 s rather than kombu's ~100 s.
        "unacked_restore_interval": 5,
        "unacked_restore_throttle": 1,
        # A worker killed while it restores holds kombu's restore lock until it expires
        # (kombu's default: 300 s), and no worker restores anything meanwhile: the dead
        # worker's unacknowledged tasks would wait five minutes. Restores are quick, and
        # each is a WATCH transaction, so two overlapping ones cannot restore a task twice.
        "unacked_mutex_expire": UNACKED_MUTEX_EXPIRE,
        # One list per queue (notifier sets no priorities): the broker transport then pops
        # each task atomically into an in-flight list of its own (notifier.broker).
        "priority_steps": [0],
    }


# Every answer of the store that is not a verdict on the task (down, timeout, OOM, READONLY
# after a failover, a script error under memory pressure) is retried, never acknowledged away.
STORE_ERRORS = (StoreUnavailable, redis.RedisError)


class KeepOnStoreError(Task):  # type: ignore[misc]
    """A task whose message is never dropped because its retry could not be published.

    Celery's retry publishes a new message and acknowledges the old one; when publishing fails
    (the broker is the same full or read-only Redis) it rejects the message without requeueing,
    which drops it. Here the message is requeued instead: pushed back if the broker takes it,
    else it stays unacknowledged and kombu restores it after the visibility timeout.
    """

    def retry(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return super().retry(*args, **kwargs)
        except Reject as exc:
            if exc.requeue:
                raise
            log.warning("cannot publish the retry of %s: keeping it on the queue", self.name)
            raise Reject(exc.reason, requeue=True) from None


# Retried with backoff for as long as the store answers with an error; never dropped.
KEEP_ON_STORE_ERROR: dict[str, Any] = {
    "base": KeepOnStoreError,
    "autoretry_for": STORE_ERRORS,
    "retry_backoff": 1,
    "retry_backoff_max": 30,
    "max_retries": None,
}


def _register_tasks(app: Celery, runtime: _Runtime, settings: Settings) -> None:
    # A batch's messages are spread over every worker in chunks, each reusing SMTP sessions.
    runtime.hand_on = partial(enqueue_deliveries, app, chunk=settings.chunk_size)

    @app.task(name=INGEST, bind=True, **KEEP_ON_STORE_ERROR)  # type: ignore[untyped-decorator]
    def ingest(self: Task, event: Any) -> None:
        svc = runtime.service()
        order, pending = _publication(self.request)
        if order is None or not pending:
            message_keys = svc.ingest(event, order=order)
        else:
            with in_turn(runtime.broker_client(), pending, order, ORDER_WAIT_SECONDS):
                message_keys = svc.ingest(event, order=order)
        if len(message_keys) <= INLINE_MAX:
            # A registration's few mails go out at once, over this process's kept sessions.
            svc.deliver(message_keys)
        else:
            enqueue_deliveries(app, message_keys, chunk=settings.chunk_size)

    @app.task(name=DELIVER, **KEEP_ON_STORE_ERROR)  # type: ignore[untyped-decorator]
    def deliver(message_keys: list[str]) -> None:
        runtime.service().deliver(message_keys)

    @app.task(name=SCHEDULE)  # type: ignore[untyped-decorator]
    def schedule() -> None:
        svc = runtime.service()
        for event in svc.due_reminder_events():
            enqueue_deliveries(app, svc.ingest(event), chunk=settings.chunk_size)

    @app.task(name=PURGE)  # type: ignore[untyped-decorator]
    def purge() -> None:
        svc = runtime.service()
        now = svc.clock()
        purge_expired(svc.r, svc.conferences, now)
        # Suppressions belong to no conference: each is kept NOTIFIER_SUPPRESSION_DAYS.
        purge_suppressions(svc.r, now.timestamp() - settings.suppression_days * 86_400)


def _publication(request: Any) -> tuple[int | None, str]:
    """The ingest task's place in publication order and its registration's pending set,
    given as it left the queue (notifier.broker); (None, '') for a task that did not pass
    through it (an eager call)."""
    headers = getattr(request, "headers", None) or {}

    def header(name: str) -> Any:
        return headers.get(name, getattr(request, name, None))

    order, pending = header(broker.ORDER_HEADER), header(broker.PENDING_HEADER)
    number = order if isinstance(order, int) and order > 0 else None
    return number, pending if isinstance(pending, str) else ""


def _connect_signals(runtime: _Runtime, settings: Settings) -> None:
    @signals.after_setup_logger.connect(weak=False)  # type: ignore[untyped-decorator]
    def _logs(logger: logging.Logger, **_: Any) -> None:
        logs.install(logger, settings.log_format)

    @signals.after_setup_task_logger.connect(weak=False)  # type: ignore[untyped-decorator]
    def _task_logs(logger: logging.Logger, **_: Any) -> None:
        logs.install(logger, settings.log_format)

    @signals.worker_process_shutdown.connect(weak=False)  # type: ignore[untyped-decorator]
    def _close(**_: Any) -> None:
        runtime.close()

    @signals.worker_shutdown.connect(weak=False)  # type: ignore[untyped-decorator]
    def _close_main(sender: Any = None, **_: Any) -> None:
        # Celery sets a non-zero exitcode after "Unrecoverable error"; `notifier worker`
        # exits with it even where Celery's own command-line entry would drop it.
        runtime.exitcode = getattr(sender, "exitcode", None)
        runtime.close()


def _survive_broker_restarts() -> None:
    """Work around the kombu 5.7 / Celery 5.7 paths that kill a worker when Redis restarts.

    On a lost broker connection Celery's consumer calls `Connection.collect()`, which detaches
    the transport (`transport.client = None`), and then `Connection.close()`. Any later use of
    a channel of that connection builds a new Redis pool from `transport.client` (or from the
    channel's `connection`, None once the channel is closed) and raises AttributeError, which
    is not a connection error, so Celery stops the worker ("Unrecoverable error"). Two uses
    happen on every restart under `acks_late` with prefetch: the second close restores the
    unacknowledged messages (when the loss was noticed inside the BRPOP read, the first close
    stopped there), and tasks that finish after the reconnect acknowledge their messages on
    the old channel. See docs/WORKER_SURVIVAL.md. Applied only to the kombu release whose
    code this was read against.
    """
    global _PATCHED
    import kombu
    from kombu.transport import redis as kombu_redis

    if _PATCHED or tuple(kombu.VERSION[:2]) != (5, 7):
        return
    _skip_restore_when_detached(kombu_redis.QoS)
    _detached_is_a_connection_error(kombu_redis.Channel)
    _PATCHED = True


_PATCHED = False


def _detached(channel: Any) -> bool:
    transport = channel.connection
    return transport is None or transport.client is None


def _skip_restore_when_detached(qos: Any) -> None:
    """No restore through a torn-down connection: the messages are still in the broker's
    `unacked` hash, and every worker's periodic restore returns them to the queue after the
    visibility timeout."""
    original = qos.restore_unacked_once

    def restore_unacked_once(self: Any, stderr: Any = None) -> Any:
        self._flush()  # forget what was acknowledged meanwhile, as the original does first
        if self._delivered and _detached(self.channel):
            log.warning(
                "broker connection lost with %d unacknowledged task(s); they return to the "
                "queue after the visibility timeout",
                len(self._delivered),
            )
            self.channel.do_restore = False
        return original(self, stderr)

    qos.restore_unacked_once = restore_unacked_once


def _detached_is_a_connection_error(channel: Any) -> None:
    """A channel whose connection was torn down raises a connection error, which kombu and
    Celery handle (a late acknowledgement is logged as "Couldn't ack", and the message comes
    back after the visibility timeout, to find its work done)."""
    original = channel._connparams

    def _connparams(self: Any, asynchronous: bool = False) -> Any:
        if _detached(self):
            raise redis.ConnectionError("this channel's broker connection was lost and closed")
        return original(self, asynchronous=asynchronous)

    channel._connparams = _connparams


def enqueue_deliveries(app: Celery, message_keys: list[str], *, chunk: int) -> None:
    for i in range(0, len(message_keys), chunk):
        app.send_task(DELIVER, args=[message_keys[i : i + chunk]], queue=QUEUE)


def _sweeper_step(runtime: _Runtime, settings: Settings) -> type[bootsteps.StartStopStep]:
    class Sweeper(bootsteps.StartStopStep):  # type: ignore[misc]
        """Every few seconds, hand due retries and abandoned messages to deliver tasks."""

        requires: ClassVar[set[str]] = {"celery.worker.consumer.tasks:Tasks"}

        def start(self, consumer: Any) -> None:
            def sweep() -> None:
                try:
                    due = runtime.service().due(limit=settings.chunk_size * 10)
                    if due:
                        log.info("sweeper: %d message(s) due", len(due))
                        enqueue_deliveries(consumer.app, due, chunk=settings.chunk_size)
                except (redis.RedisError, OSError) as exc:
                    log.warning("sweeper: %s", exc)

            self.tref = consumer.timer.call_repeatedly(settings.sweep_seconds, sweep)

        def stop(self, consumer: Any) -> None:
            tref = getattr(self, "tref", None)
            if tref is not None:
                tref.cancel()

    return Sweeper


def _webhook_step(settings: Settings) -> type[bootsteps.StartStopStep]:
    class WebhookSender(bootsteps.StartStopStep):  # type: ignore[misc]
        """Every worker reports settled messages to NOTIFIER_WEBHOOK_URL (notifier.webhooks).

        The sender runs in a thread of the worker's main process: its claims keep two workers
        from sending one delivery at once, and a dead worker's claims run out."""

        requires: ClassVar[set[str]] = {"celery.worker.consumer.tasks:Tasks"}

        sender: SenderThread | None = None

        def start(self, consumer: Any) -> None:
            self.sender = SenderThread(settings).start()

        def stop(self, consumer: Any) -> None:
            if self.sender is not None:
                self.sender.stop()
                self.sender = None

    return WebhookSender
