"""A cookie-keeping form client for the console on a real server (the standard library's
http.client and html.parser: nothing of the server's own stack on the client side)."""

from __future__ import annotations

from collections.abc import Callable
from html.parser import HTMLParser
from http.cookies import SimpleCookie
from pathlib import Path
from urllib.parse import urlencode

import pytest
import redis

from notifier.settings import Settings
from tests.api_support import Api, Reply, make_token
from tests.conferences import conference_copy


class Forms(HTMLParser):
    """Every form's action and its hidden and named fields' values."""

    def __init__(self) -> None:
        super().__init__()
        self.forms: list[dict[str, str]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        if tag == "form":
            self.forms.append({"_action": a.get("action", ""), "_method": a.get("method", "get")})
        elif tag in ("input", "textarea", "select") and self.forms and a.get("name"):
            if a.get("type") in ("checkbox", "radio") and "checked" not in a:
                return
            self.forms[-1][a["name"]] = a.get("value", "")


def forms(html: bytes) -> list[dict[str, str]]:
    parser = Forms()
    parser.feed(html.decode("utf-8"))
    return parser.forms


def form_for(html: bytes, action: str) -> dict[str, str]:
    found = [f for f in forms(html) if f["_action"] == action]
    assert found, f"no form posting to {action}"
    return {k: v for k, v in found[0].items() if not k.startswith("_")}


class Client:
    def __init__(self, api: Api) -> None:
        self.api = api
        self.cookies: dict[str, str] = {}
        self.extra: dict[str, str] = {}  # sent with every request (a proxy's headers)

    def _headers(self) -> dict[str, str]:
        if not self.cookies:
            return dict(self.extra)
        return {**self.extra, "Cookie": "; ".join(f"{k}={v}" for k, v in self.cookies.items())}

    def _keep(self, reply: Reply, raw_cookies: list[str]) -> None:
        for header in raw_cookies:
            jar: SimpleCookie = SimpleCookie()
            jar.load(header)
            for name, morsel in jar.items():
                if morsel["max-age"] == "0" or morsel.value in ("", '""'):
                    self.cookies.pop(name, None)
                else:
                    self.cookies[name] = morsel.value

    def get(self, path: str) -> Reply:
        reply = self.api.call("GET", path, headers=self._headers())
        self._keep(reply, reply.cookies)
        return reply

    def post(self, path: str, fields: dict[str, str]) -> Reply:
        headers = {**self._headers(), "Content-Type": "application/x-www-form-urlencoded"}
        reply = self.api.call("POST", path, headers=headers, raw=urlencode(fields).encode())
        self._keep(reply, reply.cookies)
        return reply

    def login(self, token: str) -> Reply:
        page = self.get("/login")
        fields = form_for(page.body, "/login")
        fields["token"] = token
        return self.post("/login", fields)


# Fixtures for the console's test modules (import them there, with `api`).


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    """A copy of the shipped conference file that a test may edit."""
    conference_copy(tmp_path / "conferences")
    return tmp_path / "conferences"


@pytest.fixture
def server(
    api: Callable[[Settings], Api],
    make_settings: Callable[..., Settings],
    folder: Path,
    redis_client: redis.Redis,  # an empty store (no failed logins of an earlier test)
) -> Api:
    return api(make_settings(conferences_dir=str(folder)))


@pytest.fixture
def organiser(server: Api) -> Client:
    """A client logged in with an organiser token."""
    c = Client(server)
    assert c.login(make_token(server.settings, "organiser")).status == 303
    return c
