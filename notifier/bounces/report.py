"""Reading a bounce or complaint: what happened to which recipient, why, and which message
it names.

One parser for both ways in (`notifier bounces receive` and `poll`). It never raises on what
arrives: mail nobody can read is a Report of kind "unrecognised", so that an MTA's pipe never
bounces the bounce. The tokens it returns are candidates only; `token.verify` decides.

- RFC 3464 DSNs are read with the stdlib (`message/delivery-status`, wherever it sits: some
  gateways wrap the whole DSN in a message/rfc822 attachment).
- Amazon SES notifications (JSON, as SNS mails them) are read field by field: Bounce,
  Complaint and Delivery (which is not a bounce).
- Bounces without that part (Exchange 5.5 NDRs, qmail, Exim, Yahoo and the like) go through
  flufl.bounce's heuristics; what is still unread and looks like a bounce (Microsoft 365's
  NDR text, a DSN whose MIME structure is broken, Yahoo Japan, OpenSMTPD...) is read from its
  text: the delivery-status fields written as text, or the lines that name an address.
  A text that says the delivery is only delayed ("Action: delayed", a 4.x.x status,
  "WARNING", "still trying") is a delay, whatever flufl.bounce calls it.
- RFC 5965 feedback reports (ARF) are complaints; `auth-failure` reports (DMARC, SPF) are
  not: they are an authentication signal about our own mail.
- Auto-replies (RFC 3834) are recognised as such and change nothing.

Each recipient carries a reason (notifier.bounces.reason).
"""

from __future__ import annotations

import hashlib
import html
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from email import message_from_bytes, policy
from email.message import Message
from email.parser import BytesParser, HeaderParser
from typing import Any, Literal, get_args

from flufl.bounce import all_failures

from notifier.bounces.reason import Reason, classify, conservative
from notifier.bounces.token import TOKEN_LENGTH, token_pattern

Kind = Literal["dsn", "complaint", "auth_failure", "auto_reply", "unrecognised"]
Action = Literal["failed", "delayed", "delivered", "relayed", "expanded"]
Source = Literal["rfc3464", "ses", "heuristic", "text", "arf", "rfc3834", ""]
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
# The bounce's own words are read up to this many characters: enough for any notice, and
# a bound on the work a huge text part can cause.
MAX_TEXT = 64 * 1024


@dataclass(frozen=True)
class Recipient:
    """One recipient's fate as the report states it."""

    action: Action
    status: str  # "5.1.1"; the class default ("5.0.0", "4.0.0", "2.0.0") when none is stated
    diagnostic: str  # the remote server's words, without the type ("smtp;"); may be ""
    final_recipient: str  # the address, without its type ("rfc822;"); may be ""
    reason: Reason = "other"
    original_recipient: str = ""  # RFC 3464's Original-Recipient, when stated


@dataclass(frozen=True)
class Report:
    kind: Kind
    tokens: tuple[str, ...]  # candidates, lower-cased, most authoritative place first
    fingerprint: str  # equal for the same report delivered twice
    recipients: tuple[Recipient, ...] = ()
    source: Source = ""  # how the recipients were read
    feedback_type: str = ""  # a complaint's Feedback-Type ("abuse", ...), lower-cased
    # A complaint's recipients as the report names them (ARF's Original-Rcpt-To, SES's
    # complainedRecipients); often left out, as ARF allows.
    complained: tuple[str, ...] = ()

    @property
    def reason(self) -> Reason:
        """The report's reason: its first failed recipient's, else its first recipient's."""
        if self.kind == "complaint":
            return "complaint"
        if self.kind == "auth_failure":
            return "authentication"
        if self.kind == "auto_reply":
            return "auto_reply"
        ranked = sorted(self.recipients, key=lambda r: r.action != "failed")
        return ranked[0].reason if ranked else "not_bounce"


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
        return _classify(message, raw, tokens, fingerprint, pattern)
    except Exception:  # same: flufl.bounce's detectors re-raise whatever they hit
        return Report("unrecognised", tokens, fingerprint)


