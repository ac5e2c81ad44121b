"""Delivering claimed messages: gate, claim, compose, send, record. One message at a time per
SMTP session; the sessions of a process run side by side on its event loop."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from datetime import datetime
from typing import Any

import jinja2

from notifier.compose import Composed, compose
from notifier.conference import Conferences
from notifier.errors import (
    ConfigError,
    DeliveryError,
    PermanentDeliveryError,
    TemporaryDeliveryError,
)
from notifier.gate import Gate
from notifier.logs import scrub
from notifier.notice import Kind, Notice
from notifier.outbox import AsyncOutbox, Claim
from notifier.plan import Seat, current_invite
from notifier.recipients import mask
from notifier.render import Renderer
from notifier.retry import backoff
from notifier.settings import Settings
from notifier.smtp import Outcome, Sender, Sent

log = logging.getLogger("notifier")


class Delivery:
    def __init__(
        self,
        settings: Settings,
        *,
        outbox: AsyncOutbox,
        gate: Gate,
        conferences: Conferences,
        renderer: Renderer,
        clock: Callable[[], datetime],
        rand: Callable[[], float],
    ) -> None:
        self.settings = settings
        self.outbox = outbox
        self.gate = gate
        self.conferences = conferences
        self.renderer = renderer
        self.clock = clock
        self.rand = rand
        self._recording: list[asyncio.Future[Any]] = []

    async def one(self, sender: Sender, key: str) -> None:
        """Deliver one message if it can be claimed; record what happened."""
        if not await self._admitted(key):
            return
        now = self.clock()
        claim = await self.outbox.claim(key, now.timestamp())
        if claim is None:
            return
        try:
            notice = self._resolve(claim)
            if notice is None:
                await self._finish(claim, "skipped", "seat no longer held by this attendee")
                return
            msg = self._compose(notice, now)
        except (jinja2.TemplateError, ConfigError) as exc:
            # A bug or a broken config, not a delivery failure: retrying would not help.
            log.error("cannot compose %s: %s", key, exc, extra={"key": key, "state": "failed"})
            await self._finish(claim, "failed", f"cannot compose: {exc}")
            return
        await self._record(claim, msg, await sender.send(msg))

    async def _admitted(self, key: str) -> bool:
        """Wait for this send's slot; False (message put back) while senders are paused."""
        admission = await self.gate.admit()
        if admission.paused_until:
            due = admission.paused_until + self.rand()
            await self.outbox.defer(key, self.clock().timestamp(), due)
            return False
        if admission.wait > 0:
            await asyncio.sleep(admission.wait)
        return True

    def _compose(self, notice: Notice, now: datetime) -> Composed:
        return compose(notice, self.conferences.get(notice.conference), self.renderer, now=now)

    def _resolve(self, claim: Claim) -> Notice | None:
        """Reminders go to whoever holds the seat at send time, with that person's invite."""
        notice = claim.notice
        if notice.kind is not Kind.REMINDER:
            return notice
        seat = Seat.from_json(claim.seat) if claim.seat else None
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

    async def _record(self, claim: Claim, msg: Composed, outcome: Outcome) -> None:
        fields = {
            "key": claim.key,
            "registration": claim.notice.registration_id,
            "kind": claim.notice.kind.value,
            "to": mask(msg.recipient),
            "attempt": claim.token,
            "batch": claim.notice.batch,
        }
        if isinstance(outcome, Sent):
            # Not awaited: the session's next call (its next claim) follows it in the same
            # or a later pipeline, so the record is in Redis before the next send starts.
            self._record_soon(claim, outcome.reply)
            log.info(
                "sent %s",
                claim.key,
                extra={**fields, "state": "sent", "reply": scrub(outcome.reply)},
            )
            return
        assert isinstance(outcome, DeliveryError)
        reply = scrub(outcome.reply)
        if isinstance(outcome, PermanentDeliveryError) or claim.token >= self.settings.max_attempts:
            await self._finish(claim, "failed", outcome.reply)
            log.warning(
                "failed %s after %d attempt(s): %s",
                claim.key,
                claim.token,
                reply,
                extra={**fields, "state": "failed", "reply": reply},
            )
            return
        if isinstance(outcome, TemporaryDeliveryError) and outcome.slow_down:
            until = await self.gate.pause(self.settings.retry_base_seconds)
            log.warning(
                "relay asks to slow down: all senders pause until %.0f",
                until,
                extra={**fields, "reply": reply},
            )
        delay = backoff(
            claim.token,
            base=self.settings.retry_base_seconds,
            cap=self.settings.retry_max_seconds,
            rand=self.rand,
        )
        await self._finish(claim, "retrying", outcome.reply, due=self.clock().timestamp() + delay)
        log.info(
            "retrying %s in %.0f s: %s",
            claim.key,
            delay,
            reply,
            extra={**fields, "state": "retrying", "reply": reply},
        )

    async def _finish(self, claim: Claim, state: str, reply: str, due: float = 0.0) -> None:
        if not await self.outbox.finish(claim, state, reply, self.clock().timestamp(), due):
            _lost(claim, state)

    def _record_soon(self, claim: Claim, reply: str) -> None:
        done = self.outbox.finish_soon(claim, "sent", reply, self.clock().timestamp())

        def check(f: asyncio.Future[Any]) -> None:
            if not f.cancelled() and f.exception() is None and not f.result():
                _lost(claim, "sent")

        done.add_done_callback(check)
        self._recording.append(done)

    async def settle(self) -> None:
        """Wait until every queued record is in Redis; the first error, if one failed."""
        recording, self._recording = self._recording, []
        await asyncio.gather(*recording)


def _lost(claim: Claim, state: str) -> None:
    log.warning(
        "claim on %s was lost before it finished as %s",
        claim.key,
        state,
        extra={"key": claim.key, "state": state},
    )
