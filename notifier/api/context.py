"""What every request of the API shares: settings, the Redis client, the conference files and
the publisher of tasks.

Publishing goes through a Celery app of our own (notifier.tasks.create_app), as
`notifier publish` does, so a task looks exactly like one a registration system sends:
`notifier.ingest` on queue `notifier`, the event as its one JSON argument. Celery's producer
pool is shared by the threads that serve requests (kombu's pools are thread-safe), and a
publish is bounded: a few quick retries, then BrokerUnavailable (503 for the client, which
retries with the same event id).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import redis
import redis.asyncio
from kombu.exceptions import KombuError

from notifier.errors import BrokerUnavailable
from notifier.loading import Conferences
from notifier.settings import Settings
from notifier.store import keys
from notifier.store.acceptance import AsyncAcceptance
from notifier.taskmessage import QUEUE, TaskMessages

log = logging.getLogger("notifier.api")

#: How long an accepted event id answers "duplicate" without its event marker (the worker
#: writes that once it applied the event; the marker then answers for as long as it exists).
ACCEPTED_SECONDS = 7 * 24 * 3600
#: A publish while the broker is down: about a second of retries, then 503.
PUBLISH_RETRY = {"max_retries": 2, "interval_start": 0.1, "interval_step": 0.3, "interval_max": 0.5}
#: Redis calls of a request: a store that does not answer within this is "down" (503).
REDIS_TIMEOUT = 5.0
#: kombu's publish batch (Producer.batch): the LPUSHes of one request go to Redis in one
#: pipeline of at most this many commands, instead of a round trip (and a new client object)
#: per event. A failed flush raises BatchPublishError (a KombuError): 503, as before.
PUBLISH_BATCH = 1000


class Publisher:
    """Puts `notifier.ingest` tasks on the broker."""

    def __init__(self, settings: Settings) -> None:
        from notifier.tasks import create_app

        self.app = create_app(settings)
        options = dict(self.app.conf.broker_transport_options)
        options.update(socket_connect_timeout=REDIS_TIMEOUT, socket_timeout=REDIS_TIMEOUT)
        self.app.conf.broker_transport_options = options

    def publish(self, events: Sequence[dict[str, Any]]) -> None:
        """Publish the events in order over one pooled connection; returns once the broker
        holds every one of them.

        Raises:
            BrokerUnavailable: the broker did not take them (some may have been published:
                the caller publishes them all again, which ingest's idempotency makes safe).
        """
        from notifier.tasks import INGEST, QUEUE

        try:
            with self.app.producer_or_acquire() as producer, producer.batch(PUBLISH_BATCH):
                for i, event in enumerate(events):
                    self.app.send_task(
                        INGEST,
                        args=[event],
                        queue=QUEUE,
                        producer=producer,
                        retry=True,
                        retry_policy=PUBLISH_RETRY,
                        # Celery would put saferepr(args) in the message's headers (what a
                        # worker's log shows for the task): a third of a publish's CPU. The
                        # event's id says which event it is.
                        argsrepr=f"[<event {event.get('id')!s:.100}>]",
                        # The queue is declared with the first task of a request (Celery
                        # routes by queue name through the default exchange); declaring it
                        # again per task was a quarter of the publish's CPU.
                        declare=[] if i else None,
                    )
        except (OSError, redis.RedisError, KombuError) as exc:
            log.warning("cannot publish to the broker: %s", type(exc).__name__)
            raise BrokerUnavailable("the broker did not take the task") from None

    def close(self) -> None:
        self.app.close()


@dataclass
class ApiContext:
    settings: Settings
    client: redis.Redis
    conferences: Conferences
    publisher: Publisher
    # The event endpoints' own client, on the server's event loop (no thread per call).
    aclient: redis.asyncio.Redis
    # Set when the broker is the store's Redis: events go to the queue by one script.
    acceptance: AsyncAcceptance | None
    messages: TaskMessages

    @classmethod
    def create(cls, settings: Settings) -> ApiContext:
        options: dict[str, Any] = {
            "socket_connect_timeout": REDIS_TIMEOUT,
            "socket_timeout": REDIS_TIMEOUT,
            "health_check_interval": 30,
        }
        client = redis.Redis.from_url(settings.redis_url, **options)
        aclient = redis.asyncio.Redis.from_url(settings.redis_url, **options)
        publisher = Publisher(settings)
        same = settings.broker_url == settings.redis_url
        acceptance = AsyncAcceptance(aclient, QUEUE, ACCEPTED_SECONDS) if same else None
        conferences = Conferences(settings.conferences_dir)
        messages = TaskMessages.for_app(publisher.app.thread_oid)
        return cls(settings, client, conferences, publisher, aclient, acceptance, messages)

    def close(self) -> None:
        self.publisher.close()
        self.client.close()

    async def aclose(self) -> None:
        await self.aclient.aclose()

    def seen(self, event_ids: Sequence[str]) -> list[bool]:
        """Per id: whether the event was applied (its marker) or accepted here before."""
        with self.client.pipeline(transaction=False) as pipe:
            for event_id in event_ids:
                pipe.exists(keys.event(event_id), keys.accepted(event_id))
            return [bool(n) for n in pipe.execute()]

    def mark_accepted(self, event_ids: Sequence[str]) -> list[bool]:
        """Record the ids as accepted; per id, False if another request marked it first."""
        with self.client.pipeline(transaction=False) as pipe:
            for event_id in event_ids:
                pipe.set(keys.accepted(event_id), 1, nx=True, ex=ACCEPTED_SECONDS)
            return [bool(ok) for ok in pipe.execute()]
