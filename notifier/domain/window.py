"""When a conference's send window is open. Pure functions (Danish public holidays from the
`holidays` package's tables, no I/O)."""

from __future__ import annotations

from datetime import date, datetime, timedelta
from functools import cache

import holidays

from notifier.domain.conference import Conference, SendWindow
from notifier.domain.notice import SEAT_KINDS, Notice

LOOK_AHEAD_DAYS = 31  # a window that does not open within a month is a configuration error


def held_until(notice: Notice, conf: Conference, now: datetime) -> datetime | None:
    """When the notice may go, if it must wait for the conference's send window; None when
    it may go now (no window, the window is open, or the notice is not held by one)."""
    window = conf.send_window
    if window is None or (notice.kind not in SEAT_KINDS and not window.notices):
        return None
    return next_opening(window, now, conf)


def next_opening(window: SendWindow, now: datetime, conf: Conference) -> datetime | None:
    """None when `now` is inside the window, else when it opens next."""
    local = now.astimezone(conf.tz)
    for ahead in range(LOOK_AHEAD_DAYS):
        day = local.date() + timedelta(days=ahead)
        if window.skip_holidays and _holiday(day):
            continue
        opens = datetime.combine(day, window.start, conf.tz)
        closes = datetime.combine(day, window.end, conf.tz)
        if opens <= local < closes:
            return None
        if local < opens:
            return opens
    return None  # never open: held back by nothing rather than forever


@cache
def _danish(year: int) -> holidays.HolidayBase:
    return holidays.country_holidays("DK", years=year)


def _holiday(day: date) -> bool:
    return day in _danish(day.year)