def _classify(
    message: Message,
    raw: bytes,
    tokens: tuple[str, ...],
    fingerprint: str,
    pattern: re.Pattern[str],
) -> Report:
    feedback = [p for p in message.walk() if p.get_content_type() == "message/feedback-report"]
    if feedback:
        return _arf(feedback[0], tokens, fingerprint)
    standard = _standard_recipients(message)
    if standard:
        return Report("dsn", tokens, fingerprint, standard, "rfc3464")
    ses = _ses(message, tokens, fingerprint)
    if ses is not None:
        return ses
    if _auto_reply(message):
        return Report("auto_reply", tokens, fingerprint, source="rfc3834")
    text = "\n".join(_own_texts(message))[:MAX_TEXT]
    heuristic = tuple(_heuristic_recipients(raw, text))
    if heuristic:
        return Report("dsn", tokens, fingerprint, heuristic, "heuristic")
    if _looks_like_bounce(message, text):
        found = _text_recipients(text, pattern)
        if found:
            return Report("dsn", tokens, fingerprint, found, "text")
    return Report("unrecognised", tokens, fingerprint)


def _arf(part: Message, tokens: tuple[str, ...], fingerprint: str) -> Report:
    blocks = _blocks(part)
    fields = blocks[0] if blocks else Message()
    kind = _field(fields, "feedback-type").lower()
    complained = tuple(_untyped(v).strip("<>") for v in _values(fields, "original-rcpt-to"))
    verdict: Kind = "auth_failure" if kind == "auth-failure" else "complaint"
    return Report(verdict, tokens, fingerprint, (), "arf", kind, complained)


# Header fields ------------------------------------------------------------------------------


def _values(headers: Message, name: str) -> list[str]:
    """Raw values, unfolded: no structured parsing, which can fail on what bounces carry."""
    return [_text(" ".join(str(v).split())) for k, v in headers.raw_items() if k.lower() == name]


def _text(value: str) -> str:
    """Raw 8-bit bytes in a header come out of the parser as surrogate escapes, which no
    encoder takes: read them as UTF-8 (what such mail is, if anything), else replace them."""
    return value.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


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
    notice = "\n".join(_own_texts(message))[:MAX_TEXT]
    blocks = [b for p in message.walk() if p.get_content_type() in REPORTS for b in _blocks(p)]
    # The notice speaks for the one recipient of a report on one; for several, only the
    # lines that name each do.
    single = sum(1 for b in blocks if _field(b, "final-recipient")) <= 1
    found = [_recipient(block, notice, single=single) for block in blocks]
    # Some MTAs repeat one recipient's block (one per alias they expanded it through).
    return tuple(dict.fromkeys(r for r in found if r is not None))


def _recipient(block: Message, notice: str = "", *, single: bool = True) -> Recipient | None:
    """A per-recipient block; None for the per-message block or one without a verdict.
    `notice` is the report's human-readable text, which may say more than the block."""
    status_text = _field(block, "status")
    stated = STATUS.search(status_text)
    # Some write a plain SMTP reply ("553 Exceeded maximum ...") where the status belongs.
    reply = re.match(r"\s*([245])\d\d\b", status_text)
    status_class = stated.group(1) if stated else reply.group(1) if reply else ""
    action = _action(_field(block, "action"), status_class)
    if action is None:
        return None
    status = stated.group(0) if stated else DEFAULT_STATUS.get(action, "2.0.0")
    if action == "failed" and status.startswith("2"):
        action = "delivered"  # "Action: failed" with a 2.x.x status is no failure
    # Without a Diagnostic-Code, a plain reply written as the Status is the best words there are.
    diagnostic = _untyped(_field(block, "diagnostic-code")) or ("" if stated else status_text)
    final = _untyped(_field(block, "final-recipient")).strip("<>")
    return Recipient(
        action=action,
        status=status,
        diagnostic=diagnostic[:MAX_DIAGNOSTIC],
        final_recipient=final,
        reason=_reason(action, status, diagnostic, notice, final, single),
        original_recipient=_untyped(_field(block, "original-recipient")).strip("<>"),
    )


def _reason(
    action: Action, status: str, diagnostic: str, notice: str, address: str, single: bool
) -> Reason:
    if action in ("delivered", "relayed", "expanded"):
        return "not_bounce"
    reason = classify(status, diagnostic)
    near = _context(notice, address) if address else ""
    if reason == "other":  # the block says too little: the notice's lines on this address
        reason = classify(status, near or (notice if single else ""))
    return conservative(reason, notice if single else near)


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
    if word and status_class == "2":
        return "delivered"
    return None


