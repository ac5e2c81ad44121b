"""The browser test machinery itself, against pages served by a real HTTP server with the
console's strict Content-Security-Policy: axe-core runs there (CSP does not stop it), finds
known violations, passes an accessible Danish page, and screenshots cover the whole page."""

from __future__ import annotations

import http.server
import struct
import threading
import urllib.request
import zlib
from collections.abc import Iterator
from pathlib import Path

import pytest
from selenium.webdriver.chrome.webdriver import WebDriver

from devtools.browser import SCREENSHOTS, axe_violations
from tests.browser.conftest import Axe, Shots

CSP = "default-src 'self'; script-src 'self'; style-src 'self'; frame-ancestors 'none'"

# Styles come from a file: style-src 'self' also forbids style="" attributes.
STYLE = """
body { font: 16px/1.5 sans-serif; color: #1a1a1a; background: #fff; margin: 2rem; }
label { display: block; margin-top: 1rem; }
button { margin-top: 1rem; color: #fff; background: #00448a; border: 0; padding: .5rem 1rem; }
.bleg { color: #c8c8c8; }
.lang { height: 2400px; }
.bund { height: 120px; background: #00448a; color: #fff; }
"""

# The inline script must not run under the CSP; data-inline says whether it did.
GOOD = """<!doctype html>
<html lang="da"><head><meta charset="utf-8"><title>Tilmelding – Kommunernes Konference</title>
<link rel="stylesheet" href="/style.css">
<script>document.documentElement.dataset.inline = "kørt";</script>
</head><body><main>
<h1>Tilmeld deltager</h1>
<form method="post" action="/tilmeld">
<label for="navn">Fulde navn</label><input id="navn" name="navn" autocomplete="name">
<label for="email">E-mailadresse</label>
<input id="email" name="email" type="email" autocomplete="email">
<label for="spor">Spor</label>
<select id="spor" name="spor"><option>Ældrepleje</option><option>Børn og unge</option></select>
<button type="submit">Tilmeld</button>
</form></main></body></html>
"""

# Three known serious/critical violations: no label, low contrast, no alt text.
BAD = """<!doctype html>
<html lang="da"><head><meta charset="utf-8"><title>Dårlig side</title>
<link rel="stylesheet" href="/style.css"></head><body><main>
<h1>Dårlig side</h1>
<p class="bleg">Næsten usynlig tekst på hvid baggrund.</p>
<img src="/logo.png">
<form><input name="navn"></form>
</main></body></html>
"""

LONG = """<!doctype html>
<html lang="da"><head><meta charset="utf-8"><title>Lang side</title>
<link rel="stylesheet" href="/style.css"></head><body><main>
<h1>Lang side</h1><div class="lang">Program for dagen …</div>
<footer class="bund" id="bund">Slut på siden</footer>
</main></body></html>
"""

PAGES = {
    "/style.css": ("text/css", STYLE),
    "/god/": ("text/html", GOOD),
    "/daarlig/": ("text/html", BAD),
    "/lang/": ("text/html", LONG),
}


class Pages(http.server.BaseHTTPRequestHandler):
    """PAGES with the strict CSP; under /uden-csp/ the same pages without it (the control)."""

    def do_GET(self) -> None:
        path = self.path.removeprefix("/uden-csp")
        if path not in PAGES:
            self.send_error(404)
            return
        kind, text = PAGES[path]
        body = text.encode()
        self.send_response(200)
        self.send_header("Content-Type", f"{kind}; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        if not self.path.startswith("/uden-csp/"):
            self.send_header("Content-Security-Policy", CSP)
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def site() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Pages)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()
    thread.join()


def test_page_csp_is_enforced_yet_axe_runs(browser: WebDriver, site: str, axe_js: str) -> None:
    with urllib.request.urlopen(f"{site}/god/") as response:
        assert response.headers["Content-Security-Policy"] == CSP
    browser.get(f"{site}/uden-csp/god/")
    inline = "return document.documentElement.dataset.inline ?? null"
    assert browser.execute_script(inline) == "kørt"  # the control: without CSP it runs

    browser.get(f"{site}/god/")
    assert browser.execute_script(inline) is None  # the page's CSP blocked the inline script
    # A script the page itself adds is blocked too: axe cannot be injected that way.
    added = browser.execute_script(
        "const s = document.createElement('script'); s.textContent = 'window.tilfoejet = 1';"
        "document.head.append(s); return window.tilfoejet ?? null"
    )
    assert added is None
    # Through WebDriver it runs: an empty result, not an error.
    assert axe_violations(browser, source=axe_js) == []
    browser.get(f"{site}/daarlig/")
    assert axe_violations(browser, source=axe_js)


def test_accessible_page_passes(browser: WebDriver, site: str, axe: Axe, shots: Shots) -> None:
    browser.get(f"{site}/god/")
    axe()
    shots("infra-god")


def test_known_violations_are_found(
    browser: WebDriver, site: str, axe_js: str, axe: Axe, shots: Shots
) -> None:
    browser.get(f"{site}/daarlig/")
    shots("infra-daarlig")
    found = {v["id"]: v for v in axe_violations(browser, source=axe_js)}
    assert {"label", "color-contrast", "image-alt"} <= found.keys()
    assert found["label"]["targets"] == ["input"]
    assert found["image-alt"]["targets"] == ["img"]
    assert all(v["impact"] in ("serious", "critical") for v in found.values())
    # Only moderate and minor: none of those on this page, so nothing to report.
    assert axe_violations(browser, impacts=("minor",), source=axe_js) == []

    with pytest.raises(pytest.fail.Exception) as failed:
        axe()
    for rule in ("label", "color-contrast", "image-alt"):
        assert rule in str(failed.value)


def png_size(path: Path) -> tuple[int, int]:
    """Width and height from a PNG's IHDR, after checking the signature and the chunk's CRC."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    length, kind = struct.unpack(">I4s", data[8:16])
    assert kind == b"IHDR" and length == 13
    (crc,) = struct.unpack(">I", data[29:33])
    assert zlib.crc32(data[12:29]) == crc, f"{path}: IHDR is corrupt"
    assert data[-8:-4] == b"IEND", f"{path} is truncated"
    width, height = struct.unpack(">II", data[16:24])
    return width, height


def test_screenshot_is_a_whole_page_png(browser: WebDriver, site: str, shots: Shots) -> None:
    browser.get(f"{site}/lang/")
    path = shots("infra-lang")
    assert path == SCREENSHOTS / "infra-lang.png"
    width, height = png_size(path)
    page = browser.execute_script("return document.documentElement.scrollHeight")
    assert width >= 1200 and height >= page > 2400 > browser.get_window_size()["height"]

    # The footer lies below the window: if the capture missed it, a change to it would not
    # change the picture.
    before = path.read_bytes()
    browser.execute_script("document.getElementById('bund').textContent = 'Ændret'")
    shots("infra-lang")
    assert path.read_bytes() != before
