"""The use cases, free of Celery: ingest an event, deliver messages, find work to hand on.

Effects come in through the constructor (Redis client, mailer factory, clock, randomness),
so tests drive this with a real Redis and a real SMTP server and a fixed clock.
"""

from __future__ import annotations

import json
import logging
import random
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

import jinja2
import redis

from notifier import keys
from notifier.batches import Batches
from notifier.compose import Composed, compose
from notifier.conference import Conferences
from notifier.deadletter import DeadLetters
from notifier.errors import ConfigError, DeliveryError, InvalidEvent, PermanentDeliveryError
from notifier.events import (
    Event,
    RegistrationCancelled,
    RegistrationCreated,
    RegistrationSubstituted,
    ReminderRequested,
    parse_event,
)
from notifier.notice import Kind, Notice
from notifier.outbox import Claim, Outbox
from notifier.plan import Plan, Seat, current_invite, plan_cancelled, plan_created, plan_substituted
from notifier.recipients import mask
from notifier.render import renderer
from notifier.retry import backoff
from notifier.roster import Roster
from notifier.schedule import due_reminders
from notifier.settings import Settings
from notifier.smtp import Mailer, Outcome, Sender, Sent

log = logging.getLogger("notifier")


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
    ) -> None:
        self.settings = settings
        self.r = client
        self.clock = clock
        self.rand = rand
        self.conferences = Conferences(settings.conferences_dir)
        self.renderer = renderer(settings.templates_dir)
        self.outbox = Outbox(client, lease_seconds=settings.claim_lease_seconds)
        self.roster = Roster(client, self.outbox)
        self.dead = DeadLetters(client)
        self.batches = Batches(client, self.outbox, self.roster)
        self._mailer_factory = mailer or (lambda: Mailer(settings))
        self._mailer: Mailer | None = None

    @property
    def mailer(self) -> Mailer:
        if self._mailer is None:
            self._mailer = self._mailer_factory()
        return self._mailer

    def close(self) -> None:
        if self._mailer is not None:
            self._mailer.close()
            self._mailer = None

    # -- ingest -------------------------------------------------------------------------

    def ingest(self, payload: Any) -> list[str]:
        """Apply one event; the keys of its messages that still need sending.

        An event that cannot be processed becomes a dead letter (never an exception).
        """
        now = self.clock().timestamp()
        try:
            event = parse_event(payload, conferences=self.conferences)
            message_keys = self._apply(event, now)
        except InvalidEvent as exc:
            return self._dead(payload, list(exc.errors), now)
        except ConfigError as exc:
            return self._dead(payload, [("conference", str(exc))], now)
        except LookupError as exc:
            return self._dead(payload, [("registration.id", str(exc.args[0]))], now)
        states = self.outbox.states(message_keys)
        return [k for k, s in states.items() if s in ("queued", "retrying")]

    def _dead(self, payload: Any, errors: list[tuple[str, str]], now: float) -> list[str]:
        dl_id = self.dead.put(payload, errors, now=now)
        fields = ",".join(f for f, _ in errors)
        event_id = payload.get("id") if isinstance(payload, dict) else None
        log.warning("event rejected: dead letter %s event=%s fields=%s", dl_id, event_id, fields)
        return []

    def _apply(self, event: Event, now: float) -> list[str]:
        conf = self.conferences.get(event.conference)
        planner: Callable[[Seat | None], Plan]
        if isinstance(event, RegistrationCreated):
            reg = event.registration.id
            planner = lambda seat: plan_created(event, seat, conf)  # noqa: E731
        elif isinstance(event, RegistrationSubstituted):
            reg = event.registration.id
            planner = lambda seat: plan_substituted(event, seat, conf)  # noqa: E731
        elif isinstance(event, RegistrationCancelled):
            reg = event.registration.id
            planner = lambda seat: plan_cancelled(event, seat, conf)  # noqa: E731
        else:
            return self._reminder_batch(event, now)
        message_keys, plan = self.roster.apply(event, reg, planner, now=now)
        if plan is None:
            log.info("event %s seen before: %d message(s)", event.id, len(message_keys))
        else:
            log.info(
                "event %s (%s) registration=%s: %d message(s)%s",
                event.id,
                event.type,
                reg,
                len(plan.notices),
                f"; {plan.note}" if plan.note else "",
            )
        return message_keys

    def _reminder_batch(self, event: ReminderRequested, now: float) -> list[str]:
        conf = self.conferences.get(event.conference)
        info = self.batches.open(conf.slug, event.batch.id, event.occurred_at, now)
        if info.state != "planned":
            total = self.batches.plan(info, conf, now)
            log.info("batch %s planned: %d reminder(s)", info.key, total)
        self.r.set(keys.event(event.id), json.dumps({"type": event.type, "batch": info.key}))
        return self.batches.unfinished(info.key)

    # -- deliver ------------------------------------------------------------------------

    def deliver(self, message_keys: Sequence[str]) -> None:
        """Send each message that can be claimed, over the process's kept SMTP sessions."""
        if message_keys:
            self.mailer.run(list(message_keys), self._deliver_one)

    async def _deliver_one(self, sender: Sender, key: str) -> None:
        now = self.clock()
        claim = self.outbox.claim(key, now.timestamp())
        if claim is None:
            return
        try:
            notice = self._resolve(claim.notice)
            if notice is None:
                self._finish(claim, "skipped", "seat no longer held by this attendee")
                return
            msg = self._compose(notice, now)
        except (jinja2.TemplateError, ConfigError) as exc:
            # A bug or a broken config, not a delivery failure: retrying would not help.
            log.error("cannot compose %s: %s", key, exc)
            self._finish(claim, "failed", f"cannot compose: {exc}")
            return
        outcome = await sender.send(msg)
        self._record(claim, msg, outcome)

    def _compose(self, notice: Notice, now: datetime) -> Composed:
        return compose(notice, self.conferences.get(notice.conference), self.renderer, now=now)

    def _resolve(self, notice: Notice) -> Notice | None:
        """Reminders go to whoever holds the seat at send time, with that person's invite."""
        if notice.kind is not Kind.REMINDER:
            return notice
        seat = self.roster.seat(notice.conference, notice.registration_id)
        if seat is None or seat.status != "active":
            return None
        conf = self.conferences.get(notice.conference)
        return Notice(
            notice.key,
            notice.kind,
            notice.conference,
            notice.registration_id,
            seat.attendee,
            invite=current_invite(seat, conf),
            batch=notice.batch,
        )

    def _record(self, claim: Claim, msg: Composed, outcome: Outcome) -> None:
        who = mask(msg.recipient)
        if isinstance(outcome, Sent):
            self._finish(claim, "sent", outcome.reply)
            log.info("sent %s to %s: %s", claim.key, who, outcome.reply)
            return
        assert isinstance(outcome, DeliveryError)
        if isinstance(outcome, PermanentDeliveryError) or claim.token >= self.settings.max_attempts:
            self._finish(claim, "failed", outcome.reply)
            log.warning(
                "failed %s to %s after %d attempt(s): %s",
                claim.key,
                who,
                claim.token,
                outcome.reply,
            )
            return
        delay = backoff(
            claim.token,
            base=self.settings.retry_base_seconds,
            cap=self.settings.retry_max_seconds,
            rand=self.rand,
        )
        self._finish(claim, "retrying", outcome.reply, due=self.clock().timestamp() + delay)
        log.info(
            "retrying %s to %s in %.0f s (attempt %d): %s",
            claim.key,
            who,
            delay,
            claim.token,
            outcome.reply,
        )

    def _finish(self, claim: Claim, state: str, reply: str, due: float = 0.0) -> None:
        if not self.outbox.finish(claim, state, reply, self.clock().timestamp(), due):
            log.warning("claim on %s was lost before it finished as %s", claim.key, state)

    def due_reminder_events(self) -> list[dict[str, Any]]:
        """reminder.requested events for scheduled rules that are due and not yet requested."""
        confs = []
        for slug in self.conferences.slugs():
            try:
                confs.append(self.conferences.get(slug))
            except ConfigError as exc:
                log.error("scheduled reminders: skipping %s: %s", slug, exc)
        events = [due.event() for due in due_reminders(confs, self.clock())]
        return [e for e in events if not self.r.exists(keys.event(str(e["id"])))]

    # -- sweeping -----------------------------------------------------------------------

    def due(self, limit: int = 1000) -> list[str]:
        """Messages to hand to a deliver task now: retries whose time has come, claims whose
        worker died (lease over), and queued messages no task took (a crash between commit
        and enqueue)."""
        now = self.clock().timestamp()
        again = now + self.settings.visibility_timeout_seconds
        found = self.outbox.due(keys.RETRY, cutoff=now, limit=limit, next_at=again)
        found += self.outbox.due(
            keys.SENDING, cutoff=now, limit=limit, next_at=now + self.outbox.lease
        )
        # A queued message waits its turn in the broker; only one that has waited twice the
        # visibility timeout is taken to be lost.
        unqueued = self.outbox.due(
            keys.QUEUED, cutoff=now - 2 * (again - now), limit=limit, next_at=now
        )
        return found + [k for k in unqueued if k not in found]
