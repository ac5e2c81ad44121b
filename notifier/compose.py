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
import email.policy
from dataclasses import dataclass
from datetime import datetime
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import format_datetime

from notifier.conference import Conference
from notifier.invite import build_invite
from notifier.notice import Notice, Person, digest
from notifier.render import Renderer, conference_facts, notice_context

POLICY = email.policy.SMTP
UTF8_POLICY = email.policy.SMTPUTF8
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


def _address(person: Person) -> Address:
    local, _, domain = person.email.rpartition("@")
    with contextlib.suppress(UnicodeError):  # else left as is: SMTPUTF8 carries it
        domain = domain.encode("idna").decode("ascii")
    # headerregistry.Address refuses CR/LF and quotes/encodes the display name per RFC 2047.
    return Address(display_name=person.name, username=local, domain=domain)


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
    rendered = renderer.render(notice.kind.value, notice_context(notice, facts, conference.tz))
    sender = Person(conference.organiser.name, str(conference.organiser.email))
    smtputf8 = needs_smtputf8(notice.recipient.email)
    msg = EmailMessage(policy=UTF8_POLICY if smtputf8 else POLICY)
    mid = message_id(notice.key, conference.sender_domain)
    msg["From"] = Address(clean_sender_name(sender.name), addr_spec=sender.email)
    to = _address(notice.recipient)
    msg["To"] = to
    msg["Reply-To"] = facts.contact_email
    msg["Subject"] = rendered.subject
    msg["Date"] = format_datetime(now)
    msg["Message-ID"] = mid
    msg["Auto-Submitted"] = "auto-generated"
    msg["X-Auto-Response-Suppress"] = "OOF, AutoReply"
    msg.set_content(rendered.text, subtype="plain", charset="utf-8", cte="quoted-printable")
    msg.add_alternative(rendered.html, subtype="html", charset="utf-8", cte="quoted-printable")
    if notice.invite is not None:
        _attach_invite(msg, notice, conference, rendered.invite_text, now)
    msg["Content-Language"] = "da"
    _fix_boundaries(msg, notice.key)
    return Composed(
        key=notice.key,
        sender=sender.email,
        # The envelope carries the ASCII (punycode) domain unless SMTPUTF8 is needed anyway.
        recipient=notice.recipient.email if smtputf8 else to.addr_spec,
        data=msg.as_bytes(),
        message_id=mid,
        subject=rendered.subject,
        smtputf8=smtputf8,
    )


def _fix_boundaries(msg: EmailMessage, key: str) -> None:
    # Derived boundaries keep composition a pure function (golden files, identical resends).
    # "=_" cannot occur in quoted-printable or base64 bodies, so it cannot clash with content.
    for n, part in enumerate(msg.walk()):
        if part.is_multipart():
            part.set_boundary(f"=_{digest('boundary', key, str(n), length=24)}")


def _attach_invite(
    msg: EmailMessage, notice: Notice, conference: Conference, text: str, now: datetime
) -> None:
    assert notice.invite is not None
    ics = build_invite(conference, notice.invite, notice.recipient, now=now, description=text)
    method = notice.invite.method
    msg.add_alternative(
        ics, maintype="text", subtype="calendar", params={"method": method, "charset": "UTF-8"}
    )
    msg.make_mixed()
    msg.add_attachment(
        ics,
        maintype="application",
        subtype="ics",
        filename="invitation.ics" if method == "REQUEST" else "aflysning.ics",
    )
