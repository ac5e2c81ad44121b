"""Delivering claimed messages: gate, claim, compose, send, record. One message at a time per
SMTP session; the sessions of a process run side by side on its event loop."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import replace
from datetime import datetime
from typing import Any

import jinja2
import redis

from notifier.bounces.token import message_token, return_path
from notifier.domain.itip import Prepared, prepare
from notifier.domain.notice import SEAT_KINDS, Kind, Notice
from notifier.domain.plan import Seat, seat_uid
from notifier.domain.recipients import mask
from notifier.domain.retry import backoff
from notifier.domain.window import held_until
from notifier.errors import (
    ConfigError,
    DeliveryError,
    DeliveryUnknown,
    PermanentDeliveryError,
    TemporaryDeliveryError,
)
from notifier.loading import Conferences
from notifier.logs import scrub
from notifier.mail.compose import Composed, compose, envelope_address
from notifier.mail.render import Renderer
from notifier.settings import Settings
from notifier.smtp import Outcome, Sender, Sent
from notifier.store.gate import Gate
from notifier.store.outbox import AsyncOutbox, Claim, Settlement
from notifier.store.refusal import LOST, READ_ONLY, refused
from notifier.store.stats import reply_class
from notifier.store.suppressions import AsyncSuppressions

log = logging.getLogger("notifier")
#: How many leases a send's outcome is waited on while Redis refuses writes (see _stubbornly),
#: and how often it is tried meanwhile (seconds).
RECORD_PATIENCE = 10
REFUSED_PAUSE = 0.05


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
        suppressions: AsyncSuppressions | None = None,
    ) -> None:
        self.settings = settings
        self.outbox = outbox
        self.gate = gate
        self.conferences = conferences
        self.renderer = renderer
        self.clock = clock
        self.rand = rand
        self.suppressions = suppressions
        self.bounce_secret = settings.bounce_key()  # read once: it may come from a file
        self._recording: list[tuple[Claim, Settlement, asyncio.Future[Any]]] = []
        self._halted: redis.RedisError | None = None

    async def one(self, sender: Sender, key: str) -> None:
        """Deliver one message if it can be claimed; record what happened.

        Whatever goes wrong after the claim settles the message. A store error is not
        raised here (that would cancel the other sessions' transactions mid-way): it halts
        the run, sends under way finish and record (retried while Redis comes back), and
        `settle` raises it. A claim that cannot be recorded stays with its lease, which is no
        longer renewed, and the sweeper hands it on.
        """
        try:
            if not await self._admitted(key):
                return
            claim = await self.outbox.claim(key)
        except redis.RedisError as exc:
            self._halt(exc)
            return
        if claim is not None:
            await self._claimed(sender, claim)

    async def _claimed(self, sender: Sender, claim: Claim) -> None:
        keeper = _LeaseKeeper(self.outbox, claim)
        outcomes: list[Outcome] = []  # what the relay said, once it has said it
        try:
            await self._deliver(sender, claim, outcomes)
        except redis.RedisError as exc:
            self._halt(exc)
        except Exception as exc:  # a bug: retrying would not help, leaving it stuck is worse
            await self._settle_after_bug(claim, exc, outcomes)
        finally:
            keeper.stop()

    def _halt(self, exc: redis.RedisError) -> None:
        if self._halted is None:
            log.warning("store error: this run takes no more messages: %s", exc)
            self._halted = exc

    def halted(self) -> bool:
        """True once a store error stopped this run from taking more messages."""
        return self._halted is not None

    async def _settle_after_bug(
        self, claim: Claim, exc: Exception, outcomes: list[Outcome]
    ) -> None:
        if outcomes and isinstance(outcomes[0], Sent):  # the relay has it, whatever broke after
            log.exception("sent %s, then failed to record it", claim.key, extra={"key": claim.key})
            await self._finish(claim, Settlement("sent", outcomes[0].reply))
            return
        log.exception("cannot deliver %s", claim.key, extra={"key": claim.key, "state": "failed"})
        await self._finish(claim, Settlement("failed", f"internal error: {_describe(exc)}"))

    async def _deliver(self, sender: Sender, claim: Claim, outcomes: list[Outcome]) -> None:
        try:
            if await self._outside_window(claim):
                return
            ready = await self._prepared(claim)
            if ready is None:
                return  # put back until an earlier mail for its invite UID has settled
            if ready.notice is None:
                await self._finish(claim, Settlement("skipped", ready.reason))
                return
            if await self._suppressed(claim, ready.notice):
                return
            msg = self._compose(ready.notice, self.clock())
        except (jinja2.TemplateError, ConfigError) as exc:
            # A bug or a broken config, not a delivery failure: retrying would not help.
            log.error(
                "cannot compose %s: %s", claim.key, exc, extra={"key": claim.key, "state": "failed"}
            )
            await self._finish(claim, Settlement("failed", f"cannot compose: {exc}"))
            return
        outcomes.append(await sender.send(msg))
        await self._record(claim, msg, outcomes[0], _carried(ready))

    async def _outside_window(self, claim: Claim) -> bool:
        """Put a batch's mail back until the conference's send window opens (before it takes
        a turn for its invite UID, so that no other mail waits for it meanwhile)."""
        now = self.clock()
        opens = held_until(claim.notice, self.conferences.get(claim.notice.conference), now)
        if opens is None:
            return False
        delay = (opens - now).total_seconds() + self.rand()
        reply = f"outside the send window: waits until {opens.isoformat()}"
        await self._finish(claim, Settlement("retrying", reply, delay, uncounted=True))
        log.info(
            "%s waits for the send window (%.0f s)",
            claim.key,
            delay,
            extra={"key": claim.key, "state": "retrying", "batch": claim.notice.batch},
        )
        return True

    async def _admitted(self, key: str) -> bool:
        """Wait for this send's slot; False (message put back) while senders are paused."""
        admission = await self.gate.admit()
        if admission.paused_until:
            due = admission.paused_until + self.rand()  # both in Redis's time
            await self.outbox.defer(key, due)
            return False
        if admission.wait > 0:
            await asyncio.sleep(admission.wait)
            # A relay may have asked every sender to pause while this one waited its turn.
            until = await self.gate.paused_until()
            if until:
                await self.outbox.defer(key, until + self.rand())
                return False
        return True

    def _compose(self, notice: Notice, now: datetime) -> Composed:
        msg = compose(notice, self.conferences.get(notice.conference), self.renderer, now=now)
        secret = self.bounce_secret
        if self.settings.bounce_address is None or secret is None:
            return msg
        # Its own envelope sender, so that a bounce after the relay's 250 names it (and
        # only we can name it: the token is signed). The From header stays the organiser's.
        token = message_token(notice.key, secret)
        return replace(
            msg, sender=envelope_address(return_path(self.settings.bounce_address, token))
        )

    async def _suppressed(self, claim: Claim, notice: Notice) -> bool:
        """Settle the message as `suppressed`, without SMTP, if its address is on the list.
        The organiser's copies are never suppressed."""
        if self.suppressions is None or notice.kind is Kind.SUBSTITUTION_COPY:
            return False
        reason = await self.suppressions.reason(notice.recipient.email)
        if reason is None:
            return False
        await self._finish(claim, Settlement("suppressed", f"suppressed: {reason}"))
        log.info(
            "suppressed %s",
            claim.key,
            extra={"key": claim.key, "state": "suppressed", "kind": notice.kind.value},
        )
        return True

    async def _prepared(self, claim: Claim) -> Prepared | None:
        """The notice as it goes out (notifier.domain.itip): reminders and updates to whoever
        holds the seat now, every invite with the SEQUENCE its facts call for. None: the
        message was put back to wait for an earlier mail for the same invite UID.

        A reminder or update first takes its turn for the holder's UID (a mail planned for a
        UID is claimed only in its turn: claim.lua). What a mail's invite carries is recorded
        on the seat when the relay has it (finish.lua), not here; only a REQUEST withheld
        while the conference is cancelled is recorded now, as it is never sent. An event
        applied meanwhile changes the seat: prepare again."""
        conf = self.conferences.get(claim.notice.conference)
        current = claim.seat
        while True:
            seat = Seat.from_json(current) if current else None
            if claim.notice.kind in SEAT_KINDS and seat is not None and seat.status == "active":
                turn = await self.outbox.turn(claim, current or "", seat_uid(seat, conf))
                if turn.waiting or turn.lost:
                    return None
                if not turn.held:
                    current = turn.seat or None
                    continue
            ready = prepare(claim.notice, seat, conf)
            if ready.notice is not None or ready.seat is None:
                return ready
            found = await self.outbox.carry(claim, current, ready.seat.to_json())
            if found is None:
                return ready
            current = found or None

    async def _record(
        self, claim: Claim, msg: Composed, outcome: Outcome, carried: tuple[str, str]
    ) -> None:
        fields = {
            "key": claim.key,
            "registration": claim.notice.registration_id,
            "kind": claim.notice.kind.value,
            "to": mask(msg.recipient),
            "attempt": claim.token,
            "batch": claim.notice.batch,
        }
        self._count_reply(outcome)
        if isinstance(outcome, Sent):
            self._sent(
                claim,
                outcome,
                fields,
                Settlement("sent", outcome.reply, 0.0, msg.recipient, *carried),
            )
        elif isinstance(outcome, DeliveryUnknown):
            await self._unknown(claim, outcome, fields, carried)
        elif isinstance(outcome, TemporaryDeliveryError) and outcome.uncounted:
            await self._asked_to_wait(claim, outcome, fields)
        elif (
            isinstance(outcome, PermanentDeliveryError) or claim.token >= self.settings.max_attempts
        ):
            await self._failed(claim, outcome, fields)
        else:
            await self._retry(claim, outcome, fields)

    def _count_reply(self, outcome: Outcome) -> None:
        """One count of the outcome's reply class for the metrics, queued before the finish
        so that both share a pipeline. Not awaited: a statistic lost to a store error must
        not hold up or fail the send's record (that error reaches the finish as well)."""
        code = 250 if isinstance(outcome, Sent) else outcome.smtp_code
        counted = self.outbox.count_reply(reply_class(code))
        counted.add_done_callback(_ignore_failure)

    def _sent(
        self, claim: Claim, outcome: Sent, fields: Mapping[str, object], end: Settlement
    ) -> None:
        # Not awaited: the session's next call (its next claim) follows it in the same
        # or a later pipeline, so the record is in Redis before the next send starts.
        # The address is kept: a bounce of a reminder must know whom it was sent to.
        self._record_soon(claim, end)
        log.info(
            "sent %s",
            claim.key,
            extra={**fields, "state": "sent", "reply": scrub(outcome.reply)},
        )

    async def _failed(
        self, claim: Claim, outcome: DeliveryError, fields: Mapping[str, object]
    ) -> None:
        await self._finish(claim, Settlement("failed", outcome.reply))
        reply = scrub(outcome.reply)
        log.warning(
            "failed %s after %d attempt(s): %s",
            claim.key,
            claim.token,
            reply,
            extra={**fields, "state": "failed", "reply": reply},
        )

    async def _asked_to_wait(
        self, claim: Claim, outcome: TemporaryDeliveryError, fields: Mapping[str, object]
    ) -> None:
        """The relay asked us to wait (a rate or connection limit, greylisting, its daily
        quota), not refused the message: it goes again after the wait, and the attempt does
        not count towards NOTIFIER_MAX_ATTEMPTS."""
        reply = scrub(outcome.reply)
        if outcome.slow_down:
            throttled = await self.gate.throttle()
            delay, why = throttled.pause, f"rate limit: sending at {throttled.rate:.2f}/s"
        elif outcome.quota:
            await self.gate.pause(self.settings.quota_pause_seconds)
            delay, why = self.settings.quota_pause_seconds, "the relay's quota is used up"
        else:
            delay, why = self.settings.greylist_seconds, "greylisted"
        delay += self.rand()  # so that the waiting messages do not all come back at once
        end = Settlement("retrying", outcome.reply, delay, uncounted=True)
        await self._finish(claim, end)
        log.warning(
            "%s: %s waits %.0f s (not counted as an attempt): %s",
            why,
            claim.key,
            delay,
            reply,
            extra={**fields, "state": "retrying", "reply": reply},
        )

    async def _retry(
        self, claim: Claim, outcome: DeliveryError, fields: Mapping[str, object]
    ) -> None:
        reply = scrub(outcome.reply)
        delay = self._backoff(claim)
        await self._finish(claim, Settlement("retrying", outcome.reply, delay))
        log.info(
            "retrying %s in %.0f s: %s",
            claim.key,
            delay,
            reply,
            extra={**fields, "state": "retrying", "reply": reply},
        )

    async def _unknown(
        self,
        claim: Claim,
        outcome: DeliveryUnknown,
        fields: Mapping[str, object],
        carried: tuple[str, str],
    ) -> None:
        """The relay may have it: resend at most `unknown_resends` times, then stop. What
        its invite carried is recorded: the attendee may hold it."""
        delay = self._backoff(claim)
        end = Settlement("unknown", outcome.reply, delay, "", *carried)
        got = await self._finish(claim, end)
        state = "retrying" if got == 2 else "unknown"
        log.warning(
            "delivery of %s unknown (no reply to the final dot); %s",
            claim.key,
            f"resending once more in {delay:.0f} s" if got == 2 else "not resent",
            extra={**fields, "state": state, "reply": scrub(outcome.reply)},
        )

    def _backoff(self, claim: Claim) -> float:
        return backoff(
            claim.token,
            base=self.settings.retry_base_seconds,
            cap=self.settings.retry_max_seconds,
            rand=self.rand,
        )

    async def _finish(self, claim: Claim, end: Settlement) -> int:
        got = await self._stubbornly(lambda: self.outbox.finish(claim, end))
        if not got:
            _lost(claim, end.state)
        return got

    async def _stubbornly(self, call: Callable[[], Awaitable[int]]) -> int:
        """Record an outcome, waiting for a Redis that restarts, is full or read-only: an
        outcome not recorded is a message sent again once its lease runs out.

        Nobody can take the claim over while Redis refuses writes (a claim is a write too),
        so a refusal is waited out past the lease, up to RECORD_PATIENCE leases, trying
        again every REFUSED_PAUSE: once Redis takes writes, the record must land before a
        sweep can hand the message on. A lost connection is waited for half a lease."""
        loop = asyncio.get_running_loop()
        lost_until = loop.time() + self.outbox.lease / 2
        refused_until = loop.time() + self.outbox.lease * RECORD_PATIENCE
        pause, refusals = 0.25, 0
        while True:
            try:
                return await call()
            except LOST:
                if loop.time() + pause > lost_until:
                    raise
                await asyncio.sleep(pause)
                pause = min(pause * 2, 5.0)
            except redis.ResponseError as exc:
                if not refused(exc) or loop.time() + REFUSED_PAUSE > refused_until:
                    raise
                refusals += 1
                if refusals & (refusals - 1) == 0:  # 1, 2, 4, ...: a log, not a flood
                    log.warning(
                        "store refuses writes (%s); waiting to record an outcome",
                        type(exc).__name__,
                    )
                if isinstance(exc, READ_ONLY):
                    await self.outbox.reconnect()  # a demoted primary: find the new one
                await asyncio.sleep(REFUSED_PAUSE)

    def _record_soon(self, claim: Claim, end: Settlement) -> None:
        # Not awaited: it reaches Redis before the session's next call (see settle).
        self._recording.append((claim, end, self.outbox.finish_soon(claim, end)))

    async def settle(self) -> None:
        """Wait until every queued record is in Redis (recording again those a store error
        stopped); then raise the store error that halted the run, if one did."""
        recording, self._recording = self._recording, []
        results = await asyncio.gather(*(f for _, _, f in recording), return_exceptions=True)
        for (claim, end, _), got in zip(recording, results, strict=True):
            if isinstance(got, redis.RedisError):
                try:
                    await self._finish(claim, end)
                except redis.RedisError as exc:
                    self._halt(exc)
            elif isinstance(got, BaseException):
                raise got
            elif not self.outbox.finished(got):
                _lost(claim, "sent")
        halted, self._halted = self._halted, None
        if halted is not None:
            raise halted


class _LeaseKeeper:
    """Renews a claim's lease while its send runs (a relay may take minutes to answer the
    final dot); a worker that stops or dies stops renewing, and the sweeper takes over."""

    def __init__(self, outbox: AsyncOutbox, claim: Claim) -> None:
        self.outbox = outbox
        self.claim = claim
        self.period = outbox.lease / 3
        self.loop = asyncio.get_running_loop()
        self.task: asyncio.Task[None] | None = None
        self.stopped = False
        self.timer = self.loop.call_later(self.period, self._fire)

    def _fire(self) -> None:
        self.task = self.loop.create_task(self._renew())

    async def _renew(self) -> None:
        try:
            held = await self.outbox.renew(self.claim)
        except redis.RedisError as exc:  # try again next period; the lease still runs
            log.warning("cannot renew the claim on %s: %s", self.claim.key, exc)
            held = True
        if held and not self.stopped:
            self.timer = self.loop.call_later(self.period, self._fire)

    def stop(self) -> None:
        self.stopped = True
        self.timer.cancel()
        if self.task is not None and not self.task.done():
            self.task.cancel()


def _carried(ready: Prepared) -> tuple[str, str]:
    """The invite UID a prepared mail carries and what to record for it once the relay has
    it (plan.Carried's JSON; '' when the seat already records it)."""
    notice = ready.notice
    if notice is None or notice.invite is None or ready.seat is None:
        return "", ""
    record = ready.seat.carried.get(notice.invite.uid)
    if record is None:
        return "", ""
    return notice.invite.uid, json.dumps(record.to_dict(), ensure_ascii=False)


def _ignore_failure(done: asyncio.Future[Any]) -> None:
    if not done.cancelled():
        done.exception()  # retrieved, so asyncio does not report it as never retrieved


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"[:300]


def _lost(claim: Claim, state: str) -> None:
    log.warning(
        "claim on %s was lost before it finished as %s",
        claim.key,
        state,
        extra={"key": claim.key, "state": state},
    )
