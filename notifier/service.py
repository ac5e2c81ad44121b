"""The use cases, free of Celery: ingest an event, deliver messages, find work to hand on.

Effects come in through the constructor (Redis client, mailer factory, clock, randomness),
so tests drive this with a real Redis and a real SMTP server and a fixed clock.
"""

from __future__ import annotations

import logging
import random
import re
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from functools import partial
from typing import Any

import redis
import redis.asyncio

from notifier.delivery import Delivery
from notifier.domain.conference import SLUG_PATTERN, Conference
from notifier.domain.events import (
    ConferenceUpdated,
    Event,
    RegistrationCancelled,
    RegistrationCreated,
    RegistrationSubstituted,
    ReminderRequested,
    parse_event,
)
from notifier.domain.plan import Plan, Seat, plan_cancelled, plan_created, plan_substituted
from notifier.domain.schedule import due_reminders
from notifier.errors import (
    ConferenceCancelled,
    ConfigError,
    InvalidEvent,
    StoreUnavailable,
    UnknownRegistration,
)
from notifier.loading import Conferences, renderer
from notifier.logs import scrub
from notifier.settings import Settings
from notifier.smtp import Mailer
from notifier.store.batches import Batches, BatchInfo
from notifier.store.deadletter import DeadLetters
from notifier.store.eventlog import RecentEvent
from notifier.store.gate import Gate
from notifier.store.outbox import AsyncOutbox, Outbox
from notifier.store.roster import Roster
from notifier.store.stats import count_event, event_type
from notifier.store.suppressions import AsyncSuppressions

log = logging.getLogger("notifier")
#: Rounds of a deliver call for mails handed on within it (the rest wait for the sweeper).
HAND_ON_ROUNDS = 8


def _event_id(payload: Any) -> str | None:
    return str(payload.get("id"))[:128] if isinstance(payload, dict) else None


PRINTABLE_ID = re.compile(r"[\x21-\x7e]{1,64}")


def _recent(event: Event, payload: Any, outcome: str, now: float) -> tuple[str, RecentEvent]:
    registration = getattr(event, "registration", None)
    entry = RecentEvent(event.id, event.type, outcome, getattr(registration, "id", ""), now)
    return event.conference, entry


def _recent_dead(payload: Any, now: float) -> tuple[str, RecentEvent] | None:
    """A dead letter in its conference's latest events, when it names one we know of by a
    well-formed slug (anything else is only in the dead letters)."""
    if not isinstance(payload, dict):
        return None
    conference, kind = payload.get("conference"), payload.get("type")
    if not isinstance(conference, str) or not re.fullmatch(SLUG_PATTERN, conference):
        return None
    registration = payload.get("registration")
    reg_id = registration.get("id") if isinstance(registration, dict) else None
    entry = RecentEvent(
        _event_id(payload) or "",
        event_type(kind),
        "dead_letter",
        reg_id if isinstance(reg_id, str) and PRINTABLE_ID.fullmatch(reg_id) else "",
        now,
    )
    return conference, entry


def _log_applied(event: Event, reg: str, message_keys: list[str], plan: Plan | None) -> None:
    fields = {"event_id": event.id, "registration": reg}
    if plan is None:
        log.info("event %s seen before: %d message(s)", event.id, len(message_keys), extra=fields)
        return
    note = f"; {plan.note}" if plan.note else ""
    log.info(
        "event %s (%s) registration=%s: %d message(s)%s",
        event.id,
        event.type,
        reg,
        len(plan.notices),
        note,
        extra=fields,
    )


def utc_now() -> datetime:
    return datetime.now(UTC)


