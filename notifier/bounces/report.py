"""Reading a bounce or complaint: what happened to which recipient, and which message it names.

One parser for both ways in (`notifier bounces receive` and `poll`). It never raises on what
arrives: mail nobody can read is a Report of kind "unrecognised", so that an MTA's pipe never
bounces the bounce. The tokens it returns are candidates only; `token.verify` decides.

- RFC 3464 DSNs are read with the stdlib (`message/delivery-status`, wherever it sits: some
  gateways wrap the whole DSN in a message/rfc822 attachment).
- Bounces without that part (Exchange 5.5 NDRs, qmail, Exim, Yahoo and the like) go through
  flufl.bounce's heuristics; their status code is read from the text when it states one.
- RFC 5965 feedback reports (ARF) are complaints.
"""

from __future__ import annotations

import hashlib
import html
import re
from collections.abc import Iterator
from dataclasses import dataclass
from email import message_from_bytes, policy
from email.message import Message
from email.parser import BytesParser, HeaderParser
from typing import Literal, get_args

from flufl.bounce import all_failures

from notifier.bounces.token import TOKEN_LENGTH, token_pattern

Kind = Literal["dsn", "complaint", "unrecognised"]
Action = Literal["failed", "delayed", "delivered", "relayed", "expanded"]
Source = Literal["rfc3464", "heuristic", "arf", ""]
ACTIONS: tuple[Action, ...] = get_args(Action)
# Where the MTA that delivered the bounce to us wrote our return path.
RECIPIENT_HEADERS = ("to", "delivered-to", "x-original-to", "envelope-to")
# Parts that hold the header block of the message that bounced.
RETURNED = ("message/rfc822", "text/rfc822-headers", "message/rfc822-headers")
REPORTS = ("message/delivery-status", "message/global-delivery-status")
STATUS = re.compile(r"(?<![\d.])([245])\.(\d{1,3})\.(\d{1,3})(?!\d|\.\d)")
BARE_TOKEN = re.compile(f"[a-z0-9]{{{TOKEN_LENGTH}}}", re.IGNORECASE | re.ASCII)
DEFAULT_STATUS = {"failed": "5.0.0", "delayed": "4.0.0"}
# Stable headers that identify a bounce without a Message-ID; trace headers (Received,
# Delivered-To, Return-Path) differ between two deliveries of the same bounce, so they are out.
STABLE_HEADERS = (b"date:", b"from:", b"subject:")
MAX_DIAGNOSTIC = 500


@dataclass(frozen=True)
class Recipient:
    """One recipient's fate as the report states it."""

    action: Action
    status: str  # "5.1.1"; the class default ("5.0.0", "4.0.0", "2.0.0") when none is stated
    diagnostic: str  # the remote server's words, without the type ("smtp;"); may be ""
    final_recipient: str  # the address, without its type ("rfc822;"); may be ""


@dataclass(frozen=True)
class Report:
    kind: Kind
    tokens: tuple[str, ...]  # candidates, lower-cased, most authoritative place first
    fingerprint: str  # equal for the same report delivered twice
    recipients: tuple[Recipient, ...] = ()
    source: Source = ""  # how the recipients were read
    feedback_type: str = ""  # a complaint's Feedback-Type ("abuse", ...), lower-cased


def parse(raw: bytes, bounce_address: str) -> Report:
    """Read one raw message. A bad `bounce_address` raises (configuration); input never does."""
    pattern = token_pattern(bounce_address)
    fingerprint = content_fingerprint(raw)
    try:
        message = BytesParser(policy=policy.default).parsebytes(raw)
        fingerprint = _fingerprint(message, raw)
        tokens = _tokens(message, pattern)
    except Exception:  # garbage input must end as a Report, whatever the parser trips on
        return Report("unrecognised", (), fingerprint)
    try:
        return _classify(message, raw, tokens, fingerprint)
    except Exception:  # same: flufl.bounce's detectors re-raise whatever they hit
        return Report("unrecognised", tokens, fingerprint)


def _classify(message: Message, raw: bytes, tokens: tuple[str, ...], fingerprint: str) -> Report:
    feedback = [p for p in message.walk() if p.get_content_type() == "message/feedback-report"]
    if feedback:
        blocks = _blocks(feedback[0])
        kind = _field(blocks[0], "feedback-type").lower() if blocks else ""
        return Report("complaint", tokens, fingerprint, source="arf", feedback_type=kind)
    standard = _standard_recipients(message)
    if standard:
        return Report("dsn", tokens, fingerprint, standard, "rfc3464")
    heuristic = tuple(_heuristic_recipients(raw))
    if heuristic:
        return Report("dsn", tokens, fingerprint, heuristic, "heuristic")
    return Report("unrecognised", tokens, fingerprint)


