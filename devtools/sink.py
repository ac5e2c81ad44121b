"""A local SMTP server for the demo and the tests (aiosmtpd on loopback, a free port).

It keeps what it receives in memory and, if given a folder, as .eml files. Failures can be
scripted: a reply for recipients matching a pattern, replies for the next MAIL, RCPT or DATA
commands, or connections dropped in the middle of DATA. A scripted 421 to MAIL or RCPT
closes the connection after the reply, as a relay that is shutting down does.
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session


@dataclass(frozen=True, slots=True)
class Received:
    sender: str
    recipients: tuple[str, ...]
    data: bytes


@dataclass
class Script:
    """What the server does instead of accepting; each deque entry is used once."""

    rcpt: dict[str, str] = field(default_factory=dict)  # substring of address -> reply
    mail: deque[str] = field(default_factory=deque)  # replies for the next MAIL commands
    rcpt_next: deque[str] = field(default_factory=deque)  # replies for the next RCPT commands
    data: deque[str] = field(default_factory=deque)  # replies for the next DATA commands
    drop_data: int = 0  # close the connection during the next N DATA commands
    delay: float = 0.0  # seconds to wait before answering each DATA
    late_reply: float = 0.0  # store each message, then wait this long before answering
    # A relay's quota: at most `limit` messages accepted in any `seconds`; a MAIL beyond it
    # is answered with `reply` (on-premises Exchange's wording) and the connection closed.
    quota: Quota | None = None
    greylist: bool = False  # the first RCPT of each address: 451 4.7.1, come back later


@dataclass
class Quota:
    limit: int
    seconds: float
    reply: str = (
        "421 4.4.2 Message submission rate for this client has exceeded the configured limit"
    )
    accepted: deque[float] = field(default_factory=deque)  # monotonic times of MAIL taken
    refused: int = 0

    def full(self) -> bool:
        cutoff = time.monotonic() - self.seconds
        while self.accepted and self.accepted[0] <= cutoff:
            self.accepted.popleft()
        return len(self.accepted) >= self.limit


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def _scripted(server: SMTP, replies: deque[str], *, hang_up: bool = True) -> str | None:
    """The next scripted reply, if any. With hang_up, a 421 closes the connection once the
    reply has been written (a transport flushes what it buffered before it closes)."""
    if not replies:
        return None
    reply = replies.popleft()
    if hang_up and reply.startswith("421") and server.transport is not None:
        asyncio.get_running_loop().call_soon(server.transport.close)
    return reply


class _Handler:
    def __init__(self, sink: Sink) -> None:
        self.sink = sink

    async def handle_MAIL(
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        address: str,
        mail_options: list[str],
    ) -> str:
        reply = _scripted(server, self.sink.script.mail)
        if reply is not None:
            return reply
        quota = self.sink.script.quota
        if quota is not None:
            if quota.full():
                quota.refused += 1
                return _scripted(server, deque([quota.reply])) or quota.reply
            quota.accepted.append(time.monotonic())  # counted as the transaction starts
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return "250 OK"

    async def handle_RCPT(
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        address: str,
        rcpt_options: list[str],
    ) -> str:
        for pattern, reply in self.sink.script.rcpt.items():
            if pattern in address:
                return reply
        scripted = _scripted(server, self.sink.script.rcpt_next)
        if scripted is not None:
            return scripted
        if self.sink.script.greylist and address not in self.sink.greylisted:
            self.sink.greylisted.add(address)
            return "451 4.7.1 Greylisted, please try again later"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        script = self.sink.script
        if script.delay:
            await asyncio.sleep(script.delay)
        if script.drop_data > 0:
            script.drop_data -= 1
            transport = getattr(session, "transport", None) or server.transport
            assert transport is not None
            transport.close()
            return "421 closing"
        reply = _scripted(server, script.data, hang_up=False)  # as it always did for DATA
        if reply is not None:
            return reply
        self.sink.store(envelope)
        if script.late_reply:  # the relay has it; the sender may give up before it hears so
            await asyncio.sleep(script.late_reply)
        return "250 2.0.0 Ok: queued"


class Sink:
    """An SMTP server on 127.0.0.1 that records every accepted message."""

    def __init__(
        self, folder: Path | None = None, port: int | None = None, idle_timeout: float = 30.0
    ) -> None:
        self.folder = folder
        self.port = port or free_port()
        self.script = Script()
        self.received: list[Received] = []
        self.greylisted: set[str] = set()
        self._lock = threading.Condition()
        self.connections = 0
        self.disconnects = 0
        self.running = False
        self.controller = Controller(
            _Handler(self),
            hostname="127.0.0.1",
            port=self.port,
            enable_SMTPUTF8=True,
            decode_data=False,
            data_size_limit=10_485_760,
            timeout=idle_timeout,
        )
        self._count_connections()

    def _count_connections(self) -> None:
        sink = self
        factory = self.controller.factory

        def counting() -> Any:
            sink.connections += 1
            server = factory()  # type: ignore[no-untyped-call]
            lost = server.connection_lost

            def connection_lost(exc: Exception | None) -> None:
                with sink._lock:
                    sink.disconnects += 1
                    sink._lock.notify_all()
                lost(exc)

            server.connection_lost = connection_lost
            return server

        self.controller.factory = counting  # type: ignore[method-assign]

    def store(self, envelope: Envelope) -> None:
        data = envelope.original_content or b""
        if isinstance(envelope.content, bytes) and not data:
            data = envelope.content
        item = Received(str(envelope.mail_from), tuple(envelope.rcpt_tos), data)
        with self._lock:
            self.received.append(item)
            n = len(self.received)
            self._lock.notify_all()
        if self.folder is not None:
            self.folder.mkdir(parents=True, exist_ok=True)
            (self.folder / f"{n:05d}.eml").write_bytes(data)

    def wait_for(self, count: int, timeout: float = 20.0) -> list[Received]:
        """Block until at least `count` messages arrived; raise TimeoutError otherwise."""
        deadline = time.monotonic() + timeout
        with self._lock:
            while len(self.received) < count:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"{len(self.received)} of {count} message(s) arrived")
                self._lock.wait(left)
            return list(self.received)

    def start(self) -> Sink:
        self.controller.start()
        self.running = True
        # The controller opens one connection of its own to see that the server answers;
        # wait until it is gone so that the counters count clients only.
        deadline = time.monotonic() + 5
        with self._lock:
            while self.disconnects < 1 and time.monotonic() < deadline:
                self._lock.wait(deadline - time.monotonic())
            self.connections = self.disconnects = 0
        return self

    def stop(self) -> None:
        """Stop serving (a stopped Sink cannot be started again; make a new one)."""
        if self.running:
            self.controller.stop()
            self.running = False

    def __enter__(self) -> Sink:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()