class Service:
    def __init__(
        self,
        settings: Settings,
        client: redis.Redis,
        *,
        mailer: Callable[[], Mailer] | None = None,
        clock: Callable[[], datetime] = utc_now,
        rand: Callable[[], float] = random.random,
        store_clock: Callable[[], float] | None = None,
    ) -> None:
        """`clock` dates what is composed; `store_clock` (tests only) replaces Redis's own
        clock for leases, retry times and the sweeper, which workers must agree on."""
        self.settings = settings
        self.r = client
        self.clock = clock
        self.rand = rand
        self.conferences = Conferences(settings.conferences_dir)
        self.renderer = renderer(settings.templates_dir)
        self.store_clock = store_clock
        self.outbox = Outbox(
            client,
            lease_seconds=settings.claim_lease_seconds,
            unknown_resends=settings.unknown_resends,
            store_clock=store_clock,
            webhooks=settings.webhooks_enabled,
        )
        self.roster = Roster(client, self.outbox)
        self.dead = DeadLetters(client)
        self.batches = Batches(client, self.outbox, self.roster)
        self._mailer_factory = mailer or (lambda: Mailer(settings))
        self._mailer: Mailer | None = None
        self._delivery: Delivery | None = None
        # Where a batch's message keys go while it is being planned (the worker enqueues
        # deliver tasks); without it, ingest returns them.
        self.hand_on: Callable[[list[str]], None] | None = None
        self._aclient: redis.asyncio.Redis | None = None

    @property
    def mailer(self) -> Mailer:
        if self._mailer is None:
            self._mailer = self._mailer_factory()
        return self._mailer

    @property
    def delivery(self) -> Delivery:
        """The delivery pipeline, bound to the mailer's event loop (made with it)."""
        if self._delivery is None:
            # Must name the same database as self.r (settings.redis_url): the delivery path
            # talks to Redis asynchronously so that SMTP sessions never wait on it.
            self._aclient = redis.asyncio.Redis.from_url(self.settings.redis_url)
            self._delivery = Delivery(
                self.settings,
                outbox=AsyncOutbox(
                    self._aclient,
                    lease_seconds=self.outbox.lease,
                    unknown_resends=self.settings.unknown_resends,
                    store_clock=self.store_clock,
                    webhooks=self.settings.webhooks_enabled,
                ),
                gate=Gate(self._aclient, self.settings.rate_limit),
                conferences=self.conferences,
                renderer=self.renderer,
                clock=self.clock,
                rand=self.rand,
                suppressions=AsyncSuppressions(self._aclient),
            )
        return self._delivery

    def close(self) -> None:
        if self._mailer is not None:
            if self._aclient is not None:
                self._mailer.loop.run_until_complete(self._aclient.aclose())
            self._mailer.close()
        self._mailer = None
        self._delivery = None
        self._aclient = None

    # -- ingest -------------------------------------------------------------------------

    def ingest(self, payload: Any, order: int | None = None) -> list[str]:
        """Apply one event; the keys of its messages that still need sending. `order`: the
        event's place in publication order (stamped as its task left the queue), which
        orders events of one registration with equal `occurred_at`.

        An event that cannot be processed becomes a dead letter (never an exception).

        Raises:
            StoreUnavailable: Redis refused or did not answer (down, OOM, READONLY), also
                while keeping a dead letter. The event is not lost only if the caller keeps
                it: the task is retried with the message unacknowledged.
        """
        try:
            return self._ingest(payload, order)
        except redis.RedisError as exc:
            raise StoreUnavailable(f"{type(exc).__name__}: {exc}") from exc

    def _ingest(self, payload: Any, order: int | None) -> list[str]:
        now = self.clock().timestamp()
        try:
            event = parse_event(payload, conferences=self.conferences)
            message_keys, fresh, applied = self._apply(event, now, order)
        except InvalidEvent as exc:
            return self._dead(payload, list(exc.errors), now)
        except ConfigError as exc:
            return self._dead(payload, [("conference", str(exc))], now)
        except UnknownRegistration as exc:
            # Named, not LookupError: a KeyError from a bug must not pass for an unknown seat.
            return self._dead(payload, [("registration.id", str(exc))], now)
        except ConferenceCancelled as exc:
            return self._dead(payload, [("conference", str(exc))], now)
        except redis.RedisError:
            raise  # a store error says nothing about the event: never a dead letter
        except Exception as exc:
            # A bug must not lose the event: keep it to replay after the fix.
            log.exception("cannot process event", extra={"event_id": _event_id(payload)})
            return self._dead(payload, [("event", f"internal error: {type(exc).__name__}")], now)
        outcome = "applied" if applied else "duplicate"
        count_event(self.r, event.type, outcome, _recent(event, payload, outcome, now))
        if fresh:  # created queued just now: no need to ask
            return message_keys
        states = self.outbox.states(message_keys)
        return [k for k, s in states.items() if s in ("queued", "retrying")]

    def _dead(self, payload: Any, errors: list[tuple[str, str]], now: float) -> list[str]:
        dl_id = self.dead.put(payload, errors, now=now)
        kind = payload.get("type") if isinstance(payload, dict) else None
        count_event(self.r, event_type(kind), "dead_letter", _recent_dead(payload, now))
        # A field path can hold whatever key a sender used, even an address: mask it.
        fields = ",".join(scrub(f) for f, _ in errors)
        event_id = _event_id(payload)
        log.warning(
            "event rejected: dead letter %s event=%s fields=%s",
            dl_id,
            event_id,
            fields,
            extra={"event_id": event_id, "dead_letter": dl_id, "fields": fields},
        )
        return []

    def _apply(
        self, event: Event, now: float, order: int | None = None
    ) -> tuple[list[str], bool, bool]:
        """The event's message keys, whether they were all created by this call, and whether
        the event was applied (False: seen before, nothing new)."""
        conf = self.conferences.get(event.conference)
        planner: Callable[[Seat | None], Plan]
        if isinstance(event, RegistrationCreated | RegistrationSubstituted) and conf.cancelled:
            what = "no confirmation is sent; replay the event if the conference takes place"
            raise ConferenceCancelled(conf.slug, what)
        if isinstance(event, ConferenceUpdated):
            planned, applied = self._update_batch(event, conf, now)
            return planned, False, applied
        if isinstance(event, RegistrationCreated):
            reg = event.registration.id
            planner = partial(plan_created, event, conf=conf, order=order)
        elif isinstance(event, RegistrationSubstituted):
            reg = event.registration.id
            planner = partial(plan_substituted, event, conf=conf, order=order)
        elif isinstance(event, RegistrationCancelled):
            reg = event.registration.id
            planner = partial(plan_cancelled, event, conf=conf, order=order)
        else:
            planned, applied = self._reminder_batch(event, conf, now)
            return planned, False, applied
        message_keys, plan = self.roster.apply(event, reg, planner, now=now)
        _log_applied(event, reg, message_keys, plan)
        return message_keys, plan is not None, plan is not None

    def _reminder_batch(
        self, event: ReminderRequested, conf: Conference, now: float
    ) -> tuple[list[str], bool]:
        if conf.cancelled:
            raise ConferenceCancelled(conf.slug, "reminders are not sent")
        info = self.batches.open(conf.slug, event.batch.id, event.occurred_at, now)
        return self._batch(event, info, conf, now)

    def _update_batch(
        self, event: ConferenceUpdated, conf: Conference, now: float
    ) -> tuple[list[str], bool]:
        return self._batch(event, self.batches.open_update(conf, event.occurred_at, now), conf, now)

    def _batch(
        self,
        event: ReminderRequested | ConferenceUpdated,
        info: BatchInfo,
        conf: Conference,
        now: float,
    ) -> tuple[list[str], bool]:
        """The batch's keys to hand on, and whether this event planned it (False: asked
        again)."""
        if info.state == "planned":  # asked again: hand on what is still to send
            self.batches.record_request(event.id, event.type, info.key)
            return self.batches.unfinished(info.key), False
        planned: list[str] = []
        total = self.batches.plan(info, conf, now, self.hand_on or planned.extend)
        log.info(
            "batch %s planned: %d %s message(s)",
            info.key,
            total,
            info.kind.value,
            extra={"batch": info.key},
        )
        self.batches.record_request(event.id, event.type, info.key)
        return planned, True

    # -- deliver ------------------------------------------------------------------------

    def deliver(self, message_keys: Sequence[str]) -> None:
        """Send each message that can be claimed, over the process's kept SMTP sessions.

        Raises:
            StoreUnavailable: Redis failed during the run; what was under way finished and
                what could be recorded was (the task is retried with the same keys).
        """
        delivery = self.delivery
        todo = list(message_keys)
        for _ in range(HAND_ON_ROUNDS):
            if not todo:
                return
            try:
                self.mailer.run(todo, delivery.one, then=delivery.settle, halted=delivery.halted)
            except redis.RedisError as exc:
                raise StoreUnavailable(f"{type(exc).__name__}: {exc}") from exc
            # Mails whose turn came when an earlier mail for their invite UID settled in this
            # run go out over the same sessions (the sweeper would find them too, later).
            todo = delivery.outbox.take_handed_on()

    def due_reminder_events(self) -> list[dict[str, Any]]:
        """reminder.requested events for scheduled rules that are due and not yet requested."""
        confs = []
        for slug in self.conferences.slugs():
            try:
                conf = self.conferences.get(slug)
            except ConfigError as exc:
                log.error("scheduled reminders: skipping %s: %s", slug, exc)
                continue
            if not conf.cancelled:  # a cancelled conference gets no reminders
                confs.append(conf)
        events = [due.event() for due in due_reminders(confs, self.clock())]
        return [e for e in events if not self.roster.seen(str(e["id"]))]

    # -- sweeping -----------------------------------------------------------------------

    def due(self, limit: int = 1000) -> list[str]:
        """Messages to hand to a deliver task now: retries whose time has come, claims whose
        worker died (lease over), and queued messages no task took (a crash between commit
        and enqueue)."""
        return self.outbox.due_for_sweeper(
            limit=limit, visibility=self.settings.visibility_timeout_seconds
        )
