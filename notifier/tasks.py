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
from celery import Celery, bootsteps, signals
from celery.schedules import crontab

from notifier import logs
from notifier.purge import purge_expired
from notifier.service import Service
from notifier.settings import Settings

log = logging.getLogger("notifier")

QUEUE = "notifier"
INGEST = "notifier.ingest"
DELIVER = "notifier.deliver"
SCHEDULE = "notifier.schedule"
PURGE = "notifier.purge"
INLINE_MAX = 8


class _Runtime:
    """One Service per process: a prefork child must not share the parent's sockets."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._pid = -1
        self._service: Service | None = None
        self.hand_on: Callable[[list[str]], None] | None = None

    def service(self) -> Service:
        if self._service is None or self._pid != os.getpid():
            client = redis.Redis.from_url(self.settings.redis_url, health_check_interval=30)
            self._service = Service(self.settings, client)
            self._service.hand_on = self.hand_on
            self._pid = os.getpid()
        return self._service

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
    _connect_signals(runtime, settings)
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
        # Celery beat asks once a minute which scheduled reminders are due (notifier.schedule).
        beat_schedule={
            "scheduled-reminders": {"task": SCHEDULE, "schedule": 60.0},
            # Personal data of conferences past their retention period, once a day.
            "purge-expired": {"task": PURGE, "schedule": crontab(hour=3, minute=17)},
        },
        # Retries are scheduled in our own Redis index, never as Celery countdowns, so a short
        # visibility timeout is safe and a crashed worker's tasks come back quickly.
        broker_transport_options={
            "visibility_timeout": settings.visibility_timeout_seconds,
            # Look for abandoned (unacked) tasks every 5 s rather than kombu's ~100 s.
            "unacked_restore_interval": 5,
            "unacked_restore_throttle": 1,
        },
    )


def _register_tasks(app: Celery, runtime: _Runtime, settings: Settings) -> None:
    # A batch's messages are spread over every worker in chunks, each reusing SMTP sessions.
    runtime.hand_on = partial(enqueue_deliveries, app, chunk=settings.chunk_size)

    @app.task(  # type: ignore[untyped-decorator]
        name=INGEST,
        autoretry_for=(redis.ConnectionError, redis.TimeoutError),
        retry_backoff=1,
        retry_backoff_max=30,
        max_retries=None,
    )
    def ingest(event: Any) -> None:
        svc = runtime.service()
        message_keys = svc.ingest(event)
        if len(message_keys) <= INLINE_MAX:
            # A registration's few mails go out at once, over this process's kept sessions.
            svc.deliver(message_keys)
        else:
            enqueue_deliveries(app, message_keys, chunk=settings.chunk_size)

    @app.task(  # type: ignore[untyped-decorator]
        name=DELIVER,
        autoretry_for=(redis.ConnectionError, redis.TimeoutError),
        retry_backoff=1,
        retry_backoff_max=30,
        max_retries=None,
    )
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
        purge_expired(svc.r, svc.conferences, svc.clock())


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
    def _close_main(**_: Any) -> None:
        runtime.close()


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
