"""Conference files: the shipped one loads, bad ones name the field, a new one is a new file,
and an edited one takes effect in a running process."""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Callable
from datetime import date, datetime, time, timedelta
from pathlib import Path

import pytest

from notifier.domain.conference import Conference
from notifier.domain.schedule import due_reminders
from notifier.errors import ConfigError
from notifier.loading import CHECK_SECONDS, Conferences, load_conference_file
from tests.unit.support import SLUG

VALID = """\
title = "Kommunaldagen 2025"
date = 2025-05-13
start_time = 09:30:00
end_time = 15:45:00
timezone = "Europe/Copenhagen"
terms = "Tilmeldingen er bindende."
contact_email = "arrangementsinfo@kl.dk"
controller = "KL, Weidekampsgade 10, 2300 København S, CVR 62547413"
privacy_policy_url = "https://www.kl.dk/om-kl/privatlivspolitik"

[organiser]
name = "KL"
email = "arrangementsinfo@kl.dk"

[venue]
name = "Tivoli Congress Center"
street = "Arni Magnussons Gade 2"
postcode = "1577"
city = "København V"

[price]
amount = 1900
"""


def _write(folder: Path, name: str, text: str) -> Path:
    path = folder / f"{name}.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_shipped_conference_loads(conference: Conference) -> None:
    assert conference.slug == SLUG
    assert conference.title == "Kommunernes Digitaliseringstræf '24"
    assert conference.date == date(2024, 4, 22)
    assert conference.all_day is True
    assert conference.venue.location == "Scandic Falkoner, Falkoner Allé 9, 2000 Frederiksberg"
    assert conference.price.amount == 2575
    assert conference.price.currency == "DKK"
    assert conference.organiser.email == "arrangementsinfo@kl.dk"


def test_all_day_conference_spans_the_local_day(conference: Conference) -> None:
    assert conference.starts_at.isoformat() == "2024-04-22T00:00:00+02:00"
    assert conference.ends_at - conference.starts_at == timedelta(days=1)


def test_has_passed_at_the_end_of_the_day(conference: Conference) -> None:
    assert not conference.has_passed(datetime.fromisoformat("2024-04-22T23:59:00+02:00"))
    assert conference.has_passed(datetime.fromisoformat("2024-04-23T00:00:00+02:00"))


BAD_FILES = [
    (
        "missing title",
        lambda t: t.replace('title = "Kommunaldagen 2025"\n', ""),
        "title: Field required",
    ),
    ("bad date", lambda t: t.replace("date = 2025-05-13", 'date = "13/05/2025"'), "date: "),
    (
        "only start_time",
        lambda t: t.replace("end_time = 15:45:00\n", ""),
        "start_time and end_time must be given together",
    ),
    (
        "unknown timezone",
        lambda t: t.replace('"Europe/Copenhagen"', '"Europe/Kobenhavn"'),
        "timezone: unknown time zone",
    ),
    ("invalid TOML", lambda t: t.replace("[price]", "[price"), "not valid TOML"),
    (
        "end before start",
        lambda t: t.replace("15:45:00", "08:00:00"),
        "end_time must be after start_time",
    ),
    ("bad postcode", lambda t: t.replace('"1577"', '"DK-1577"'), "venue.postcode: "),
    ("unknown field", lambda t: t + 'dresscode = "casual"\n', "dresscode: Extra inputs"),
]


@pytest.mark.parametrize(
    ("edit", "named"),
    [pytest.param(edit, named, id=name) for name, edit, named in BAD_FILES],
)
def test_bad_file_names_the_field(tmp_path: Path, edit: Callable[[str], str], named: str) -> None:
    path = _write(tmp_path, "kommunaldag-2025", edit(VALID))
    with pytest.raises(ConfigError) as caught:
        load_conference_file(path)
    source, _, problem = str(caught.value).partition(": ")
    assert source == str(path)
    assert named in problem


