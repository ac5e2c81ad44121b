"""Every Redis key notifier uses, in one place.

The Lua scripts (scripts/*.lua) get their keys through KEYS. Where a script must find a key
from stored data, the message holds the key's full name, computed here when the message is
created (`batch_counts_key`, `seat_key`); for messages created before that, the scripts get a
`template` of the key format instead of repeating it.
"""

from __future__ import annotations

from collections.abc import Callable

PREFIX = "notifier"

COUNTS = f"{PREFIX}:counts"  # hash: state -> number of messages in it
SENDING = f"{PREFIX}:sending"  # zset: message key -> lease deadline (epoch s)
RETRY = f"{PREFIX}:retry"  # zset: message key -> due time (epoch s)
QUEUED = f"{PREFIX}:queued"  # zset: message key -> enqueued at (epoch s), for the sweeper
FAILED = f"{PREFIX}:failed"  # set: keys of failed messages, for status
UNKNOWN = f"{PREFIX}:unknown"  # set: keys of messages whose delivery is unknown, for status
BOUNCED = f"{PREFIX}:bounced"  # set: keys of messages a relay bounced after its 250, for status
SUPPRESSED = f"{PREFIX}:suppressed"  # set: keys of messages settled without SMTP, for status
BOUNCE_IDS = f"{PREFIX}:bounce-ids"  # hash: bounce id (the return path's) -> message key
SUPPRESSIONS = f"{PREFIX}:suppressions"  # hash: normalised address -> JSON {reason, at, message}
BOUNCE_STATS = f"{PREFIX}:bounce-stats"  # hash: outcome of a received report -> count
BOUNCE_REASONS = f"{PREFIX}:bounce-reasons"  # hash: reason of an applied report -> count
# hash: reason of our side's problem (blocked, authentication...) -> time of the latest
BOUNCE_SIGNALS = f"{PREFIX}:bounce-signals"
EVENT_STATS = f"{PREFIX}:event-stats"  # hash: "type:outcome" of ingested events -> count
API_EVENT_STATS = f"{PREFIX}:api-event-stats"  # hash: refused, duplicate (HTTP API) -> count
SMTP_STATS = f"{PREFIX}:smtp-stats"  # hash: class of an SMTP outcome (2xx, 4xx, ...) -> count
BATCHES = f"{PREFIX}:batches"  # set: batch keys ("conference:batch-id")
DEAD = f"{PREFIX}:dead"  # hash: dead-letter id -> JSON record
DEAD_ORDER = f"{PREFIX}:dead:order"  # zset: dead-letter id -> time
TOKENS = f"{PREFIX}:tokens"  # hash: API token name -> JSON {scope, sha256, created, revoked}
TOKEN_DIGESTS = f"{PREFIX}:token-digests"  # hash: SHA-256 of a live token -> JSON record
RATE = f"{PREFIX}:rate"  # rate limiter: the next free send slot (epoch s)
PAUSE = f"{PREFIX}:pause"  # every sender waits until this time (epoch s) after a 432
# The rate learned from the relay's throttling replies (store/scripts/throttle.lua, gate.lua):
# hash: rate (messages/s; absent while none applies), decreased_at, throttled_at,
# paused_until, step.
PACE = f"{PREFIX}:pace"
# Webhook deliveries (store/webhooks.py), queued by finish.lua and bounce.lua.
WEBHOOK_DUE = f"{PREFIX}:webhooks:due"  # zset: delivery id -> due time or lease end (epoch s)
WEBHOOK_PAYLOADS = f"{PREFIX}:webhooks:payloads"  # hash: delivery id -> JSON {type, at, data}
WEBHOOK_ATTEMPTS = f"{PREFIX}:webhooks:attempts"  # hash: delivery id -> claims so far (token)
WEBHOOK_DEAD = f"{PREFIX}:webhooks:dead"  # hash: delivery id -> JSON {body, attempts, reason}
WEBHOOK_STATS = f"{PREFIX}:webhooks:stats"  # hash: delivered, given_up -> count
HEALTH_PROBE = f"{PREFIX}:health-probe"  # string, 10 s TTL: /v1/health's write probe
# Publication order of ingest tasks, in the broker's Redis (notifier.broker): the counter,
# and per task (+ its delivery tag, a string with a TTL) the number it was given.
PUBLICATION_ORDER = f"{PREFIX}:publication-order"
PUBLICATION_ORDER_STAMP = f"{PREFIX}:publication-order:"


