"""The one SMTP sink every path of a run sends to: Postfix's smtp-sink, else aiosmtpd.

smtp-sink is a small C server that accepts and discards mail far faster than any Python
client sends, so it measures the clients. With `-c` it prints running counters
("sess=.. quit=.. mesg=..") which we read to cross-check every count. It keeps no messages
and no accept times, so confirmation latency is then taken from the outbox (see e2e.py).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import subprocess
import sys
import threading
from pathlib import Path
from typing import IO, Literal, Protocol

from bench.procs import ROOT, BenchError, port_open, stop_group, wait_until
from devtools.sink import free_port

SMTP_SINK_PATHS = ("/usr/sbin/smtp-sink", "/usr/bin/smtp-sink")
INSTALL_HINT = (
    "Postfix's smtp-sink was not found. Install it with `make bench-sink`, i.e. "
    "echo 'postfix postfix/main_mailer_type select No configuration' | debconf-set-selections"
    " && DEBIAN_FRONTEND=noninteractive apt-get install -y postfix"
    " (only the smtp-sink binary is used; the Postfix daemon need not run)."
)
SinkChoice = Literal["auto", "smtp-sink", "aiosmtpd"]
_MESSAGES = re.compile(rb"mesg=(\d+)")


class SinkServer(Protocol):
    name: str
    port: int
    is_limit: bool  # True when the sink, not the client, may be what caps a measurement

    def accepted(self) -> int:
        """Messages the sink itself has accepted since it started."""
        ...

    def accept_times(self) -> dict[str, float] | None:
        """Recipient -> epoch time its message was accepted; None if the sink cannot tell."""
        ...

    def stop(self) -> None: ...


def find_smtp_sink() -> str | None:
    found = shutil.which("smtp-sink")
    if found:
        return found
    return next((p for p in SMTP_SINK_PATHS if os.access(p, os.X_OK)), None)


class PostfixSink:
    """`smtp-sink -c 127.0.0.1:PORT 1024`, its counter line read by a thread."""

    is_limit = False

    def __init__(self, binary: str, log: Path) -> None:
        self.name = f"Postfix smtp-sink ({binary})"
        self.port = free_port()
        self._count = 0
        args = [binary, "-c"]
        if os.geteuid() == 0:
            args += ["-u", "nobody"]  # smtp-sink refuses to run as root without it
        args += [f"127.0.0.1:{self.port}", "1024"]  # 1024: listen backlog
        with log.open("wb") as err:
            self.proc = subprocess.Popen(
                args, stdout=subprocess.PIPE, stderr=err, start_new_session=True
            )
        assert self.proc.stdout is not None
        threading.Thread(target=self._read, args=(self.proc.stdout,), daemon=True).start()
        try:
            wait_until(lambda: self._listening(log), 10, "smtp-sink to listen")
        except BaseException:
            self.stop()
            raise

    def _listening(self, log: Path) -> bool:
        if self.proc.poll() is not None:
            raise BenchError(f"smtp-sink exited: {log.read_text(errors='replace')[-500:]}")
        return port_open(self.port)

    def _read(self, stream: IO[bytes]) -> None:
        tail = b""
        while chunk := os.read(stream.fileno(), 65536):
            tail = (tail + chunk)[-4096:]
            found = _MESSAGES.findall(tail)
            if found:
                self._count = int(found[-1])

    def accepted(self) -> int:
        return self._count

    def accept_times(self) -> dict[str, float] | None:
        return None

    def stop(self) -> None:
        stop_group(self.proc, timeout=5)


class AioSink:
    """bench.aiosink in a subprocess, asked over its stdin/stdout."""

    is_limit = True

    def __init__(self) -> None:
        self.name = "aiosmtpd (devtools.sink.Sink in a separate process)"
        self.port = free_port()
        self._lock = threading.Lock()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "bench.aiosink", str(self.port)],
            cwd=ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            start_new_session=True,
        )
        if self._line() != "ready":
            self.stop()
            raise BenchError("the aiosmtpd sink did not start")

    def _line(self) -> str:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            raise BenchError("the aiosmtpd sink exited")
        return line.decode().strip()

    def _ask(self, command: str) -> str:
        assert self.proc.stdin is not None
        with self._lock:
            self.proc.stdin.write(command.encode() + b"\n")
            self.proc.stdin.flush()
            return self._line()

    def accepted(self) -> int:
        return int(self._ask("count"))

    def accept_times(self) -> dict[str, float] | None:
        times: dict[str, float] = json.loads(self._ask("times"))
        return times

    def stop(self) -> None:
        if self.proc.stdin is not None and not self.proc.stdin.closed:
            with contextlib.suppress(BrokenPipeError):
                self.proc.stdin.close()  # EOF: the sink stops its server and exits
        stop_group(self.proc, timeout=5)


def start_sink(choice: SinkChoice, logdir: Path) -> tuple[SinkServer, str | None]:
    """The sink to use and, when smtp-sink is missing, the hint that says how to get it."""
    binary = find_smtp_sink() if choice != "aiosmtpd" else None
    if binary is not None:
        return PostfixSink(binary, logdir / "smtp-sink.log"), None
    if choice == "smtp-sink":
        raise BenchError(INSTALL_HINT)
    hint = INSTALL_HINT if choice == "auto" else None
    return AioSink(), hint
