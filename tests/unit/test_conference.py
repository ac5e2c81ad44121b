"""Conference files: the shipped one loads, bad ones name the field, a new one is a new file."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from datetime import date, datetime, time, timedelta
from pathlib import Path

import pytest

from notifier.domain.conference import Conference
from notifier.errors import ConfigError
from notifier.loading import Conferences, load_conference_file
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
