"""API tokens: stored only as SHA-256 digests, looked up by digest, compared in constant time.

Two hashes (keys.TOKENS, keys.TOKEN_DIGESTS): name -> JSON {"scope", "sha256", "created",
"revoked"}, and the digest of every live token -> the same record with its name (one HGET
authenticates a request). A token is 32 random bytes from
`secrets` (256 bits), so a fast hash is enough: a slow KDF (bcrypt, scrypt, Argon2) protects
low-entropy passwords against guessing from a stolen digest, and nobody can enumerate 2**256
tokens however fast the hash. A fast hash also keeps authentication to one HGET per request.

Revoking keeps the record (name, scope, times) for `notifier tokens list` and drops the
digest, so the token stops working at once, in every API process.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
from dataclasses import dataclass
from typing import Literal, cast

import redis
import redis.asyncio

from notifier.store import keys
from notifier.store.codec import text

__all__ = [
    "PREFIX",
    "SCOPES",
    "Scope",
    "TokenExists",
    "TokenInfo",
    "Tokens",
    "check_async",
    "digest",
]

Scope = Literal["ingest", "organiser"]
SCOPES: tuple[Scope, ...] = ("ingest", "organiser")
PREFIX = "ntf_"  # recognisable in a leaked file or a secret scanner's rules


class TokenExists(ValueError):
    """A live token already has this name (revoke it first)."""


@dataclass(frozen=True, slots=True)
class TokenInfo:
    name: str
    scope: Scope
    created: float  # epoch seconds
    revoked: float | None = None


def digest(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def _info(name: str, raw: bytes | str) -> TokenInfo:
    d = json.loads(raw)
    return TokenInfo(name, cast(Scope, d["scope"]), float(d["created"]), d.get("revoked"))


class Tokens:
    def __init__(self, client: redis.Redis) -> None:
        self.r = client

    def create(self, name: str, scope: Scope, now: float) -> str:
        """A new token named `name`; returns it (the only time it exists in clear).

        Raises:
            TokenExists: a live token has this name (a revoked one is replaced).
        """
        if scope not in SCOPES:
            raise ValueError(f"scope must be one of {', '.join(SCOPES)}")
        token = PREFIX + secrets.token_urlsafe(32)
        record = {"scope": scope, "sha256": digest(token), "created": now, "revoked": None}
        while True:
            with self.r.pipeline(transaction=True) as pipe:
                try:
                    pipe.watch(keys.TOKENS)  # type: ignore[no-untyped-call]
                    old = pipe.hget(keys.TOKENS, name)
                    if old is not None and json.loads(old).get("revoked") is None:
                        raise TokenExists(name)
                    pipe.multi()
                    pipe.hset(keys.TOKENS, name, json.dumps(record))
                    live = {"name": name, **record}
                    pipe.hset(keys.TOKEN_DIGESTS, digest(token), json.dumps(live))
                    pipe.execute()
                    return token
                except redis.WatchError:
                    continue

    def revoke(self, name: str, now: float) -> bool:
        """Stop the token named `name` from working; False if there is no live one."""
        while True:
            with self.r.pipeline(transaction=True) as pipe:
                try:
                    pipe.watch(keys.TOKENS)  # type: ignore[no-untyped-call]
                    old = pipe.hget(keys.TOKENS, name)
                    if old is None:
                        return False
                    record = json.loads(old)
                    if record.get("revoked") is not None:
                        return False
                    record["revoked"] = now
                    pipe.multi()
                    pipe.hset(keys.TOKENS, name, json.dumps(record))
                    pipe.hdel(keys.TOKEN_DIGESTS, record["sha256"])
                    pipe.execute()
                    return True
                except redis.WatchError:
                    continue

    def list(self) -> list[TokenInfo]:
        found = self.r.hgetall(keys.TOKENS)
        return sorted((_info(text(k), v) for k, v in found.items()), key=lambda t: t.name)

    def is_live_digest(self, wanted: str) -> bool:
        """Whether a live token has this SHA-256 digest (a console session's check that the
        token it was opened with has not been revoked since)."""
        return bool(wanted) and bool(self.r.hexists(keys.TOKEN_DIGESTS, wanted))

    def check(self, token: str) -> TokenInfo | None:
        """The live token's record, or None for an unknown or revoked token.

        The lookup is by digest, so what an attacker controls (the token) reaches Redis only
        as a SHA-256 digest; the digest stored in the record is then compared in constant
        time, so that not even the record's own comparison leaks timing.
        """
        wanted = digest(token)
        return _live(self.r.hget(keys.TOKEN_DIGESTS, wanted), wanted)


async def check_async(client: redis.asyncio.Redis, token: str) -> TokenInfo | None:
    """Tokens.check on an asyncio client (the HTTP API's event loop)."""
    wanted = digest(token)
    return _live(await client.hget(keys.TOKEN_DIGESTS, wanted), wanted)


def _live(raw: bytes | str | None, wanted: str) -> TokenInfo | None:
    if raw is None:
        return None
    live = json.loads(raw)
    if not hmac.compare_digest(str(live["sha256"]), wanted):
        return None
    return TokenInfo(str(live["name"]), cast(Scope, live["scope"]), float(live["created"]))
