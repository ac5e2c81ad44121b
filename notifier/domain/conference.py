"""Conference configuration: one TOML file per conference, validated when loaded."""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from datetime import date, datetime, time, timedelta
from functools import cached_property
from pathlib import Path
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


class ReminderRule(_Model):
    """A scheduled reminder: `days_before` the conference date, at `at` local time."""

    id: Annotated[str, StringConstraints(pattern=r"^[a-z0-9][a-z0-9-]{0,40}$")]
    days_before: int = Field(ge=0, le=365)
    at: time = time(9, 0)


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
    retention_days: int = Field(30, ge=0, le=3650)
    reminders: tuple[ReminderRule, ...] = ()

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

    @cached_property
    def field_hash(self) -> int:
        return hash(tuple(getattr(self, name) for name in type(self).model_fields))

    def model_copy(self, *, update: Mapping[str, Any] | None = None, deep: bool = False) -> Self:
        copied = super().model_copy(update=update, deep=deep)
        for cached in ("tz", "field_hash"):  # pydantic copies them with the fields
            copied.__dict__.pop(cached, None)
        return copied

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


def load_conference_file(path: Path) -> Conference:
    """Read and validate one conference TOML file; the slug defaults to the file name."""
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    data.setdefault("slug", path.stem)
    if data["slug"] != path.stem:
        raise ConfigError(f"{path}: slug: must equal the file name {path.stem!r}")
    return parse_conference(data, source=str(path))


class Conferences:
    """The conference files of a folder, loaded on first use and kept."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self._cache: dict[str, Conference] = {}

    def slugs(self) -> list[str]:
        return sorted(p.stem for p in self.folder.glob("*.toml"))

    def __contains__(self, slug: object) -> bool:
        return isinstance(slug, str) and (self.folder / f"{slug}.toml").is_file()

    def get(self, slug: str) -> Conference:
        """The conference of that slug.

        Raises:
            ConfigError: no such file, or the file is invalid.
        """
        if slug not in self._cache:
            path = self.folder / f"{slug}.toml"
            if not path.is_file():
                raise ConfigError(f"conference {slug!r}: no file {path}")
            self._cache[slug] = load_conference_file(path)
        return self._cache[slug]