def _untyped(value: str) -> str:
    """'smtp; 550 5.1.1 unknown' -> '550 5.1.1 unknown'; 'rfc822; a@b' -> 'a@b'."""
    kind, semicolon, rest = value.partition(";")
    return rest.strip() if semicolon and kind.strip() and " " not in kind.strip() else value


# Non-standard bounces ---------------------------------------------------------------------

# Words of a notice that only warns: the MTA goes on trying.
DELAY = re.compile(
    r"action:\s*delayed|warning only|warning: message .{0,60}delayed|will (continue|keep) "
    r"(trying|to try)|(is )?still (being )?(trying|retried|in the queue)|not yet been delivered"
    r"|has been delayed|delivery (is )?delayed|will retry|no action is required on your part"
    r"|this is a warning|delay(ed)? (notification|warning)|temporarily (deferred|delayed)",
    re.IGNORECASE,
)
# Where a notice's own words end and the returned message begins.
ORIGINAL = re.compile(
    r"^\s*(-+\s*)?(original message( headers)?|below (this line )?is a copy|this is a copy of "
    r"the message|the original message (was|is) (attached|below|included|enclosed)"
    r"|returned message|original message follows|unsent message below"
    r"|---+ ?(original|returned|forwarded) message)",
    re.IGNORECASE | re.MULTILINE,
)
ADDRESS = re.compile(r"[\w.!#$%&'*+/=?^`{|}~-]+@[\w-]+(?:\.[\w-]+)+", re.UNICODE)
SYSTEM_SENDERS = re.compile(
    r"mailer-daemon|postmaster|mail delivery|mail ?administrator|mmsc|noreply-dmarc|"
    r"^(<>|)$",
    re.IGNORECASE,
)
BOUNCE_SUBJECT = re.compile(
    r"undeliver|undelivered|delivery (status|failure|failed|notification|has failed|report)"
    r"|returned mail|failure notice|mail delivery failed|non-?delivery|could not be delivered"
    r"|delivery problem|bounce|rejected|returned to sender|nicht zustellbar|unzustellbar"
    r"|kan ikke leveres|ikke leveret|unable to deliver|error",
    re.IGNORECASE,
)
AUTO_REPLY_SUBJECT = re.compile(
    r"auto(matic)?[- ]?(reply|response|antwort|svar)|autosvar|out of (the )?office|away"
    r"|vacation|abwesen|fravær|ferie|on leave|i am (currently )?(out|away)|absence",
    re.IGNORECASE,
)
HEADERS_IN_TEXT = re.compile(
    r"^\s*(from|to|cc|reply-to|sender|return-path|received|message-id|x-[\w-]+):",
    re.IGNORECASE,
)
# Lines after an address that still describe it ("<x@y>: host ... said: 550 ...").
CONTEXT_LINES = 6
MAX_TEXT_RECIPIENTS = 20
# flufl.bounce reads only this much of a message: its detectors try a dozen patterns on
# every line (seconds of CPU for a report near the size limit: bench/README.md, "Bounce
# input limits"), and a notice's words come before the original message it may carry.
MAX_FLUFL_BYTES = 256 * 1024


def _heuristic_recipients(raw: bytes, text: str) -> Iterator[Recipient]:
    # flufl.bounce's detectors are written and tested against the compat32 Message API.
    legacy = message_from_bytes(_head(raw, MAX_FLUFL_BYTES))
    temporary, permanent = all_failures(legacy)
    verdicts: tuple[tuple[Action, frozenset[bytes]], ...] = (
        ("failed", permanent),
        ("delayed", temporary),
    )
    single = len(temporary) + len(permanent) == 1
    for action, found in verdicts:
        for address in sorted(found):
            yield _from_text(text, address.decode("utf-8", errors="replace"), action, single)


def _head(raw: bytes, limit: int) -> bytes:
    """At most `limit` bytes of `raw`, cut after a whole line."""
    if len(raw) <= limit:
        return raw
    end = raw.rfind(b"\n", 0, limit)
    return raw[: end + 1] if end > 0 else raw[:limit]


