"""Fixtures of the unit tests: the shipped conference and templates, and golden files."""

from __future__ import annotations

import os
from datetime import time
from pathlib import Path

import pytest

from notifier.domain.conference import Conference
from notifier.loading import Conferences, template_loader
from notifier.mail.render import Renderer
from tests.conftest import CI
from tests.unit.support import CONFERENCES_DIR, GOLDEN_DIR, SLUG, TEMPLATES_DIR, Golden


@pytest.fixture(scope="session")
def golden() -> Golden:
    """Golden files in tests/unit/golden/; UPDATE_GOLDEN=1 rewrites them, never under CI
    (a run that rewrote its own expectations would pass whatever the mails say)."""
    update = os.environ.get("UPDATE_GOLDEN") == "1"
    if update and CI:
        pytest.fail("UPDATE_GOLDEN=1 is refused under CI=true: golden files are reviewed by hand")
    return Golden(GOLDEN_DIR, update=update)


@pytest.fixture(scope="session")
def conferences_dir() -> Path:
    """The shipped conferences/ folder."""
    return CONFERENCES_DIR


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
    return Renderer(template_loader(TEMPLATES_DIR))
