"""Organisers' console sessions and the failed-login counter, in Redis.

A session is created by logging in with an organiser token. The browser holds only a random
session id; Redis holds the session under the SHA-256 of that id (so a copy of Redis opens
no session), with the name and digest of the token it was opened with and the session's
CSRF token. A session ends at logout, at its expiry, or as soon as its token is revoked:
every lookup checks that the token is still live.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass

import redis

from notifier.store import keys
from notifier.store.codec import text
from notifier.store.tokens import TokenInfo, Tokens, digest

__all__ = ["LoginFailures", "Session", "Sessions"]


@dataclass(frozen=True, slots=True)
class Session:
    id_digest: str
    token_name: str
    csrf: str
    created: float


def _id_digest(session_id: str) -> str:
    return hashlib.sha256(session_id.encode("utf-8")).hexdigest()


class Sessions:
    def __init__(self, client: redis.Redis, ttl_seconds: int) -> None:
        self.r = client
        self.ttl = ttl_seconds

    def start(self, token: str, info: TokenInfo, now: float) -> str:
        """A new session for a live organiser token; returns the session id for the cookie
        (the only place it exists in clear)."""
        session_id = secrets.token_urlsafe(32)
        key = keys.console_session(_id_digest(session_id))
        with self.r.pipeline(transaction=True) as pipe:
            pipe.hset(
                key,
                mapping={
                    "token": info.name,
                    "token_sha256": digest(token),
                    "csrf": secrets.token_urlsafe(32),
                    "created": now,
                },
            )
            pipe.expire(key, self.ttl)
            pipe.execute()
        return session_id

    def get(self, session_id: str) -> Session | None:
        """The session, or None when it is unknown, expired or its token was revoked."""
        if not session_id:
            return None
        id_digest = _id_digest(session_id)
        found = {
            text(k): text(v) for k, v in self.r.hgetall(keys.console_session(id_digest)).items()
        }
        if not found or not Tokens(self.r).is_live_digest(found.get("token_sha256", "")):
            return None
        return Session(id_digest, found["token"], found["csrf"], float(found["created"]))

    def end(self, session_id: str) -> None:
        if session_id:
            self.r.delete(keys.console_session(_id_digest(session_id)))


class LoginFailures:
    """Failed logins per client address, in a fixed window that starts at the first."""

    def __init__(self, client: redis.Redis, window_seconds: int) -> None:
        self.r = client
        self.window = window_seconds

    def count(self, client_address: str) -> int:
        raw = self.r.get(keys.login_failures(client_address))
        return int(raw) if raw is not None else 0

    def add(self, client_address: str) -> int:
        key = keys.login_failures(client_address)
        with self.r.pipeline(transaction=True) as pipe:
            # SET NX starts the window; INCR keeps the TTL. (EXPIRE ... NX needs Redis 7.)
            pipe.set(key, 0, ex=self.window, nx=True)
            pipe.incr(key)
            _, count = pipe.execute()
        return int(count)

    def retry_after(self, client_address: str) -> int:
        """Seconds until the window ends (at least 1)."""
        return max(1, int(self.r.ttl(keys.login_failures(client_address))))