def _from_text(text: str, address: str, action: Action, single: bool) -> Recipient:
    """A recipient read from a notice's text: the status stated near the address (else
    anywhere), its line as the diagnostic, and a delay whatever the caller thought when the
    text says the MTA goes on trying."""
    context = _context(text, address) or text
    status, diagnostic = _stated_status(context, address)
    if not status:
        status, diagnostic = _stated_status(text, address)
    reason = classify(status, context)
    if reason == "other":  # the words may stand apart from the address
        reason = classify(status, text)
    if status.startswith("2"):  # "250 2.1.5 Ok": delivered after all
        return Recipient("delivered", status, diagnostic, address, "not_bounce")
    if DELAY.search(text):  # a warning; a 4.x.x failure is one the MTA gave up on
        action = "delayed"
    elif status.startswith("5"):
        action = "failed"
    return Recipient(
        action=action,
        status=status or DEFAULT_STATUS[action],
        diagnostic=diagnostic,
        final_recipient=address,
        reason=conservative(reason, text if single else context),
    )


def _context(text: str, address: str) -> str:
    """The lines that name `address`, with the two before and the few after each, up to a
    line that names another address (one notice may list several recipients)."""
    lines = text.splitlines()
    name = address.lower()
    picked: list[str] = []
    for i, line in enumerate(lines):
        if name not in line.lower():
            continue
        before = [b for b in lines[max(i - 2, 0) : i] if not _names_other(b, name)]
        after: list[str] = []
        for follow in lines[i + 1 : i + CONTEXT_LINES]:
            if _names_other(follow, name):
                break
            after.append(follow)
        picked += [*before, line, *after]
    return "\n".join(picked)


def _names_other(line: str, name: str) -> bool:
    return any(m.group(0).lower().strip(".") != name for m in ADDRESS.finditer(line))


def _auto_reply(message: Message) -> bool:
    """An RFC 3834 auto-reply (vacation, out of office): only once no DSN was found, since
    MTAs mark their bounces auto-replied too."""
    if _field(message, "x-autoreply") or _field(message, "x-autorespond"):
        return True
    if _field(message, "precedence").lower() == "auto_reply":
        return True
    sender = _field(message, "from")
    if SYSTEM_SENDERS.search(sender):
        return False
    subject = _field(message, "subject")
    auto = _field(message, "auto-submitted").lower()
    return auto.startswith("auto-replied") or bool(AUTO_REPLY_SUBJECT.search(subject))


def _looks_like_bounce(message: Message, text: str) -> bool:
    sender = _field(message, "from")
    subject = _field(message, "subject")
    if SYSTEM_SENDERS.search(sender) or BOUNCE_SUBJECT.search(subject):
        return True
    return bool(re.search(r"final-recipient:|could not be delivered|undeliverable", text, re.I))


def _text_recipients(text: str, pattern: re.Pattern[str]) -> tuple[Recipient, ...]:
    """Recipients of a notice read from its text: delivery-status fields written as text
    (a DSN whose MIME structure is broken), else every address its own words name."""
    fields = (
        text[text.lower().find("final-recipient:") :]
        if "final-recipient:" in (text.lower())
        else ""
    )
    if fields:
        parser = HeaderParser()
        blocks = [parser.parsestr(b) for b in re.split(r"\r?\n\s*\r?\n", fields) if b.strip()]
        found = [r for r in (_recipient(b) for b in blocks) if r is not None]
        if found:
            return tuple(dict.fromkeys(found))
    addresses: dict[str, None] = {}
    for line in text.splitlines():
        if HEADERS_IN_TEXT.match(line):
            continue
        for match in ADDRESS.finditer(line):
            address = match.group(0).strip(".")
            if not SYSTEM_SENDERS.search(address) and not pattern.search(address):
                addresses[address] = None
    ordered = list(addresses)[:MAX_TEXT_RECIPIENTS]
    single = len(ordered) == 1
    return tuple(_from_text(text, address, "failed", single) for address in ordered)


def _own_texts(part: Message) -> Iterator[str]:
    """The bounce's own words: its text parts, not those of the message it returns, and
    within a text, what comes before the returned message is quoted."""
    if part.get_content_maintype() == "message" or part.get_content_type() in RETURNED:
        return
    if part.get_content_maintype() == "multipart":
        payload = part.get_payload()
        if isinstance(payload, str):  # a broken boundary: the body as text
            yield _cut(payload)
        for sub in payload if isinstance(payload, list) else []:
            if isinstance(sub, Message):
                yield from _own_texts(sub)
    elif part.get_content_maintype() == "text":
        yield _cut(_decoded(part))