# Header fields ------------------------------------------------------------------------------


def _values(headers: Message, name: str) -> list[str]:
    """Raw values, unfolded: no structured parsing, which can fail on what bounces carry."""
    return [" ".join(str(v).split()) for k, v in headers.raw_items() if k.lower() == name]


def _field(headers: Message, name: str) -> str:
    found = _values(headers, name)
    return found[0] if found else ""


def _blocks(part: Message) -> list[Message]:
    """The header blocks of a delivery-status or feedback-report part.

    The stdlib gives message/delivery-status as a list of blocks, but any other message/* type
    (message/global-delivery-status, message/feedback-report) as one message whose body holds
    the blocks after the first.
    """
    payload = part.get_payload()
    blocks = [b for b in payload if isinstance(b, Message)] if isinstance(payload, list) else []
    if part.get_content_type() != "message/delivery-status" and len(blocks) == 1:
        rest = blocks[0].get_payload()
        if isinstance(rest, str):
            parser = HeaderParser()
            blocks += [parser.parsestr(b) for b in re.split(r"\r?\n\s*\r?\n", rest) if b.strip()]
    return blocks


def _returned_headers(part: Message) -> Message | None:
    """The header block of the returned message, from message/rfc822 or text/rfc822-headers."""
    payload = part.get_payload()
    if isinstance(payload, list):
        return payload[0] if payload and isinstance(payload[0], Message) else None
    data = part.get_payload(decode=True)
    if not isinstance(data, bytes):
        return None
    return HeaderParser().parsestr(data.decode("ascii", errors="replace"))


# Tokens -------------------------------------------------------------------------------------


def _tokens(message: Message, pattern: re.Pattern[str]) -> tuple[str, ...]:
    """Candidate tokens: recipient headers first, then the reports, then the returned message."""
    texts = [v for name in RECIPIENT_HEADERS for v in _values(message, name)]
    envelope_ids: list[str] = []
    for part in message.walk():
        kind = part.get_content_type()
        if kind in (*REPORTS, "message/feedback-report"):
            # Original-Envelope-Id, X-Postfix-Sender, ARF's Original-Mail-From and the like.
            blocks = _blocks(part)
            texts += [" ".join(str(v).split()) for b in blocks for _, v in b.raw_items()]
            envelope_ids += [v for b in blocks for v in _values(b, "original-envelope-id")]
        elif kind in RETURNED and (returned := _returned_headers(part)) is not None:
            texts += _values(returned, "return-path")
    found = [m.group(1).lower() for text in texts for m in pattern.finditer(text)]
    # An ENVID may also be the bare token (MAIL FROM:<...> ENVID=TOKEN).
    found += [e.lower() for e in envelope_ids if BARE_TOKEN.fullmatch(e)]
    if not found:  # non-standard bounces quote the returned headers as plain text
        found = [m.group(1).lower() for m in pattern.finditer(_all_text(message))]
    return tuple(dict.fromkeys(found))


def _all_text(message: Message) -> str:
    chunks = []
    for part in message.walk():
        if part.get_content_maintype() == "text":
            chunks.append(_decoded(part))
    return "\n".join(chunks)


def _decoded(part: Message) -> str:
    data = part.get_payload(decode=True)
    if not isinstance(data, bytes):
        return ""
    charset = part.get_content_charset() or "latin-1"
    try:
        text = data.decode(charset, errors="replace")
    except LookupError:  # an unknown charset name
        text = data.decode("latin-1")
    if part.get_content_subtype() == "html":
        text = html.unescape(re.sub(r"<[^>]*>", " ", text))
    return text


# RFC 3464 -----------------------------------------------------------------------------------


def _standard_recipients(message: Message) -> tuple[Recipient, ...]:
    found = [
        _recipient(block)
        for part in message.walk()
        if part.get_content_type() in REPORTS
        for block in _blocks(part)
    ]
    # Some MTAs repeat one recipient's block (one per alias they expanded it through).
    return tuple(dict.fromkeys(r for r in found if r is not None))


