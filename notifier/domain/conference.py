"""Conference configuration: the model of one conference and its validation.

Pure: the TOML text comes in as a string. Reading the files of a folder is done at the edge
(notifier.loading), so the domain never touches the file system.
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from datetime import date, datetime, time, timedelta
from functools import cached_property
from typing import Annotated, Any, Self
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    BaseModel,
    ConfigDict,
    EmailStr,
    Field,
    HttpUrl,
    StringConstraints,
    ValidationError,
    field_validator,
    model_validator,
)

from notifier.domain.facts import InviteFacts
from notifier.errors import ConfigError

SLUG_PATTERN = r"^[a-z0-9][a-z0-9-]{0,62}$"
Text = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=500)]


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Organiser(_Model):
    name: Text
    email: EmailStr


class Venue(_Model):
    name: Text
    street: Text
    postcode: Annotated[str, StringConstraints(pattern=r"^\d{4}$")]
    city: Text
    transit: Text | None = None

    @property
    def address(self) -> str:
        return f"{self.street}, {self.postcode} {self.city}"

    @property
    def location(self) -> str:
        return f"{self.name}, {self.address}"


class Price(_Model):
    amount: int = Field(ge=0)
    currency: Annotated[str, StringConstraints(pattern=r"^[A-Z]{3}$")] = "DKK"
    vat_note: Text = "ekskl. moms"


class Privacy(_Model):
    """What the privacy notice to an attendee whose data came from a colleague (GDPR art. 14)
    states beyond the controller's name and policy link. Each item is optional: one left out
    is not made up, the notice points to the privacy policy for it instead."""

    controller_contact: Text | None = None  # how to reach the controller about the data
    dpo_contact: Text | None = None  # the data-protection officer (databeskyttelsesrådgiver)
    purposes: Text | None = None  # why the data is processed
    legal_basis: Text | None = None  # under which GDPR article (and law)
    recipients: Text | None = None  # who else receives the data
    retention: Text | None = None  # how long the controller keeps it


class ReminderRule(_Model):
    """A scheduled reminder: `days_before` the conference date, at `at` local time."""

    id: Annotated[str, StringConstraints(pattern=r"^[a-z0-9][a-z0-9-]{0,40}$")]
    days_before: int = Field(ge=0, le=365)
    at: time = time(9, 0)


class SendWindow(_Model):
    """When reminder and update batches may be sent: between `start` and `end` local time (the
    conference's time zone), and, with `skip_holidays`, not on Danish public holidays. A batch
    outside it pauses and resumes by itself when it opens. Confirmations, substitution and
    cancellation notices are sent at once, unless `notices` says they wait too."""

    start: time = time(7, 0)
    end: time = time(21, 0)
    skip_holidays: bool = False
    notices: bool = False

    @model_validator(mode="after")
    def _ordered(self) -> SendWindow:
        if self.end <= self.start:
            raise ValueError("send_window: end must be after start")
        return self


class Conference(_Model):
    """Everything the mails say about one conference."""

    slug: Annotated[str, StringConstraints(pattern=SLUG_PATTERN)]
    title: Text
    organiser: Organiser
    date: date
    start_time: time | None = None
    end_time: time | None = None
    timezone: str = "Europe/Copenhagen"
    venue: Venue
    price: Price
    terms: Text
    what_to_bring: Text | None = None
    audience: Text | None = None
    contact_email: EmailStr
    contact_phone: Text | None = None
    privacy_policy_url: HttpUrl
    controller: Text
    privacy: Privacy = Privacy()
    # How long notifier itself keeps the conference's personal data after it ended (the
    # purge), not the controller's retention, which `privacy.retention` states.
    retention_days: int = Field(30, ge=0, le=3650)
    reminders: tuple[ReminderRule, ...] = ()
    send_window: SendWindow | None = None
    # The conference is called off: the next update cancels every attendee's invite, and
    # no confirmation or reminder is sent any more.
    cancelled: bool = False
    cancellation_note: (
        Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=2000)]
        | None
    ) = None

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {value!r}") from None
        return value

    @model_validator(mode="after")
    def _times_pair(self) -> Conference:
        if (self.start_time is None) != (self.end_time is None):
            raise ValueError("start_time and end_time must be given together (or neither)")
        if self.start_time and self.end_time and self.end_time <= self.start_time:
            raise ValueError("end_time must be after start_time")
        return self

    @cached_property
    def tz(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    def __hash__(self) -> int:
        # Every mail looks its conference up in a few caches; pydantic would hash all the
        # fields (and the nested models') each time. The model is frozen: hash once.
        return self.field_hash

    def __eq__(self, other: object) -> bool:
        # The caches find the very same object almost always; pydantic compares every field.
        return self is other or super().__eq__(other)

    @cached_property
    def field_hash(self) -> int:
        return hash(tuple(getattr(self, name) for name in type(self).model_fields))

    def model_copy(self, *, update: Mapping[str, Any] | None = None, deep: bool = False) -> Self:
        copied = super().model_copy(update=update, deep=deep)
        for cached in ("tz", "field_hash", "invite_facts"):  # pydantic copies them with the fields
            copied.__dict__.pop(cached, None)
        return copied

    @cached_property
    def invite_facts(self) -> InviteFacts:
        """What an invite for this conference states (compared to what one carried before)."""
        return InviteFacts(
            summary=self.title,
            date=self.date,
            start=self.start_time,
            end=self.end_time,
            timezone=self.timezone,
            venue=self.venue.name,
            address=self.venue.address,
            cancelled=self.cancelled,
        )

    @property
    def all_day(self) -> bool:
        return self.start_time is None

    @property
    def starts_at(self) -> datetime:
        """Start as an aware datetime (midnight local time for an all-day conference)."""
        return datetime.combine(self.date, self.start_time or time(0), tzinfo=self.tz)

    @property
    def ends_at(self) -> datetime:
        if self.end_time is None:
            return datetime.combine(self.date + timedelta(days=1), time(0), tzinfo=self.tz)
        return datetime.combine(self.date, self.end_time, tzinfo=self.tz)

    @property
    def sender_domain(self) -> str:
        return self.organiser.email.rpartition("@")[2]

    def has_passed(self, now: datetime) -> bool:
        return now >= self.ends_at


def parse_conference(data: dict[str, object], *, source: str) -> Conference:
    """Validate a conference mapping.

    Raises:
        ConfigError: naming the source, each offending field and the reason.
    """
    try:
        return Conference.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or 'conference'}: "
            f"{err['msg'].removeprefix('Value error, ')}"
            for err in exc.errors()
        )
        raise ConfigError(f"{source}: {problems}") from None


def parse_conference_toml(text: str, *, slug: str, source: str) -> Conference:
    """Validate one conference's TOML text; the slug defaults to `slug` and must equal it.

    Raises:
        ConfigError: naming the source, with the TOML error or each offending field.
    """
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{source}: not valid TOML: {exc}") from None
    data.setdefault("slug", slug)
    if data["slug"] != slug:
        raise ConfigError(f"{source}: slug: must equal the file name {slug!r}")
    return parse_conference(data, source=source)
