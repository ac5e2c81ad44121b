"""The HTTP API under test: a real uvicorn server on a free loopback port, in a thread of the
test process, and a small HTTP client (the standard library's, so that nothing of the
server's own stack is on the client side)."""

from __future__ import annotations

import http.client
import json
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
import uvicorn

from devtools.sink import free_port
from notifier.api.app import uvicorn_config
from notifier.settings import Settings
from notifier.store.tokens import Scope, Tokens
from tests.conftest import wait_for


@dataclass
class Reply:
    status: int
    headers: dict[str, str]  # lower-case names
    body: bytes
    cookies: list[str] = field(default_factory=list)  # every Set-Cookie header

    def json(self) -> Any:
        return json.loads(self.body)


class Api:
    """A running server and a client for it."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.port = free_port()
        self.server = uvicorn.Server(uvicorn_config(settings, "127.0.0.1", self.port))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def start(self) -> Api:
        self.thread.start()
        wait_for(self._answers, 20, "the API to answer")
        return self

    def _answers(self) -> bool:
        if not self.thread.is_alive():
            raise AssertionError("the API server stopped")
        try:
            self.call("GET", "/openapi.json")
        except OSError:
            return False
        return True

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(30)

    def call(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        token: str | None = None,
        headers: dict[str, str] | None = None,
        raw: bytes | None = None,
        timeout: float = 30.0,
    ) -> Reply:
        sent = dict(headers or {})
        data = raw
        if body is not None:
            data = json.dumps(body).encode()
            sent.setdefault("Content-Type", "application/json")
        if token is not None:
            sent["Authorization"] = f"Bearer {token}"
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        try:
            conn.request(method, path, body=data, headers=sent)
            resp = conn.getresponse()
            payload = resp.read()
            found = {k.lower(): v for k, v in resp.getheaders()}
            cookies = [v for k, v in resp.getheaders() if k.lower() == "set-cookie"]
            return Reply(resp.status, found, payload, cookies)
        finally:
            conn.close()


def make_token(settings: Settings, scope: Scope, name: str = "") -> str:
    import redis

    client = redis.Redis.from_url(settings.redis_url)
    try:
        return Tokens(client).create(name or f"{scope}-{time.monotonic_ns()}", scope, time.time())
    finally:
        client.close()


@pytest.fixture
def api() -> Iterator[Callable[[Settings], Api]]:
    """Factory: a started API server for these settings, stopped at teardown."""
    made: list[Api] = []

    def start(settings: Settings) -> Api:
        made.append(Api(settings).start())
        return made[-1]

    yield start
    for a in made:
        a.stop()