def message(key: str) -> str:
    return f"{PREFIX}:msg:{key}"


def event(event_id: str) -> str:
    return f"{PREFIX}:event:{event_id}"


def batch(batch_id: str) -> str:
    return f"{PREFIX}:batch:{batch_id}"


def batch_counts(batch_id: str) -> str:
    return f"{PREFIX}:batch:{batch_id}:counts"


def batch_members(batch_id: str) -> str:
    return f"{PREFIX}:batch:{batch_id}:messages"


def uid_order(uid: str) -> str:
    """List: the unsettled messages for one invite UID, in the order they were planned; only
    the first may be sent (scripts/_order.lua). A message leaves it when it settles."""
    return f"{PREFIX}:uid-order:{uid}"


def bounce_report(digest: str) -> str:
    """String with a TTL: a received report with this fingerprint digest was handled."""
    return f"{PREFIX}:bounce-seen:{digest}"


def mailbox_full(digest: str) -> str:
    """Sorted set with a TTL: full-mailbox failures for one address (its SHA-256 digest):
    bounce id -> epoch seconds."""
    return f"{PREFIX}:mailbox-full:{digest}"


def bounce_signal_day(day: str) -> str:
    """Hash with a TTL: reports of our side's problem on one UTC day (YYYY-MM-DD), per
    reason -> count."""
    return f"{PREFIX}:bounce-signals:{day}"


def roster(conference: str) -> str:
    """Set: the registration ids of the conference's seats."""
    return f"{PREFIX}:roster:{conference}"


def seat(conference: str, registration: str) -> str:
    """String: JSON of the seat (current attendee, invite UIDs and their SEQUENCE values)."""
    return f"{PREFIX}:seat:{conference}:{registration}"


def registration_messages(conference: str, registration: str) -> str:
    """Set: the keys of every outbox message created for this registration (create.lua adds
    them; messages created before the set existed are not in it)."""
    return f"{PREFIX}:registration:{conference}:{registration}:messages"


def registration_pending(conference: str, registration: str) -> str:
    """Sorted set, in the broker's Redis, with a TTL: the publication numbers of this
    registration's ingest tasks taken from the queue and not yet applied (store/scripts/
    pop.lua adds them); a task applies its event once no lower number is left."""
    return f"{PREFIX}:registration-pending:{conference}:{registration}"


def accepted(event_id: str) -> str:
    """String with a TTL: the HTTP API published an event with this id to the broker."""
    return f"{PREFIX}:accepted:{event_id}"


def updates(conference: str) -> str:
    """Hash: the number of the conference's last update batch and the facts it announced."""
    return f"{PREFIX}:updates:{conference}"


def recent_events(conference: str) -> str:
    """List, newest first and capped: the conference's latest events (id, type, outcome,
    registration id, time; no names or addresses), for the organisers' console."""
    return f"{PREFIX}:recent-events:{conference}"


def console_session(digest: str) -> str:
    """Hash with a TTL: an organiser's console session, by the SHA-256 of its cookie."""
    return f"{PREFIX}:console:session:{digest}"


def login_failures(client: str) -> str:
    """Counter with a TTL: failed console logins from one client address."""
    return f"{PREFIX}:console:login-failures:{client}"


SLOT = "{}"  # a variable part of a key in a template; Lua's string.gsub finds it literally


def template(key: Callable[..., str], parts: int = 1) -> str:
    """`key`'s format with its `parts` variable parts as SLOT, for a Lua script's `fill`
    (scripts/_move.lua): template(seat, 2) == "notifier:seat:{}:{}"."""
    return key(*[SLOT] * parts)
