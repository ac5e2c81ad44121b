"""Shared fixtures of the unit tests: the shipped conference, the templates, golden files.

Golden files live in tests/unit/golden/. Run with UPDATE_GOLDEN=1 to rewrite them, then read
the diff before committing it.
"""

from __future__ import annotations

import os
from datetime import time
from pathlib import Path

import pytest

from notifier.conference import Conference, Conferences
from notifier.render import Renderer

ROOT = Path(__file__).resolve().parents[2]
CONFERENCES_DIR = ROOT / "conferences"
TEMPLATES_DIR = ROOT / "templates"
GOLDEN_DIR = Path(__file__).resolve().parent / "golden"
SLUG = "digitaliseringstraef-2024"


class Golden:
    """Compares output with a stored file, or rewrites the file when `update` is set."""

    def __init__(self, folder: Path, *, update: bool) -> None:
        self.folder = folder
        self.update = update

    def check(self, name: str, actual: str | bytes) -> None:
        path = self.folder / name
        data = actual.encode("utf-8") if isinstance(actual, str) else actual
        if self.update:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
            return
        assert path.is_file(), f"no golden file {path}: run the tests with UPDATE_GOLDEN=1"
        expected = path.read_bytes()
        if isinstance(actual, str):  # compare as text for a readable diff
            assert actual == expected.decode("utf-8"), f"differs from {path}"
        else:
            assert actual == expected, f"differs from {path}"


@pytest.fixture(scope="session")
def golden() -> Golden:
    return Golden(GOLDEN_DIR, update=os.environ.get("UPDATE_GOLDEN") == "1")


@pytest.fixture(scope="session")
def conferences_dir() -> Path:
    """The shipped conferences/ folder."""
    return CONFERENCES_DIR


@pytest.fixture(scope="session")
def templates_dir() -> Path:
    """The shipped templates/ folder."""
    return TEMPLATES_DIR


@pytest.fixture(scope="session")
def conference() -> Conference:
    """The shipped conference: all day, no times announced."""
    return Conferences(CONFERENCES_DIR).get(SLUG)


@pytest.fixture(scope="session")
def timed_conference(conference: Conference) -> Conference:
    """The shipped conference with times announced (9.00–16.00)."""
    return conference.model_copy(update={"start_time": time(9, 0), "end_time": time(16, 0)})


@pytest.fixture(scope="session")
def renderer() -> Renderer:
    return Renderer(TEMPLATES_DIR)