def test_slug_must_equal_the_file_name(tmp_path: Path) -> None:
    path = _write(tmp_path, "kommunaldag-2025", 'slug = "kommunaldag-2026"\n' + VALID)
    with pytest.raises(ConfigError, match="slug"):
        load_conference_file(path)


def test_second_conference_is_a_second_file(tmp_path: Path, conferences_dir: Path) -> None:
    shutil.copy(conferences_dir / f"{SLUG}.toml", tmp_path)
    _write(tmp_path, "kommunaldag-2025", VALID)
    confs = Conferences(tmp_path)
    assert confs.slugs() == [SLUG, "kommunaldag-2025"]
    assert "kommunaldag-2025" in confs
    second = confs.get("kommunaldag-2025")
    assert second.slug == "kommunaldag-2025"
    assert second.all_day is False
    assert (second.start_time, second.end_time) == (time(9, 30), time(15, 45))
    assert second.starts_at.isoformat() == "2025-05-13T09:30:00+02:00"
    assert second.ends_at.isoformat() == "2025-05-13T15:45:00+02:00"
    assert confs.get(SLUG).title == "Kommunernes Digitaliseringstræf '24"


def test_unknown_slug_is_a_config_error(tmp_path: Path) -> None:
    confs = Conferences(tmp_path)
    assert "nope-2030" not in confs
    with pytest.raises(ConfigError, match="nope-2030"):
        confs.get("nope-2030")


def test_a_changed_copy_has_its_own_hash_and_time_zone(conference: Conference) -> None:
    _ = (hash(conference), conference.tz)  # fill the caches first
    other = conference.model_copy(update={"title": "Andet træf", "timezone": "UTC"})
    same = conference.model_copy()
    assert hash(same) == hash(conference) and same == conference
    assert other != conference and hash(other) != hash(conference)
    assert str(other.tz) == "UTC"


# --- A file edited while workers run takes effect (issue 13) ---------------------------------


