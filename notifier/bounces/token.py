"""Return-path tokens: `bounces+TOKEN@kl.dk`, one per message, that nobody can forge.

TOKEN is a message id (derived from the outbox key, so the same message gets the same return
path on every retry) followed by an HMAC of that id under the bounce secret. It is lowercase
base32 without padding: MTAs that fold the local part's case (some upper-case it) cannot break
it, and "bounces+" plus 36 characters stays far below RFC 5321's 64 octets for a local part.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re

ID_LENGTH = 20  # 100 bits: no two outbox keys share an id in practice
MAC_LENGTH = 16  # 80 bits: guessing a valid tag is hopeless within any rate an MTA allows
TOKEN_LENGTH = ID_LENGTH + MAC_LENGTH
MAX_LOCAL_PART = 64  # RFC 5321 section 4.5.3.1.1
# Candidates are found generously (any length of letters and digits) so that forged or
# truncated tokens are seen, counted and rejected by verify() rather than silently missed.
CANDIDATE = r"[a-z0-9]{1,64}"
# A local part must not continue before "bounces" ("xbounces+...") nor the domain after it
# ("kl.dk.evil.example"); a full stop that ends a sentence is not a continuation.
LOCAL_BEFORE = r"(?<![\w.!#$%&'*+/=?^`{|}~-])"
DOMAIN_AFTER = r"(?![\w-])(?!\.[\w-])"


def _b32(data: bytes) -> str:
    return base64.b32encode(data).decode("ascii").rstrip("=").lower()


def message_id(key: str) -> str:
    """The public part of a message's token: a fixed-length digest of its outbox key."""
    return _b32(hashlib.sha256(b"bounce-id\x1f" + key.encode("utf-8")).digest())[:ID_LENGTH]


def _tag(ident: str, secret: bytes) -> str:
    return _b32(hmac.new(secret, ident.encode("ascii"), hashlib.sha256).digest())[:MAC_LENGTH]


def message_token(key: str, secret: bytes) -> str:
    """The token for the message stored under outbox key `key`: its id, then the id's HMAC."""
    if not secret:
        raise ValueError("the bounce secret is empty: anyone could forge a bounce")
    ident = message_id(key)
    return ident + _tag(ident, secret)


def verify(token: str, secret: bytes) -> str | None:
    """The message id that `token` carries if its HMAC is right under `secret`, else None.

    Case is ignored, since some MTAs upper-case local parts. The tag is compared in constant
    time so that a forger learns nothing from how long a rejection takes.
    """
    token = token.lower()
    if not secret or len(token) != TOKEN_LENGTH or not token.isascii() or not token.isalnum():
        return None
    ident, tag = token[:ID_LENGTH], token[ID_LENGTH:]
    return ident if hmac.compare_digest(tag, _tag(ident, secret)) else None


def _split(bounce_address: str) -> tuple[str, str]:
    local, at, domain = bounce_address.strip().rpartition("@")
    if not at or not local or not domain:
        raise ValueError("the bounce address needs a local part and a domain")
    return local, domain


def return_path(bounce_address: str, token: str) -> str:
    """`bounces@kl.dk` and TOKEN -> `bounces+TOKEN@kl.dk`, the envelope sender of one message."""
    local, domain = _split(bounce_address)
    tagged = f"{local}+{token}"
    if len(tagged.encode("utf-8")) > MAX_LOCAL_PART:
        raise ValueError(f"the bounce address's local part is too long for a token: {local!r}")
    return f"{tagged}@{domain}"


def token_pattern(bounce_address: str) -> re.Pattern[str]:
    """A pattern whose group 1 is the token in any `local+TOKEN@domain`, in any case."""
    local, domain = _split(bounce_address)
    return re.compile(
        f"{LOCAL_BEFORE}{re.escape(local)}\\+({CANDIDATE})@{re.escape(domain)}{DOMAIN_AFTER}",
        re.IGNORECASE | re.ASCII,
    )


def find_tokens(text: str, bounce_address: str) -> list[str]:
    """The candidate tokens (lower-cased, unverified, first occurrence first) in `text`."""
    found = (m.group(1).lower() for m in token_pattern(bounce_address).finditer(text))
    return list(dict.fromkeys(found))
