"""End to end: a template that raises a plain Python error settles every message of a batch
as failed, with the real error, and `notifier remind` returns (exit status 1)."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import CliRunner

from notifier.cli import main
from notifier.store.status import status
from tests.conftest import ROOT
from tests.e2e.conftest import Stack
from tests.events import created, person

pytestmark = pytest.mark.e2e


def test_a_template_bug_fails_the_batch_and_remind_returns(
    stack: Callable[..., Stack], tmp_path: Path
) -> None:
    templates = tmp_path / "templates"
    shutil.copytree(ROOT / "templates", templates)
    body = templates / "reminder" / "body.txt"
    # Not a Jinja error: a ZeroDivisionError raised while rendering.
    body.write_text("{{ 2575 / (c.title | length - c.title | length) }}\n", encoding="utf-8")
    s = stack(templates_dir=str(templates))
    s.publish(*(created(f"evt-{i}", f"REG-{i}", person(i)) for i in range(6)))
    s.sink.wait_for(6, timeout=60)
    env = {k: v for k, v in s.env.items() if k.startswith("NOTIFIER_")}
    done = CliRunner().invoke(
        main, ["remind", "digitaliseringstraef-2024", "--allow-past", "--timeout", "90"], env=env
    )
    assert done.exit_code == 1, done.output
    st = status(s.client, "reminder")
    assert (st.counts["failed"], st.counts["sending"], st.counts["sent"]) == (6, 0, 0)
    assert {f.reply for f in st.failures} == {"internal error: ZeroDivisionError: division by zero"}
    assert len(s.sink.received) == 6  # the confirmations only
