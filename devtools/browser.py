"""A real browser for the tests: Debian's headless Chromium, driven by Selenium, plus axe-core.

- `install()` puts Debian's `chromium` and `chromium-driver` in place when this user may (root
  with apt-get), as devtools/dovecot.py does for Dovecot; `missing()` says what is not there.
- `chromium()` starts a headless Chromium through /usr/bin/chromedriver with a fresh profile
  and always quits it and removes the profile. The driver path is given explicitly, so
  Selenium Manager is never asked to find or download anything.
- `axe_source()` is axe.min.js of a pinned axe-core from npm, fetched once into the gitignored
  .cache/axe-core/ and checked against the registry's integrity hash.
- `axe_violations()` runs axe in the current page; `screenshot()` writes a full-page PNG to
  artifacts/screenshots/ (gitignored) for a reviewer to look at.

Scripts given to Selenium's execute_script run through the DevTools protocol, which the
page's Content-Security-Policy does not govern: axe works on pages that allow no inline
script (tests/browser/test_browser_infra.py proves it).
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import os
import re
import shutil
import subprocess
import tarfile
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, TypedDict

from selenium import webdriver
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.chrome.webdriver import WebDriver
from selenium.webdriver.remote.webdriver import WebDriver as RemoteWebDriver

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
PACKAGES = {CHROMIUM: "chromium", CHROMEDRIVER: "chromium-driver"}

# One exact axe-core: its rules decide what fails, so an upgrade is a reviewed change. The
# integrity value is npm's (`npm view axe-core@VERSION dist.integrity`).
AXE_VERSION = "4.10.3"
AXE_INTEGRITY = (
    "sha512-Xm7bpRXnDSX2YE2YFfBk2FnF0ep6tmG7xPh8iHee8MIc"
    "rgq762Nkce856dYtJYLkuIoYZvGfTs/PbZhideTcEg=="
)
AXE_CACHE = ROOT / ".cache" / "axe-core"
SCREENSHOTS = ROOT / "artifacts" / "screenshots"

# Headless in a container, as root, on a loaded machine: no sandbox (root), no GPU, no
# /dev/shm (small in containers), and nothing that phones home (no internet here anyway,
# and a hanging request to it would slow page loads).
FLAGS = (
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
)
WIDTH, HEIGHT = 1280, 900
# Generous: a 2-core machine under a full test run can be slow to lay out and to run axe.
TIMEOUT = 60.0

# axe.run in the page; errors come back as a value so they surface as our exception.
RUN_AXE = """
const done = arguments[arguments.length - 1];
axe.run(document, {resultTypes: ["violations"]}).then(
  (result) => done({violations: result.violations}),
  (error) => done({error: String((error && error.stack) || error)}),
);
"""


class BrowserUnavailable(RuntimeError):
    """Chromium, chromedriver or axe-core cannot be had on this machine."""


class Violation(TypedDict):
    id: str
    impact: str
    help: str
    targets: list[str]


def missing() -> list[str]:
    """Debian packages whose program is not installed."""
    return [package for path, package in PACKAGES.items() if not Path(path).exists()]


def install() -> bool:
    """True once Chromium and chromedriver are there, after installing Debian's packages when
    this user may (root with apt-get); `apt-get update` only if the first try fails."""
    if not missing():
        return True
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        return False
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    apt = ["apt-get", "install", "-y", "-q", "--no-install-recommends"]
    apt += ["-o", "DPkg::Lock::Timeout=300", *missing()]
    for step in (apt, ["apt-get", "update", "-q"], apt):
        subprocess.run(step, env=env, check=False, capture_output=True, timeout=900)
        if not missing():
            return True
    return False


def options(profile: Path) -> Options:
    opts = Options()
    opts.binary_location = CHROMIUM
    for flag in FLAGS:
        opts.add_argument(flag)
    opts.add_argument(f"--user-data-dir={profile}")
    opts.add_argument(f"--window-size={WIDTH},{HEIGHT}")
    # The page's console messages (CSP violations, script errors), for `console_errors`.
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return opts


def console_errors(driver: RemoteWebDriver) -> list[str]:
    """The page's console errors since the last call (a CSP violation is one), without
    the favicon the pages do not have, and without the page's own status when it is an
    error page on purpose (Chromium logs a 404 document as a failed resource)."""
    # What ChromiumDriver.get_log sends; the remote driver's type (what tests hold) lacks it.
    found: list[dict[str, Any]] = driver.execute("getLog", {"type": "browser"})["value"]
    page = f"{driver.current_url} - Failed to load resource"
    return [
        str(entry["message"])
        for entry in found
        if entry.get("level") == "SEVERE"
        and "favicon.ico" not in str(entry["message"])
        and not str(entry["message"]).startswith(page)
    ]


@contextlib.contextmanager
def chromium() -> Iterator[WebDriver]:
    """A headless Chromium for one user: quit, and its profile removed, on the way out."""
    if missing():
        raise BrowserUnavailable(f"not installed: {', '.join(missing())}")
    profile = Path(tempfile.mkdtemp(prefix="notifier-chromium-"))
    log = profile.parent / f"{profile.name}.chromedriver.log"
    try:
        service = Service(executable_path=CHROMEDRIVER, log_output=str(log))
        try:
            driver = webdriver.Chrome(options=options(profile), service=service)
        except Exception as exc:
            # chromedriver's log says why Chromium would not start (flags, libraries, ...).
            tail = log.read_text(errors="replace")[-4000:] if log.exists() else ""
            raise BrowserUnavailable(f"Chromium did not start: {exc}\n{tail}") from exc
        try:
            driver.set_page_load_timeout(TIMEOUT)
            driver.set_script_timeout(TIMEOUT)
            yield driver
        finally:
            driver.quit()
    finally:
        shutil.rmtree(profile, ignore_errors=True)
        log.unlink(missing_ok=True)


def axe_source() -> str:
    """axe.min.js of AXE_VERSION, fetched with npm into AXE_CACHE the first time."""
    path = AXE_CACHE / AXE_VERSION / "axe.min.js"
    if not path.exists():
        _fetch_axe(path)
    return path.read_text(encoding="utf-8")


def _fetch_axe(path: Path) -> None:
    npm = shutil.which("npm")
    if npm is None:
        raise BrowserUnavailable(f"npm is needed once to fetch axe-core@{AXE_VERSION}")
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=path.parent) as tmp:
        out = subprocess.run(
            [npm, "pack", f"axe-core@{AXE_VERSION}", "--pack-destination", tmp],
            capture_output=True,
            text=True,
            check=False,
            timeout=300,
        )
        tarballs = list(Path(tmp).glob("*.tgz"))
        if out.returncode != 0 or len(tarballs) != 1:
            raise BrowserUnavailable(f"npm pack axe-core@{AXE_VERSION} failed:\n{out.stderr}")
        data = tarballs[0].read_bytes()
        digest = "sha512-" + base64.b64encode(hashlib.sha512(data).digest()).decode()
        if digest != AXE_INTEGRITY:
            raise BrowserUnavailable(f"axe-core@{AXE_VERSION}: got {digest}, want {AXE_INTEGRITY}")
        with tarfile.open(tarballs[0]) as tar:
            member = tar.extractfile("package/axe.min.js")
            assert member is not None
            staged = Path(tmp) / "axe.min.js"
            staged.write_bytes(member.read())
        # Atomic: a second test process never reads half a file.
        os.replace(staged, path)


def axe_violations(
    driver: WebDriver,
    impacts: Sequence[str] = ("serious", "critical"),
    source: str | None = None,
) -> list[Violation]:
    """Run axe-core over the page the driver shows; its violations of the given impacts."""
    driver.execute_script(source if source is not None else axe_source())
    result: dict[str, Any] = driver.execute_async_script(RUN_AXE)
    if "error" in result:
        raise RuntimeError(f"axe.run failed: {result['error']}")
    return [
        Violation(
            id=item["id"],
            impact=item["impact"],
            help=item["help"],
            targets=[_target(node["target"]) for node in item["nodes"]],
        )
        for item in result["violations"]
        if item["impact"] in impacts
    ]


def _target(target: list[Any]) -> str:
    # A selector list walks into iframes and shadow roots, outermost first.
    return " >>> ".join(t if isinstance(t, str) else " ".join(t) for t in target)


def describe(violations: Sequence[Violation]) -> str:
    """One line per violation and element, for a test failure."""
    return "\n".join(
        f"{v['impact']}: {v['id']} ({v['help']}) at {target}"
        for v in violations
        for target in v["targets"] or ["?"]
    )


def screenshot(driver: WebDriver, name: str, folder: Path = SCREENSHOTS) -> Path:
    """The whole page, not just the window, as folder/<name>.png; returns the path."""
    stem = re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip(".-") or "page"
    folder.mkdir(parents=True, exist_ok=True)
    size = driver.execute_cdp_cmd("Page.getLayoutMetrics", {})["cssContentSize"]
    clip = {"x": 0, "y": 0, "width": size["width"], "height": size["height"], "scale": 1}
    shot = driver.execute_cdp_cmd(
        "Page.captureScreenshot",
        {"format": "png", "captureBeyondViewport": True, "clip": clip},
    )
    path = folder / f"{stem}.png"
    path.write_bytes(base64.b64decode(shot["data"]))
    print(f"screenshot: {path}")
    return path