def _recipient(block: Message) -> Recipient | None:
    """A per-recipient block; None for the per-message block or one without a verdict."""
    status_text = _field(block, "status")
    stated = STATUS.search(status_text)
    # Some write a plain SMTP reply ("553 Exceeded maximum ...") where the status belongs.
    reply = re.match(r"\s*([245])\d\d\b", status_text)
    status_class = stated.group(1) if stated else reply.group(1) if reply else ""
    action = _action(_field(block, "action"), status_class)
    if action is None:
        return None
    status = stated.group(0) if stated else DEFAULT_STATUS.get(action, "2.0.0")
    address = _field(block, "final-recipient") or _field(block, "original-recipient")
    # Without a Diagnostic-Code, a plain reply written as the Status is the best words there are.
    diagnostic = _untyped(_field(block, "diagnostic-code")) or ("" if stated else status_text)
    return Recipient(
        action=action,
        status=status,
        diagnostic=diagnostic[:MAX_DIAGNOSTIC],
        final_recipient=_untyped(address).strip("<>"),
    )


def _action(value: str, status_class: str) -> Action | None:
    word = value.split()[0].lower() if value.split() else ""
    for action in ACTIONS:
        if word == action:
            return action
    # Some MTAs write words RFC 3464 does not know ("error", "failure"): the status decides.
    if word and status_class == "5":
        return "failed"
    if word and status_class == "4":
        return "delayed"
    return None


def _untyped(value: str) -> str:
    """'smtp; 550 5.1.1 unknown' -> '550 5.1.1 unknown'; 'rfc822; a@b' -> 'a@b'."""
    kind, semicolon, rest = value.partition(";")
    return rest.strip() if semicolon and kind.strip() and " " not in kind.strip() else value


# Non-standard bounces ---------------------------------------------------------------------


def _heuristic_recipients(raw: bytes) -> Iterator[Recipient]:
    # flufl.bounce's detectors are written and tested against the compat32 Message API.
    legacy = message_from_bytes(raw)
    temporary, permanent = all_failures(legacy)
    text = "\n".join(_own_texts(legacy))
    verdicts: tuple[tuple[Action, str, frozenset[bytes]], ...] = (
        ("failed", "5", permanent),
        ("delayed", "4", temporary),
    )
    for action, status_class, found in verdicts:
        for address in sorted(found):
            status, diagnostic = _stated_status(text, status_class, address)
            yield Recipient(
                action=action,
                status=status or DEFAULT_STATUS[action],
                diagnostic=diagnostic,
                final_recipient=address.decode("utf-8", errors="replace"),
            )


def _own_texts(part: Message) -> Iterator[str]:
    """The bounce's own words: its text parts, not those of the message it returns."""
    if part.get_content_maintype() == "message" or part.get_content_type() in RETURNED:
        return
    if part.get_content_maintype() == "multipart":
        payload = part.get_payload()
        for sub in payload if isinstance(payload, list) else []:
            if isinstance(sub, Message):
                yield from _own_texts(sub)
    elif part.get_content_maintype() == "text":
        yield _decoded(part)


def _stated_status(text: str, status_class: str, address: bytes) -> tuple[str, str]:
    """The first status code of the class the text states, and the line that states it.

    A line that names the address wins: one bounce may list several recipients and reasons.
    """
    lines = text.splitlines()
    name = address.decode("utf-8", errors="replace").lower()
    for candidates in ([line for line in lines if name in line.lower()], lines):
        for line in candidates:
            for found in STATUS.finditer(line):
                if found.group(1) == status_class:
                    return found.group(0), " ".join(line.split())[:MAX_DIAGNOSTIC]
    return "", ""


# Fingerprints -------------------------------------------------------------------------------


def _fingerprint(message: Message, raw: bytes) -> str:
    """The Message-ID names a report wherever it travels; without one, its content does."""
    message_id = _field(message, "message-id")
    if message_id:
        return _digest(b"message-id\x1f" + message_id.encode("utf-8", errors="replace"))
    return content_fingerprint(raw)


def content_fingerprint(raw: bytes) -> str:
    """A digest of the stable headers and the body, with line ends and trailing space evened
    out (the pipe gives LF, IMAP gives CRLF), and trace headers left out."""
    text = raw.replace(b"\r\n", b"\n")
    head, blank, body = text.partition(b"\n\n")
    if not blank:
        head, body = b"", text
    unfolded = re.sub(rb"\n[ \t]+", b" ", head).split(b"\n")
    stable = [b" ".join(h.split()) for h in unfolded if h.lower().startswith(STABLE_HEADERS)]
    lines = [line.rstrip() for line in body.split(b"\n")]
    return _digest(b"content\x1f" + b"\n".join([*stable, b"", *lines]).rstrip())


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:32]
