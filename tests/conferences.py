"""Conference files for tests: a copy of the shipped one in a folder of the test's own, with
announced changes written into it as an organiser would."""

from __future__ import annotations

import re
import shutil
from datetime import date
from pathlib import Path

from tests.conftest import ROOT
from tests.events import CONFERENCE

DATE_LINE = re.compile(r"^date = (\S+)\n", re.MULTILINE)


def conference_copy(folder: Path) -> Path:
    """The shipped conference file, copied into `folder` (created); returns the copy."""
    folder.mkdir(parents=True, exist_ok=True)
    return Path(shutil.copy(ROOT / "conferences" / f"{CONFERENCE}.toml", folder))


def announce(
    path: Path, *, times: bool = False, cancelled: bool = False, on: date | None = None
) -> None:
    """Edit the file: set start and end times (9.00-16.00), call the conference off, or
    move it to another date. Top-level keys go right after `date`, before any table."""
    content = path.read_text(encoding="utf-8")
    found = DATE_LINE.search(content)
    assert found, f"{path} has no top-level date line to edit after"
    lines = f"date = {on.isoformat() if on else found.group(1)}\n"
    if times:
        lines += "start_time = 09:00:00\nend_time = 16:00:00\n"
    if cancelled:
        lines += "cancelled = true\n"
    path.write_text(DATE_LINE.sub(lambda _: lines, content, count=1), encoding="utf-8")
