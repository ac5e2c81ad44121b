"""The declared public surface: what registration systems and integrators import.

Each module of the surface lists its part in `__all__`; the package offers the same names
lazily, so that a producer importing `notifier` or its event models does not load the
worker's dependencies."""

from __future__ import annotations

import importlib
import json
import subprocess
import sys

import pytest

import notifier
from tests.unit.support import ROOT

SURFACE = (
    "notifier.tasks",
    "notifier.domain.events",
    "notifier.settings",
    "notifier.store.status",
    "notifier.errors",
)
HEAVY = ("celery", "kombu", "redis")


@pytest.mark.parametrize("module", SURFACE)
def test_every_declared_name_exists(module: str) -> None:
    loaded = importlib.import_module(module)
    assert loaded.__all__, module
    missing = [name for name in loaded.__all__ if not hasattr(loaded, name)]
    assert missing == []


def test_the_package_offers_exactly_the_modules_names() -> None:
    declared = {
        name: module for module in SURFACE for name in importlib.import_module(module).__all__
    }
    assert sorted(notifier.__all__) == sorted(declared)
    for name, module in declared.items():
        assert getattr(notifier, name) is getattr(importlib.import_module(module), name), name


def test_a_name_outside_the_surface_is_not_offered() -> None:
    with pytest.raises(AttributeError, match="Service"):
        _ = notifier.Service


def _loaded_after(statement: str) -> list[str]:
    """The heavy top-level modules loaded by `statement` in a fresh interpreter."""
    probe = f"import json, sys\n{statement}\nprint(json.dumps(sorted(sys.modules)))"
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, cwd=ROOT, check=True
    )
    tops = {name.split(".")[0] for name in json.loads(done.stdout)}
    return sorted(tops & set(HEAVY))


@pytest.mark.parametrize(
    "statement",
    [
        "import notifier",
        "import notifier.domain.events",
        "from notifier import parse_event, InvalidEvent, UnknownRegistration, EVENT_TYPES",
    ],
)
def test_a_producer_loads_neither_celery_nor_redis(statement: str) -> None:
    assert _loaded_after(statement) == []


def test_the_probe_sees_a_heavy_import() -> None:
    # Without this the test above could pass with a probe that sees nothing.
    assert _loaded_after("from notifier import create_app") == ["celery", "kombu", "redis"]