class Ticks:
    """A monotonic clock the test moves by hand: when Conferences looks at its files again."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


SECOND = "kommunaldag-2025"


@pytest.fixture
def ticks() -> Ticks:
    return Ticks()


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    _write(tmp_path, SECOND, VALID)
    return tmp_path


def test_an_edited_file_takes_effect_once_looked_at_again(folder: Path, ticks: Ticks) -> None:
    confs = Conferences(folder, check_seconds=1.0, clock=ticks)
    before = confs.get(SECOND)
    _write(folder, SECOND, VALID.replace("Tivoli Congress Center", "Bella Center"))
    ticks.now += 0.5  # within the check interval: the file is not touched
    assert confs.get(SECOND) is before
    ticks.now += 0.5
    after = confs.get(SECOND)
    assert after.venue.name == "Bella Center"
    assert before.venue.name == "Tivoli Congress Center"  # the old object is unchanged
    assert hash(after) != hash(before)
    assert confs.get(SECOND) is after  # read once, then kept


def test_an_edit_the_timestamps_cannot_show_is_seen(folder: Path, ticks: Ticks) -> None:
    """Same size, same mtime (an edit within the file system's timestamp resolution)."""
    path = folder / f"{SECOND}.toml"
    confs = Conferences(folder, clock=ticks)
    assert confs.get(SECOND).price.amount == 1900
    stamp = path.stat()
    _write(folder, SECOND, VALID.replace("amount = 1900", "amount = 2100"))
    os.utime(path, ns=(stamp.st_atime_ns, stamp.st_mtime_ns))
    assert path.stat().st_size == stamp.st_size
    ticks.now += CHECK_SECONDS
    assert confs.get(SECOND).price.amount == 2100


def test_a_broken_edit_keeps_the_last_good_version_and_names_the_field(
    folder: Path, ticks: Ticks, caplog: pytest.LogCaptureFixture
) -> None:
    path = folder / f"{SECOND}.toml"
    confs = Conferences(folder, clock=ticks)
    good = confs.get(SECOND)
    _write(folder, SECOND, VALID.replace('"1577"', '"DK-1577"'))
    with caplog.at_level(logging.INFO, logger="notifier.loading"):
        for _ in range(3):  # looked at three times, reported once
            ticks.now += CHECK_SECONDS
            assert confs.get(SECOND) is good
    [record] = caplog.records
    assert record.levelno == logging.ERROR
    assert str(path) in record.getMessage()
    assert "venue.postcode" in record.getMessage()
    assert "DK-1577" not in record.getMessage()  # the reason, not the value
    # Fixed: the new version is used
    _write(folder, SECOND, VALID.replace('"1577"', '"1578"'))
    ticks.now += CHECK_SECONDS
    assert confs.get(SECOND).venue.postcode == "1578"


def test_a_file_that_never_validated_raises(folder: Path, ticks: Ticks) -> None:
    _write(folder, "broken-2026", VALID.replace("amount = 1900", 'amount = "mange"'))
    confs = Conferences(folder, clock=ticks)
    for _ in range(2):
        with pytest.raises(ConfigError, match=r"price\.amount"):
            confs.get("broken-2026")
        ticks.now += CHECK_SECONDS
    _write(folder, "broken-2026", VALID)
    ticks.now += CHECK_SECONDS
    assert confs.get("broken-2026").price.amount == 1900


def test_added_and_removed_files_are_seen(
    folder: Path, ticks: Ticks, caplog: pytest.LogCaptureFixture
) -> None:
    confs = Conferences(folder, clock=ticks)
    kept = confs.get(SECOND)
    _write(folder, "kommunaldag-2026", VALID.replace("2025-05-13", "2026-05-12"))
    assert confs.slugs() == [SECOND, "kommunaldag-2026"]
    assert confs.get("kommunaldag-2026").date == date(2026, 5, 12)
    (folder / f"{SECOND}.toml").unlink()
    assert confs.slugs() == ["kommunaldag-2026"]
    assert SECOND not in confs  # new events for it are refused
    # A message already accepted for it can still be composed, and the removal is reported
    ticks.now += CHECK_SECONDS
    with caplog.at_level(logging.ERROR, logger="notifier.loading"):
        assert confs.get(SECOND) is kept
    assert [r.getMessage() for r in caplog.records] == [
        f"conference {SECOND!r}: no file {folder / f'{SECOND}.toml'}; "
        "keeping the version read before"
    ]
    # A process that never read it before refuses it
    with pytest.raises(ConfigError, match="no file"):
        Conferences(folder).get(SECOND)


def test_an_added_reminder_rule_falls_due(folder: Path, ticks: Ticks) -> None:
    confs = Conferences(folder, clock=ticks)
    at = datetime.fromisoformat("2025-05-10T09:00:00+02:00")  # three days before
    assert due_reminders([confs.get(s) for s in confs.slugs()], at) == []
    rule = '\n[[reminders]]\nid = "3-days"\ndays_before = 3\nat = 09:00:00\n'
    _write(folder, SECOND, VALID + rule)
    ticks.now += CHECK_SECONDS
    [due] = due_reminders([confs.get(s) for s in confs.slugs()], at)
    assert (due.conference, due.rule, due.due_at) == (SECOND, "3-days", at)


def test_membership_is_looked_up_once_per_interval_and_misses_every_time(
    folder: Path, ticks: Ticks
) -> None:
    confs = Conferences(folder, check_seconds=1.0, clock=ticks)
    assert SECOND in confs
    (folder / f"{SECOND}.toml").unlink()
    ticks.now += 0.5
    assert SECOND in confs  # within the interval: not looked for again
    ticks.now += 0.5
    assert SECOND not in confs
    assert "nope" not in confs and "nope" not in confs._present  # misses are not kept
    _write(folder, SECOND, VALID)
    assert SECOND in confs  # a miss is looked for every time
    assert 42 not in confs
