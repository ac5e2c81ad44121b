"""Danish dates, times and amounts (CLDR da_DK through Babel), from timezone-aware values only.

Babel treats naive datetimes as UTC, so every function here refuses them.
"""

from __future__ import annotations

from datetime import date, datetime

from babel.dates import format_date, format_datetime
from babel.numbers import format_currency, format_decimal

LOCALE = "da_DK"
NBSP = "\u00a0"


def _aware(value: datetime) -> datetime:
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError("Danish formatting needs a timezone-aware datetime")
    return value


def long_date(value: date) -> str:
    """'mandag den 22. april 2024'."""
    if isinstance(value, datetime):
        value = _aware(value).date()
    return format_date(value, "full", locale=LOCALE)


def clock(value: datetime) -> str:
    """'kl. 9.00' (Dansk Sprognævn: period between hours and minutes, no leading zero)."""
    return f"kl.{NBSP}" + format_datetime(_aware(value), "H.mm", tzinfo=value.tzinfo, locale=LOCALE)


def clock_range(start: datetime, end: datetime) -> str:
    """'kl. 9.00–16.00'."""
    end_text = format_datetime(_aware(end), "H.mm", tzinfo=end.tzinfo, locale=LOCALE)
    return f"{clock(start)}–{end_text}"


def amount(value: int, currency: str = "DKK") -> str:
    """'2.575 kr.' with a no-break space; no øre for whole amounts."""
    return format_currency(
        value, currency, format=f"#,##0{NBSP}¤", currency_digits=False, locale=LOCALE
    )


def number(value: int) -> str:
    """'2.575'."""
    return format_decimal(value, locale=LOCALE)


def capitalise(text: str) -> str:
    """First letter upper case, for a date at the start of a sentence."""
    return text[:1].upper() + text[1:]
