"""People's names and addresses: validation, normalisation and masking for logs."""

from __future__ import annotations

import unicodedata
from typing import Annotated

import idna
from email_validator import EmailNotValidError, validate_email
from pydantic import AfterValidator

MAX_NAME = 200
MAX_ADDRESS = 254


def _no_controls(value: str) -> str:
    if any(unicodedata.category(ch) in ("Cc", "Cf", "Zl", "Zp") for ch in value):
        raise ValueError("must not contain control or line-break characters")
    return value


def check_name(value: str) -> str:
    """A display name: trimmed, 1..200 characters, no control characters (so no CR/LF)."""
    value = unicodedata.normalize("NFC", _no_controls(value).strip())
    if not value:
        raise ValueError("must not be empty")
    if len(value) > MAX_NAME:
        raise ValueError(f"must be at most {MAX_NAME} characters")
    return value


def check_address(value: str) -> str:
    """An email address, syntax only (no DNS), internationalised domains and mailboxes allowed.

    The domain is returned in its normalised (lowercase, Unicode) form.
    """
    _no_controls(value)
    if len(value) > MAX_ADDRESS:
        raise ValueError(f"must be at most {MAX_ADDRESS} characters")
    try:
        checked = validate_email(value, check_deliverability=False, allow_smtputf8=True)
    except EmailNotValidError as exc:
        raise ValueError(f"not a valid email address: {exc}") from None
    return checked.normalized


PersonName = Annotated[str, AfterValidator(check_name)]
Address = Annotated[str, AfterValidator(check_address)]


def mask(address: str) -> str:
    """'mette.sorensen@aarhus.dk' -> 'm***@aarhus.dk'; safe to log."""
    local, at, domain = address.rpartition("@")
    if not at:
        return "***"
    return f"{local[:1]}***@{domain}"


def same_address(a: str, b: str) -> bool:
    """Whether two validated addresses name the same mailbox (case-insensitive)."""
    return a.casefold() == b.casefold()


def normalise(address: str) -> str:
    """The form two spellings of one mailbox share, e.g. the key of a suppression:
    "Mette@Ærø.DK" and "mette@xn--r-3fa9c.dk" are both "mette@xn--r-3fa9c.dk".

    The local part is lower-cased (str.lower, a case mapping: mail systems treat case
    alike) and NFC-normalised (a bounce may spell it in another normal form than the event
    did), and not folded any further: case folding would make "straße@" "strasse@", which
    is another mailbox. The domain becomes its IDNA A-label under
    UTS 46, as compose.envelope_address writes it on the envelope; it is not case-folded
    first, because folding turns "ß" into "ss", another domain under IDNA 2008. A domain
    IDNA refuses is only case-folded: the key stays stable, whatever such a domain means.
    """
    local, at, domain = address.strip().rpartition("@")
    if not at:
        return unicodedata.normalize("NFC", address.strip()).lower()
    local = unicodedata.normalize("NFC", local).lower()
    domain = domain.rstrip(".")  # "kl.dk." is the same domain as "kl.dk"
    if domain.isascii():
        # What UTS 46 makes of an ASCII domain: the same, lower-cased (and a label IDNA
        # would refuse is only case-folded below anyway). idna.encode costs about 0.2 ms,
        # and every mail asks the suppression list.
        return f"{local}@{domain.lower()}"
    try:
        domain = idna.encode(domain, uts46=True).decode("ascii")
    except idna.IDNAError:
        domain = domain.casefold()
    return f"{local}@{domain.casefold()}"
