"""The pretix-style baseline: compose each mail from scratch and send it over a new connection.

Per mail: Jinja2 renders subject, text and HTML; an icalendar Calendar is built fresh,
including a VTIMEZONE from `Timezone.from_tzid` (the conference copy has start and end
times, so the invite needs one); the MIME message is built with the EmailMessage API; and
smtplib opens a connection, sends and quits. Templates are compiled once, as any Django or
Jinja2 application caches them, and the EHLO name is looked up once, as Django does.
"""

from __future__ import annotations

import email.policy
import smtplib
import time
import uuid
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from datetime import time as clock
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid
from typing import Any

import jinja2
from icalendar import Calendar, Event, Timezone, vCalAddress, vText

from bench.messages import attendee, shipped_conference
from bench.stats import Throughput
from notifier.domain.conference import Conference
from notifier.domain.notice import Kind
from notifier.mail import danish
from notifier.mail.render import conference_facts, notice_context
from notifier.mail.samples import sample_notice
from notifier.settings import SHIPPED_TEMPLATES

LOCAL_NAME = "bench.localhost"


@dataclass(frozen=True, slots=True)
class Mail:
    sender: str
    recipient: str
    data: bytes


def timed_conference() -> Conference:
    """The shipped conference with times, so that its invite carries a VTIMEZONE."""
    conf = shipped_conference()
    return conf.model_copy(update={"start_time": clock(9, 0), "end_time": clock(16, 0)})


class NaiveComposer:
    def __init__(self) -> None:
        self.conf = timed_conference()
        self.env = jinja2.Environment(
            loader=jinja2.FileSystemLoader(SHIPPED_TEMPLATES),
            undefined=jinja2.StrictUndefined,
            autoescape=jinja2.select_autoescape(["html"], default_for_string=False),
            trim_blocks=True,
            lstrip_blocks=True,
        )
        self.env.filters["capitalise"] = danish.capitalise
        self.notice = sample_notice(Kind.REMINDER, self.conf)

    def _render(self, name: str, context: dict[str, Any]) -> str:
        return self.env.get_template(name).render(context)

    def _calendar(self, email: str, name: str, description: str) -> bytes:
        conf = self.conf
        cal = Calendar()
        cal.add("prodid", "-//bench//pretix-style//DA")
        cal.add("version", "2.0")
        cal.add("method", "REQUEST")
        cal.add_component(Timezone.from_tzid(conf.timezone))  # rebuilt for every mail
        event = Event()
        event.add("uid", f"{uuid.uuid4()}@bench.localhost")
        event.add("dtstamp", datetime.now(UTC))
        event.add("dtstart", conf.starts_at)
        event.add("dtend", conf.ends_at)
        event.add("summary", conf.title)
        event.add("location", conf.venue.location)
        event.add("description", description)
        organizer = vCalAddress(f"mailto:{conf.organiser.email}")
        organizer.params["CN"] = vText(conf.organiser.name)
        event.add("organizer", organizer)
        att = vCalAddress(f"mailto:{email}")
        att.params["CN"] = vText(name)
        event.add("attendee", att)
        cal.add_component(event)
        return bytes(cal.to_ical())

    def compose(self, i: int, tag: str) -> Mail:
        person = attendee(i, tag)
        notice = replace(self.notice, recipient=person)
        context = notice_context(notice, conference_facts(self.conf), self.conf.tz)
        ics = self._calendar(person.email, person.name, self._render("_invite.txt", context))
        msg = EmailMessage(policy=email.policy.SMTP)  # CRLF line ends, as Django sends
        msg["From"] = f"{self.conf.organiser.name} <{self.conf.organiser.email}>"
        msg["To"] = f"{person.name} <{person.email}>"
        msg["Subject"] = " ".join(self._render("reminder/subject.txt", context).split())
        msg["Date"] = format_datetime(datetime.now(UTC))
        msg["Message-ID"] = make_msgid(domain="bench.localhost")
        msg.set_content(self._render("reminder/body.txt", context))
        msg.add_alternative(self._render("reminder/body.html", context), subtype="html")
        msg.add_attachment(ics, maintype="text", subtype="calendar", filename="invite.ics")
        return Mail(str(self.conf.organiser.email), person.email, msg.as_bytes())


def send_one(mail: Mail, port: int, host: str = "127.0.0.1") -> bool:
    with smtplib.SMTP(host, port, local_hostname=LOCAL_NAME, timeout=30) as smtp:
        refused = smtp.sendmail(mail.sender, [mail.recipient], mail.data)
    return not refused


def run(n: int, port: int, tag: str) -> Throughput:
    """Compose and send n mails one after another; accepted replies per second."""
    composer = NaiveComposer()
    composer.compose(0, "warm-up")  # imports and template compilation are not per-mail costs
    started = time.perf_counter()
    ok = sum(send_one(composer.compose(i, tag), port) for i in range(n))
    return Throughput(ok, time.perf_counter() - started)
