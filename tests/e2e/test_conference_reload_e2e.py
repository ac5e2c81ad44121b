"""End to end: a conference file edited while a worker runs takes effect without a restart
(issue 13). The worker has one pool process, so the process that composed the first
confirmation with the old file is the one that must read the edit."""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from email import message_from_bytes, policy
from pathlib import Path

import pytest

from notifier.loading import CHECK_SECONDS
from tests.conftest import ROOT, wait_for
from tests.e2e.conftest import Stack
from tests.events import CONFERENCE, JENS, created

pytestmark = pytest.mark.e2e

OLD = "Hvor:    Scandic Falkoner, Falkoner Allé 9, 2000 Frederiksberg"
NEW = "Hvor:    Bella Center, Falkoner Allé 9, 2000 Frederiksberg"


def _text(data: bytes) -> str:
    body = message_from_bytes(data, policy=policy.default).get_body(("plain",))
    assert body is not None
    return str(body.get_content())


def test_an_edited_venue_reaches_the_next_confirmation(
    stack: Callable[..., Stack], tmp_path: Path
) -> None:
    folder = tmp_path / "conferences"
    folder.mkdir()
    conf_file = Path(shutil.copy(ROOT / "conferences" / f"{CONFERENCE}.toml", folder))
    s = stack(start=False, conferences_dir=str(folder))
    s.worker.concurrency = 1
    s.worker.start()
    assert s.worker.proc is not None
    pid = s.worker.proc.pid
    # Given a confirmation composed with the file as shipped
    s.publish(created("evt-reload-1", "REG-2001"))
    [first] = s.sink.wait_for(1)
    assert OLD in _text(first.data)
    # When the venue is renamed in the file while the worker runs
    text = conf_file.read_text(encoding="utf-8")
    conf_file.write_text(
        text.replace('name = "Scandic Falkoner"', 'name = "Bella Center"'), encoding="utf-8"
    )
    # A worker reads a file again at most once per CHECK_SECONDS: an edit takes effect for
    # what is published once that time has passed since the edit.
    edited = time.monotonic()
    wait_for(lambda: time.monotonic() - edited >= CHECK_SECONDS, what="the check interval")
    s.publish(created("evt-reload-2", "REG-2002", JENS))
    # Then the second confirmation names the new venue, from the same worker
    second = s.sink.wait_for(2)[1]
    assert second.recipients == (JENS["email"],)
    assert NEW in _text(second.data)
    assert OLD not in _text(second.data)
    assert s.worker.proc is not None and s.worker.proc.pid == pid
    log = s.worker.text()
    assert log.count(" ready.") == 1  # never restarted
    assert f"conference file {conf_file} changed: read again" in log
