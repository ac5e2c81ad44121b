"""Message assembly: a Notice becomes RFC 5322 bytes, a pure function of its inputs.

Structure (the one Google Calendar sends, which Outlook, Apple Mail and Thunderbird all read
as a meeting invitation):

    multipart/mixed
      multipart/alternative
        text/plain; charset=utf-8             the complete message
        text/html; charset=utf-8              the same, lang="da"
        text/calendar; method=REQUEST|CANCEL  the iTIP invite
      application/ics                         the same invite as a file to save or open
                                              (invitation.ics; aflysning.ics for a CANCEL)

The attachment is application/ics, not text/calendar, so that clients process the iTIP part
once and offer the file only as a download.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from datetime import datetime
from email.utils import format_datetime
from functools import lru_cache

import idna

from notifier.domain.conference import Conference
from notifier.domain.notice import Notice, digest
from notifier.mail import mime
from notifier.mail.invite import build_invite
from notifier.mail.render import Rendered, Renderer, conference_facts

SENDER_NAME_STRIP = str.maketrans("", "", '@:,"<>;\\')


@dataclass(frozen=True, slots=True)
class Composed:
    """A message ready for SMTP: envelope and bytes."""

    key: str
    sender: str
    recipient: str
    data: bytes
    message_id: str
    subject: str
    smtputf8: bool


def clean_sender_name(name: str) -> str:
    """A display name large receivers accept: no @ : , " (pretix's lesson), at most 75 chars."""
    cleaned = " ".join(name.translate(SENDER_NAME_STRIP).split())
    return cleaned[:75]


def message_id(key: str, domain: str) -> str:
    """Derived from the message key, so a resend of the same message has the same Message-ID."""
    return f"<{digest('message-id', key, length=40)}@{domain}>"


def envelope_address(address: str) -> str:
    """The address with its domain in ASCII (IDNA) where that is possible."""
    local, _, domain = address.rpartition("@")
    if not domain.isascii():
        # IDNA 2008 with UTS 46 mapping (the `idna` package, as email-validator uses), not
        # Python's IDNA 2003 codec, which turns "ß" into "ss": another domain.
        with contextlib.suppress(idna.IDNAError):  # else left as is: SMTPUTF8 carries it
            domain = idna.encode(domain, uts46=True).decode("ascii")
    return f"{local}@{domain}"


def needs_smtputf8(address: str) -> bool:
    local = address.rpartition("@")[0]
    return not local.isascii()


def compose(
    notice: Notice,
    conference: Conference,
    renderer: Renderer,
    *,
    now: datetime,
) -> Composed:
    """Build the complete message for a notice. `now` is the Date and the invite's DTSTAMP.

    Raises:
        jinja2.TemplateError: a template bug (not a delivery failure).
    """
    facts = conference_facts(conference)
    rendered = renderer.render_notice(notice, facts, conference.tz)
    sender = envelope_address(str(conference.organiser.email))
    smtputf8 = needs_smtputf8(notice.recipient.email) or needs_smtputf8(sender)
    to_address = envelope_address(notice.recipient.email)
    mid = message_id(notice.key, conference.sender_domain)
    headers = [
        ("From", _from_header(conference)),
        ("To", mime.mailbox(notice.recipient.name, to_address, utf8=smtputf8)),
        ("Reply-To", envelope_address(facts.contact_email)),
        ("Subject", mime.header_text("Subject", rendered.subject)),
        ("Date", format_datetime(now)),
        ("Message-ID", mid),
        ("MIME-Version", "1.0"),
        ("Content-Language", "da"),
        ("Auto-Submitted", "auto-generated"),
        ("X-Auto-Response-Suppress", "OOF, AutoReply"),
    ]
    return Composed(
        key=notice.key,
        # The envelope carries ASCII (A-label) domains: a relay without SMTPUTF8 takes them.
        sender=sender,
        recipient=to_address,
        data=_message(notice, conference, rendered, headers, now),
        message_id=mid,
        subject=rendered.subject,
        smtputf8=smtputf8,
    )


def _message(
    notice: Notice,
    conference: Conference,
    rendered: Rendered,
    headers: mime.Headers,
    now: datetime,
) -> bytes:
    """The message's bytes: the text in two forms, and the invite if the notice has one."""
    body = [mime.text_part("plain", rendered.text), mime.text_part("html", rendered.html)]
    boundary = f"=_{digest('boundary', notice.key, length=24)}"
    if notice.invite is None:
        return mime.multipart("alternative", boundary + "a", body, headers)
    ics = build_invite(
        conference, notice.invite, notice.recipient, now=now, description=rendered.invite_text
    )
    return _with_invite(ics, notice.invite.method, body, headers, boundary)


def _with_invite(
    ics: bytes, method: str, body: list[bytes], headers: mime.Headers, boundary: str
) -> bytes:
    # "=_" cannot occur in quoted-printable or base64 bodies, so these boundaries cannot
    # clash with content; deriving them from the key keeps composition pure.
    encoded = mime.base64_lines(ics)
    calendar = mime.base64_part(f'text/calendar; method={method}; charset="UTF-8"', encoded)
    filename = "invitation.ics" if method == "REQUEST" else "aflysning.ics"
    attachment = mime.base64_part(
        f'application/ics; name="{filename}"',
        encoded,
        [("Content-Disposition", f'attachment; filename="{filename}"')],
    )
    alternative = mime.multipart("alternative", boundary + "a", [*body, calendar])
    return mime.multipart("mixed", boundary + "m", [alternative, attachment], headers)


@lru_cache(maxsize=32)
def _from_header(conference: Conference) -> str:
    return mime.mailbox(
        clean_sender_name(conference.organiser.name),
        envelope_address(str(conference.organiser.email)),
    )
