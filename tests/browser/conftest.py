"""Browser fixtures: a headless Chromium (`browser`), an axe-core check (`axe`) and full-page
screenshots (`shots`), all from devtools/browser.py.

Chromium and chromium-driver are installed from Debian when this user may (root with apt-get),
and axe-core is fetched from npm once into .cache/axe-core/; what cannot be had skips the test
locally and fails it under CI=true.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import pytest
from selenium.webdriver.chrome.webdriver import WebDriver

from devtools import browser as b
from tests.conftest import need

Axe = Callable[..., None]
Shots = Callable[..., Path]


@pytest.fixture(scope="session")
def chromium_installed() -> None:
    need(b.install(), f"Debian's {' and '.join(b.missing())} (apt-get install as root)")


@pytest.fixture(scope="session")
def axe_js() -> str:
    try:
        return b.axe_source()
    except b.BrowserUnavailable as exc:
        need(False, str(exc))
        raise  # need() did not return: for the type checker


@pytest.fixture
def browser(chromium_installed: None) -> Iterator[WebDriver]:
    """A fresh headless Chromium for each test (about 1 s to start; nothing leaks between
    tests: cookies, storage and cache live in a profile removed afterwards)."""
    with b.chromium() as driver:
        yield driver


@pytest.fixture
def axe(browser: WebDriver, axe_js: str) -> Axe:
    """axe(): fail the test, listing them, if the page shown has violations of these impacts."""

    def check(
        driver: WebDriver | None = None, impacts: Sequence[str] = ("serious", "critical")
    ) -> None:
        page = driver or browser
        found = b.axe_violations(page, impacts, source=axe_js)
        if found:
            pytest.fail(f"axe-core found on {page.current_url}:\n{b.describe(found)}")

    return check


@pytest.fixture
def shots(browser: WebDriver, request: pytest.FixtureRequest) -> Shots:
    """shots(name=None): the page shown, whole, as artifacts/screenshots/<name>.png; by default
    named after the test."""

    def take(name: str | None = None, driver: WebDriver | None = None) -> Path:
        return b.screenshot(driver or browser, name or request.node.name)

    return take