def _cut(text: str) -> str:
    text = text[:MAX_TEXT]
    end = ORIGINAL.search(text)
    return text[: end.start()] if end else text


def _stated_status(text: str, address: str) -> tuple[str, str]:
    """The first status code the text states, and the line that states it.

    A line that names the address wins: one bounce may list several recipients and reasons.
    """
    lines = text.splitlines()
    name = address.lower()
    for candidates in ([line for line in lines if name in line.lower()], lines):
        for line in candidates:
            for found in STATUS.finditer(line):
                # A 2.x.x only with the reply that makes it one ("250 2.1.5 Ok"), not a
                # version number.
                if found.group(1) != "2" or re.search(r"\b2\d\d[ -]2\.", line):
                    return found.group(0), " ".join(line.split())[:MAX_DIAGNOSTIC]
    return "", ""


# Amazon SES -------------------------------------------------------------------------------

SNS_FOLD = re.compile(r"!\r?\n ")
SES_ACTIONS: dict[str, Action] = {"Permanent": "failed", "Transient": "delayed"}


def _ses(message: Message, tokens: tuple[str, ...], fingerprint: str) -> Report | None:
    """An SES notification (as SNS mails it: the JSON alone, or inside an SNS envelope)."""
    body = "\n".join(_decoded(p) for p in message.walk() if p.get_content_maintype() == "text")
    body = SNS_FOLD.sub("", body)  # SNS folds long lines with "!", a line break and a space
    start = body.find("{")
    if start < 0 or ("notificationType" not in body and "eventType" not in body):
        return None
    try:
        data: Any = json.JSONDecoder().raw_decode(body[start:].strip())[0]
    except ValueError:
        return None
    if isinstance(data, dict) and isinstance(data.get("Message"), str):
        try:
            data = json.loads(data["Message"])  # the SNS envelope
        except ValueError:
            return None
    if not isinstance(data, dict):
        return None
    kind = str(data.get("notificationType") or data.get("eventType") or "")
    if kind == "Complaint":
        complaint = data.get("complaint") or {}
        people = complaint.get("complainedRecipients") or []
        complained = tuple(str(p.get("emailAddress", "")) for p in people if isinstance(p, dict))
        feedback = str(complaint.get("complaintFeedbackType") or "abuse").lower()
        return Report("complaint", tokens, fingerprint, (), "ses", feedback, complained)
    if kind == "Bounce":
        return Report("dsn", tokens, fingerprint, tuple(_ses_bounced(data)), "ses")
    if kind == "Delivery":
        return Report("unrecognised", tokens, fingerprint, (), "ses")
    return None


def _ses_bounced(data: dict[str, Any]) -> Iterator[Recipient]:
    bounce = data.get("bounce") or {}
    kind = str(bounce.get("bounceType", ""))
    sub = str(bounce.get("bounceSubType", ""))
    for person in bounce.get("bouncedRecipients") or []:
        if not isinstance(person, dict):
            continue
        diagnostic = str(person.get("diagnosticCode") or "")
        stated = STATUS.search(str(person.get("status") or "") + " " + diagnostic)
        action: Action = SES_ACTIONS.get(kind, "delayed")
        status = stated.group(0) if stated else DEFAULT_STATUS[action]
        if action == "failed" and status.startswith("4"):
            action = "delayed"
        words = f"{diagnostic} {sub}" if sub not in ("General", "Undetermined") else diagnostic
        if sub == "NoEmail":
            words += " no such user"
        yield Recipient(
            action=action,
            status=status,
            diagnostic=diagnostic[:MAX_DIAGNOSTIC],
            final_recipient=str(person.get("emailAddress", "")),
            reason=classify(status, words),
        )


# Bounds -------------------------------------------------------------------------------------


def boundary_lines(raw: bytes, stop: int) -> int:
    """How many lines start with "--" (MIME boundaries, and a few rules and signatures), up
    to `stop`: a bound on the parts a parser would make, counted without parsing."""
    found = 1 if raw.startswith(b"--") else 0
    at = 0
    while found < stop:
        at = raw.find(b"\n--", at)
        if at < 0:
            break
        found += 1
        at += 3
    return found


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
