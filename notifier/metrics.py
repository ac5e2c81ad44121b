"""Prometheus metrics read from Redis at scrape time.

A custom collector instead of counters in the process: every figure is in Redis already (the
outbox's counters, the batches, the broker's queue) or is counted there (notifier.store.stats),
so any number of workers and API processes report the same numbers and a restart loses
none. Each scrape costs two pipelines on the store (one entry per batch) and one LLEN on the
broker.

A batch's series live as long as the batch runs and for BATCH_SERIES_SECONDS after it is
done (the first scrape that sees it done stamps `finished_at` on its record, on Redis's
clock), so the set of series does not grow with every batch ever sent.

Labels never carry names or addresses: states, batch keys (conference slug and batch id),
event types from the known list, outcomes, reply classes and bounce reasons (the closed
vocabulary of notifier.bounces.reason) only.

When Redis (or the broker) cannot be read, the scrape still answers: `notifier_redis_up`
(or `notifier_broker_up`) is 0 and the figures read from it are left out, which is how an
exporter tells Prometheus that its target is there but its source is not.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass

import redis
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from notifier.bounces.reason import REASONS, SIGNALS
from notifier.store import keys
from notifier.store.bouncelog import ALL_OUTCOMES
from notifier.store.codec import text
from notifier.store.gate import Pacing, pacing
from notifier.store.outbox import STATES
from notifier.store.stats import API_OUTCOMES, EVENT_OUTCOMES, REPLY_CLASSES
from notifier.store.status import FINISHED, counts_eta

__all__ = ["BATCH_SERIES_SECONDS", "StoreCollector"]

#: How long a finished batch keeps its series.
BATCH_SERIES_SECONDS = 24 * 3600

log = logging.getLogger("notifier")
# Kept apart from notifier's log lines that describe messages: a failing scrape says only
# the error's type (its text can hold the URL, password included).
UNREADABLE = (redis.RedisError, OSError)


@dataclass(frozen=True, slots=True)
class _Snapshot:
    """What one scrape read from the store."""

    now: float
    counts: dict[str, int]
    events: dict[tuple[str, str], int]
    replies: dict[str, int]
    oldest_queued: float | None
    oldest_retry: float | None
    batches: dict[str, dict[str, str]]  # batch key -> its record
    batch_counts: dict[str, dict[str, int]]  # batch key -> count per state
    bounce_outcomes: dict[str, int]  # received bounce reports per outcome
    bounce_reasons: dict[str, int]  # applied bounce reports per reason
    bounce_signals: dict[str, float]  # our side's problem -> when last reported
    api_events: dict[str, int]  # refused, duplicate -> count
    webhook_backlog: int
    webhook_stats: dict[str, int]  # delivered, given_up -> count


class StoreCollector(Collector):
    """Collects notifier's figures from `store` (NOTIFIER_REDIS_URL) and the depth of Celery's
    `queue` from `broker` (NOTIFIER_BROKER_URL; often the same server)."""

    def __init__(
        self, store: redis.Redis, broker: redis.Redis, queue: str, cap: float = 0.0
    ) -> None:
        """`cap`: the explicit send rate (NOTIFIER_RATE_LIMIT or the relay profile's)."""
        self.store = store
        self.broker = broker
        self.queue = queue
        self.cap = cap

    def describe(self) -> Iterator[Metric]:
        # Nothing: describe() would otherwise run collect() (reading Redis) at registration.
        return iter(())

    def collect(self) -> Iterator[Metric]:
        yield from self._store_metrics()
        yield from self._broker_metrics()

    def _store_metrics(self) -> Iterator[Metric]:
        up = GaugeMetricFamily("notifier_redis_up", "1 if the store (Redis) could be read.")
        try:
            snap = _read(self.store)
        except UNREADABLE as exc:
            log.warning("metrics: cannot read the store: %s", type(exc).__name__)
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up
        yield from _messages(snap)
        yield from _batches(snap)
        yield from _counters(snap)
        yield from _bounces(snap)
        yield from _api_and_webhooks(snap)
        _stamp_finished(self.store, snap)
        try:
            pace = pacing(self.store, self.cap)
        except UNREADABLE as exc:
            log.warning("metrics: cannot read the pacing: %s", type(exc).__name__)
            return
        yield from _pacing(snap, pace)

    def _broker_metrics(self) -> Iterator[Metric]:
        up = GaugeMetricFamily("notifier_broker_up", "1 if the broker (Redis) could be read.")
        try:
            depth = int(self.broker.llen(self.queue))
        except UNREADABLE as exc:
            log.warning("metrics: cannot read the broker: %s", type(exc).__name__)
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up
        queue = GaugeMetricFamily(
            "notifier_queue_depth",
            "Tasks waiting on the Celery queue (events and deliver chunks), not yet taken by "
            "a worker.",
            labels=["queue"],
        )
        queue.add_metric([self.queue], depth)
        yield queue


def _read(client: redis.Redis) -> _Snapshot:
    pipe = client.pipeline(transaction=False)
    pipe.time()
    pipe.hgetall(keys.COUNTS)
    pipe.hgetall(keys.EVENT_STATS)
    pipe.hgetall(keys.SMTP_STATS)
    # The lowest score of each index: a queued message's enqueue time; a retry's due time,
    # which is a wait only once it has passed (see _oldest).
    pipe.zrange(keys.QUEUED, 0, 0, withscores=True)
    pipe.zrange(keys.RETRY, 0, 0, withscores=True)
    pipe.smembers(keys.BATCHES)
    pipe.hgetall(keys.BOUNCE_STATS)
    pipe.hgetall(keys.BOUNCE_REASONS)
    pipe.hgetall(keys.BOUNCE_SIGNALS)
    pipe.hgetall(keys.API_EVENT_STATS)
    pipe.zcard(keys.WEBHOOK_DUE)
    pipe.hgetall(keys.WEBHOOK_STATS)
    (secs, usecs), counts, events, replies, queued, retry, members, *rest = pipe.execute()
    bounces, (api_events, webhook_backlog, webhook_stats) = rest[:3], rest[3:]
    batch_keys = sorted(text(m) for m in members)
    pipe = client.pipeline(transaction=False)
    for key in batch_keys:
        pipe.hgetall(keys.batch(key))
        pipe.hgetall(keys.batch_counts(key))
    raw = pipe.execute()
    now = int(secs) + int(usecs) / 1e6
    batches = {key: _texts(info) for key, info in zip(batch_keys, raw[0::2], strict=True)}
    return _Snapshot(
        now=now,
        counts=_ints(counts),
        events=_event_fields(events),
        replies=_ints(replies),
        oldest_queued=float(queued[0][1]) if queued else None,
        oldest_retry=float(retry[0][1]) if retry else None,
        batches={k: info for k, info in batches.items() if _shown(info, now)},
        batch_counts={key: _ints(c) for key, c in zip(batch_keys, raw[1::2], strict=True)},
        bounce_outcomes=_ints(bounces[0]),
        bounce_reasons=_ints(bounces[1]),
        bounce_signals={text(k): float(v) for k, v in bounces[2].items()},
        api_events=_ints(api_events),
        webhook_backlog=int(webhook_backlog),
        webhook_stats=_ints(webhook_stats),
    )


def _shown(info: dict[str, str], now: float) -> bool:
    """Whether a batch still has series: it is running, or finished recently."""
    finished_at = info.get("finished_at")
    return not info or finished_at is None or now - float(finished_at) < BATCH_SERIES_SECONDS


def _done(info: dict[str, str], counts: dict[str, int]) -> bool:
    settled = sum(counts.get(s, 0) for s in FINISHED)
    return info.get("state") == "planned" and settled >= int(info.get("total", 0))


def _stamp_finished(client: redis.Redis, snap: _Snapshot) -> None:
    """Stamp `finished_at` (Redis's clock) on each done batch that has none yet. A write
    Redis refuses (full, read-only) is tried again at the next scrape."""
    done = [
        key
        for key, info in snap.batches.items()
        if "finished_at" not in info and _done(info, snap.batch_counts[key])
    ]
    if not done:
        return
    try:
        with client.pipeline(transaction=False) as pipe:
            for key in done:
                pipe.hsetnx(keys.batch(key), "finished_at", repr(snap.now))
            pipe.execute()
    except UNREADABLE as exc:
        log.warning("metrics: cannot stamp finished batches: %s", type(exc).__name__)


def _ints(raw: dict[bytes, bytes]) -> dict[str, int]:
    return {text(k): int(v) for k, v in raw.items()}


def _texts(raw: dict[bytes, bytes]) -> dict[str, str]:
    return {text(k): text(v) for k, v in raw.items()}


def _event_fields(raw: dict[bytes, bytes]) -> dict[tuple[str, str], int]:
    found: dict[tuple[str, str], int] = {}
    for field, value in raw.items():
        kind, _, outcome = text(field).rpartition(":")
        found[(kind, outcome)] = int(value)
    return found


def _oldest(snap: _Snapshot) -> float:
    """Seconds the longest-waiting message has waited: since it was queued (or handed on
    again by the sweeper), or since its retry fell due. 0 when none waits."""
    since = [t for t in (snap.oldest_queued, snap.oldest_retry) if t is not None and t <= snap.now]
    return snap.now - min(since) if since else 0.0


def _messages(snap: _Snapshot) -> Iterator[Metric]:
    by_state = GaugeMetricFamily(
        "notifier_messages", "Outbox messages by delivery state.", labels=["state"]
    )
    for state in STATES:
        by_state.add_metric([state], snap.counts.get(state, 0))
    yield by_state
    yield GaugeMetricFamily(
        "notifier_oldest_waiting_message_age_seconds",
        "How long the message that has waited longest for a send (queued, or a retry that "
        "is due) has waited, on Redis's clock; 0 when none waits.",
        value=_oldest(snap),
    )


def _pacing(snap: _Snapshot, pace: Pacing) -> Iterator[Metric]:
    rate = GaugeMetricFamily(
        "notifier_pacing_rate_per_second",
        "The send rate every worker goes by: the explicit cap (NOTIFIER_RATE_LIMIT or the "
        "relay profile's) and the rate learned from the relay's throttling replies; absent "
        "where none applies.",
        labels=["source"],
    )
    for source, value in (("cap", pace.cap), ("learned", pace.learned)):
        if value:
            rate.add_metric([source], value)
    yield rate
    yield GaugeMetricFamily(
        "notifier_pacing_pause_seconds",
        "How long every sender still pauses (after a throttling reply or a used-up quota).",
        value=pace.pause_left,
    )
    eta = GaugeMetricFamily(
        "notifier_batch_eta_seconds",
        "Seconds until a batch's remaining messages are sent, at the rate the senders go by "
        "(or, unpaced, at the rate the batch has gone so far); absent when nothing tells.",
        labels=["conference", "batch", "kind"],
    )
    for key, info in snap.batches.items():
        left = _batch_eta(info, snap.batch_counts[key], pace)
        if left is not None:
            values = [info.get("conference", ""), info.get("batch_id", key), info.get("kind", "")]
            eta.add_metric(values, left)
    yield eta


def _batch_eta(info: dict[str, str], counts: dict[str, int], pace: Pacing) -> float | None:
    requested = info.get("requested_at")
    return counts_eta(counts, float(requested) if requested else None, pace)


def _batches(snap: _Snapshot) -> Iterator[Metric]:
    labels = ["conference", "batch", "kind"]
    total = GaugeMetricFamily(
        "notifier_batch_messages",
        "Messages in a reminder or update batch (so far, while it is being planned).",
        labels=labels,
    )
    finished = GaugeMetricFamily(
        "notifier_batch_finished_messages",
        "Messages of a batch that are settled (sent, failed, skipped, unknown, bounced, "
        "suppressed).",
        labels=labels,
    )
    planned = GaugeMetricFamily(
        "notifier_batch_planned", "1 once the batch is fully planned.", labels=labels
    )
    for key, info in snap.batches.items():
        counts = snap.batch_counts[key]
        values = [info.get("conference", ""), info.get("batch_id", key), info.get("kind", "")]
        total.add_metric(values, max(int(info.get("total", 0)), sum(counts.values())))
        finished.add_metric(values, sum(counts.get(s, 0) for s in FINISHED))
        planned.add_metric(values, 1 if info.get("state") == "planned" else 0)
    yield from (total, finished, planned)


def _counters(snap: _Snapshot) -> Iterator[Metric]:
    events = CounterMetricFamily(
        "notifier_events",
        "Events ingested, by type (invalid: missing or unknown) and outcome.",
        labels=["type", "outcome"],
    )
    for (kind, outcome), count in sorted(snap.events.items()):
        if outcome in EVENT_OUTCOMES:
            events.add_metric([kind, outcome], count)
    replies = CounterMetricFamily(
        "notifier_smtp_replies",
        "SMTP outcomes of delivery attempts by reply class (unknown: no reply, e.g. no "
        "connection or none to the final dot).",
        labels=["class"],
    )
    for klass in REPLY_CLASSES:
        replies.add_metric([klass], snap.replies.get(klass, 0))
    yield from (events, replies)


def _bounces(snap: _Snapshot) -> Iterator[Metric]:
    reports = CounterMetricFamily(
        "notifier_bounce_reports",
        "Bounce reports received (notifier bounces receive|poll) by outcome: bounced, "
        "delayed, complaint, mismatched (about another recipient than the message's), "
        "duplicate, forged, too_large...",
        labels=["outcome"],
    )
    for outcome in ALL_OUTCOMES:
        reports.add_metric([outcome], snap.bounce_outcomes.get(outcome, 0))
    reasons = CounterMetricFamily(
        "notifier_bounce_reasons",
        "Bounce reports applied to their message, by the report's reason.",
        labels=["reason"],
    )
    for reason in REASONS:
        reasons.add_metric([reason], snap.bounce_reasons.get(reason, 0))
    last = GaugeMetricFamily(
        "notifier_bounce_signal_last_seen_timestamp_seconds",
        "When a bounce report last said our side has a problem of this kind (blocklist, "
        "authentication, policy...), in epoch seconds; absent when none ever did.",
        labels=["reason"],
    )
    for reason in sorted(SIGNALS):
        if reason in snap.bounce_signals:
            last.add_metric([reason], snap.bounce_signals[reason])
    yield from (reports, reasons, last)


def _api_and_webhooks(snap: _Snapshot) -> Iterator[Metric]:
    api = CounterMetricFamily(
        "notifier_api_events",
        "Events the HTTP API did not queue: refused (422, invalid) or duplicate (an id "
        "accepted or applied before).",
        labels=["outcome"],
    )
    for outcome in API_OUTCOMES:
        api.add_metric([outcome], snap.api_events.get(outcome, 0))
    yield api
    yield GaugeMetricFamily(
        "notifier_webhook_backlog",
        "Webhook reports waiting to be delivered (due, being sent, or waiting to be retried).",
        value=snap.webhook_backlog,
    )
    reports = CounterMetricFamily(
        "notifier_webhook_reports",
        "Webhook reports delivered (a 2xx) or given up.",
        labels=["outcome"],
    )
    for outcome in ("delivered", "given_up"):
        reports.add_metric([outcome], snap.webhook_stats.get(outcome, 0))
    yield reports
