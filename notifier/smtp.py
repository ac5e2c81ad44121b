"""SMTP delivery over reused aiosmtplib connections, and the one place SMTP outcomes are judged.

A worker process keeps one Mailer: an event loop and up to `smtp_connections` open SMTP
sessions. Messages of a chunk are spread over the sessions; a session the server closed
while idle is reopened transparently (only before MAIL FROM was accepted, so this never
sends a message twice).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import socket
import ssl
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import TypeVar

import aiosmtplib
from aiosmtplib.protocol import normalize_message_line_endings

from notifier.errors import (
    DeliveryError,
    DeliveryUnknown,
    PermanentDeliveryError,
    TemporaryDeliveryError,
)
from notifier.mail.compose import Composed
from notifier.settings import Settings

log = logging.getLogger(__name__)
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Sent:
    reply: str


Outcome = Sent | DeliveryError


def _reply(code: int, message: str) -> str:
    return f"{code} {' '.join(message.split())}"[:500]


# "Command unrecognised", "not implemented", "bad sequence of commands": MAIL, RCPT and DATA
# are commands every relay knows, so these replies mean our session is out of step with the
# server (or the server is confused), never that the recipient or the message is refused.
OUT_OF_STEP = frozenset({500, 502, 503})

SLOW_DOWN = re.compile(
    r"too many|concurren|rate limit|throttl|slow down|rate for this client|"
    r"limit exceeded|exceeded the configured limit|\b4\.4\.2\b|\b4\.3\.2\b|\b4\.7\.28\b",
    re.IGNORECASE,
)
GREYLIST = re.compile(r"gr[ae]y ?list|\b4\.7\.1\b.*\blater\b", re.IGNORECASE)
# A daily submission quota: Exchange Online answers it with a 5xx that is not about the
# recipient ("554 5.2.0 STOREDRV.Submission.Exception:SubmissionQuotaExceededException").
QUOTA = re.compile(
    r"SubmissionQuotaExceeded|sending quota|"
    r"daily (?:sending |message |submission )?(?:limit|quota)",
    re.IGNORECASE,
)


def _asks_to_slow_down(exc: aiosmtplib.SMTPResponseException) -> bool:
    # 432 is Exchange Online's "4.3.2 concurrent connections limit exceeded"; on-premises
    # Exchange's message rate limit is "421 4.4.2 Message submission rate for this client has
    # exceeded the configured limit"; other relays say the same with 450/451/452 and words.
    return exc.code == 432 or bool(SLOW_DOWN.search(exc.message))


def classify(exc: BaseException) -> DeliveryError:
    """Turn an aiosmtplib/OS error into a Temporary- or PermanentDeliveryError.

    Rule: our side or the network is temporary; this recipient or this message with a 5xx
    is permanent. Anything not listed here is a bug and is re-raised by the caller.
    """
    if isinstance(exc, aiosmtplib.SMTPRecipientsRefused):
        first = exc.recipients[0]
        return classify(first)
    if isinstance(exc, aiosmtplib.SMTPNotSupported):
        return PermanentDeliveryError(f"not supported by the relay: {exc}")
    if isinstance(
        exc,
        aiosmtplib.SMTPConnectError | aiosmtplib.SMTPHeloError | aiosmtplib.SMTPAuthenticationError,
    ):
        code = getattr(exc, "code", None)
        return TemporaryDeliveryError(f"relay unavailable: {exc}", code if code else None)
    if isinstance(exc, aiosmtplib.SMTPResponseException):
        return _replied(exc)
    if isinstance(exc, aiosmtplib.SMTPTimeoutError | asyncio.TimeoutError | TimeoutError):
        return TemporaryDeliveryError(f"timeout: {exc}")
    if isinstance(exc, aiosmtplib.SMTPServerDisconnected | aiosmtplib.SMTPException | OSError):
        return TemporaryDeliveryError(f"connection lost: {exc}")
    raise TypeError(f"not an SMTP outcome: {exc!r}") from exc


def _replied(exc: aiosmtplib.SMTPResponseException) -> DeliveryError:
    reply = _reply(exc.code, exc.message)
    if exc.code in OUT_OF_STEP:
        return TemporaryDeliveryError(reply, exc.code, out_of_step=True)
    if QUOTA.search(exc.message):
        return TemporaryDeliveryError(reply, exc.code, quota=True)
    if 400 <= exc.code < 500:
        return _temporary(exc, reply)
    if exc.code >= 500:
        return PermanentDeliveryError(reply, exc.code)
    return TemporaryDeliveryError(reply, exc.code)


def _temporary(exc: aiosmtplib.SMTPResponseException, reply: str) -> TemporaryDeliveryError:
    if _asks_to_slow_down(exc):
        return TemporaryDeliveryError(reply, exc.code, slow_down=True)
    if GREYLIST.search(exc.message):
        return TemporaryDeliveryError(reply, exc.code, greylisted=True)
    return TemporaryDeliveryError(reply, exc.code)


_NOT_IN_PATH = re.compile(r'[\s<>"]')


def _path(address: str, utf8: bool) -> bytes:
    """An address as an SMTP path (`<local@domain>`); nothing that could end it early."""
    if _NOT_IN_PATH.search(address):
        raise ValueError("address not permitted on an SMTP command line")
    return b"<" + address.encode("utf-8" if utf8 else "ascii") + b">"


async def _data(
    smtp: aiosmtplib.SMTP, data: bytes, handed_over: Callable[[], None]
) -> aiosmtplib.SMTPResponse:
    """DATA, the message, and its reply.

    `SMTP.data()` runs two regular expressions over every message to make its line ends
    CRLF and to double leading dots: a large share of what a reminder cost, in
    instructions and in the worker's CPU. Composed messages have CRLF line ends already
    (see compose and its tests), so only the dots are doubled here. `SMTP.protocol` is
    aiosmtplib's own. `handed_over` is called once the final dot is written.
    """
    resp = await smtp.execute_command(b"DATA", timeout=None)
    if resp.code != 354:
        raise aiosmtplib.SMTPDataError(resp.code, resp.message)
    protocol = smtp.protocol
    if protocol is None:
        raise aiosmtplib.SMTPServerDisconnected("Connection lost")
    if data.count(b"\n") != data.count(b"\r\n"):  # not composed here: let aiosmtplib fix it
        data = normalize_message_line_endings(data)
    stuffed = data.replace(b"\r\n.", b"\r\n..")
    if stuffed.startswith(b"."):
        stuffed = b"." + stuffed
    protocol.write(stuffed + (b".\r\n" if stuffed.endswith(b"\r\n") else b"\r\n.\r\n"))
    handed_over()  # from here on the relay may have the message
    resp = await protocol.read_response(timeout=None)  # nothing awaited since the write
    if resp.code != 250:
        raise aiosmtplib.SMTPDataError(resp.code, resp.message)
    return resp


class _Session:
    """One SMTP connection, opened on first use and kept."""

    def __init__(self, settings: Settings, tls_context: ssl.SSLContext | None) -> None:
        self.settings = settings
        self.tls_context = tls_context
        self.smtp: aiosmtplib.SMTP | None = None
        self._handed_over = False
        self._deadline: asyncio.Timeout | None = None
        # Every socket this session opened: the transports close them, Mailer.close waits.
        self.sockets: list[socket.socket] = []

    def _new(self, sock: socket.socket) -> aiosmtplib.SMTP:
        s = self.settings
        return aiosmtplib.SMTP(
            hostname=s.smtp_host,  # for TLS: SNI and the certificate's name
            sock=sock,
            username=s.smtp_username,
            password=s.smtp_secret(),
            timeout=s.smtp_timeout_seconds,
            use_tls=s.smtp_tls == "tls",
            start_tls=s.smtp_tls == "starttls",
            validate_certs=True,
            tls_context=self.tls_context,
        )

    async def ensure(self) -> bool:
        """Connect if needed; True if an existing connection is being reused."""
        if self.smtp is not None and self.smtp.is_connected:
            return True
        self.sockets = [k for k in self.sockets if k.fileno() != -1]
        sock = await _connect(self.settings.smtp_host, self.settings.smtp_port)
        self.sockets.append(sock)
        self.smtp = self._new(sock)
        await self.smtp.connect()
        if self.smtp.is_ehlo_or_helo_needed:  # connect() greets only for STARTTLS or AUTH
            await self.smtp.ehlo()
        return False

    async def drop(self) -> None:
        if self.smtp is not None:
            self.smtp.close()
        self.smtp = None

    async def quit(self) -> None:
        if self.smtp is not None and self.smtp.is_connected:
            with contextlib.suppress(aiosmtplib.SMTPException, OSError):
                await self.smtp.quit()
        await self.drop()

    async def send(self, msg: Composed) -> Sent:
        """One transaction. Raises DeliveryUnknown when the final dot went out but no reply
        came; any other failure leaves the session either reset (a refusal) or closed."""
        self._handed_over = False
        try:
            # One timer for the whole transaction rather than one per command (aiosmtplib's
            # per-command timers cost measurably); the reply to the final dot gets its own.
            async with asyncio.timeout(self.settings.smtp_timeout_seconds) as deadline:
                self._deadline = deadline
                return await self._transaction(msg)
        except aiosmtplib.SMTPResponseException:
            raise  # the server answered in step: the session was reset and is usable
        except BaseException as exc:
            # Cancelled, timed out, disconnected or a bug: a reply may still be on its way,
            # and it would be read as the next command's. Never reuse this connection.
            await self.drop()
            if self._handed_over and isinstance(exc, Exception):
                # Whatever broke after the final dot, the relay may have the message.
                raise DeliveryUnknown(_unknown_reply(exc, self.settings)) from exc
            raise

    def _dot_sent(self) -> None:
        self._handed_over = True
        if self._deadline is not None:
            loop = asyncio.get_running_loop()
            self._deadline.reschedule(loop.time() + self.settings.smtp_data_timeout_seconds)

    async def _transaction(self, msg: Composed) -> Sent:
        smtp = await self._mail_from(msg)
        try:
            resp = await smtp.execute_command(
                b"RCPT", b"TO:" + _path(msg.recipient, msg.smtputf8), timeout=None
            )
            if resp.code not in (250, 251):
                raise aiosmtplib.SMTPRecipientRefused(resp.code, resp.message, msg.recipient)
            resp = await _data(smtp, msg.data, self._dot_sent)
        except aiosmtplib.SMTPResponseException:
            await self._reset()
            raise
        return Sent(_reply(resp.code, resp.message))

    async def _mail_from(self, msg: Composed) -> aiosmtplib.SMTP:
        """MAIL FROM; a kept connection the server closed while idle is reopened once.

        The envelope commands go through `execute_command`: `mail()` and `rcpt()` parse
        each address again with email.utils (with the per-command timers, a measurable share
        of the instructions a reminder cost); ours are validated when the event arrives and
        checked by `_path`.
        """
        options = [b"SMTPUTF8"] if msg.smtputf8 else []
        while True:
            reused = await self.ensure()  # a new connection is not reused: one retry at most
            smtp = self.smtp
            assert smtp is not None
            try:
                resp = await smtp.execute_command(
                    b"MAIL", b"FROM:" + _path(msg.sender, msg.smtputf8), *options, timeout=None
                )
                break
            except (aiosmtplib.SMTPServerDisconnected, ConnectionError):
                await self.drop()
                if not reused:
                    raise
        if resp.code != 250:
            raise aiosmtplib.SMTPSenderRefused(resp.code, resp.message, msg.sender)
        return smtp

    async def _reset(self) -> None:
        try:
            assert self.smtp is not None
            await self.smtp.rset()
        except (aiosmtplib.SMTPException, OSError):
            await self.drop()


def _unknown_reply(exc: Exception, settings: Settings) -> str:
    if isinstance(exc, TimeoutError | aiosmtplib.SMTPTimeoutError):
        waited = f"{settings.smtp_data_timeout_seconds:g} s"
        return f"delivery unknown: no reply to the final dot within {waited}"
    if isinstance(exc, aiosmtplib.SMTPServerDisconnected | OSError):
        return f"delivery unknown: connection lost after the final dot ({type(exc).__name__})"
    return f"delivery unknown: {type(exc).__name__}: {exc}"[:300]


class Mailer:
    """A process's SMTP sender: its own event loop and a small pool of kept sessions."""

    def __init__(self, settings: Settings, tls_context: ssl.SSLContext | None = None) -> None:
        if tls_context is None and settings.smtp_ca_file is not None:
            # An internal relay's CA, trusted instead of the system's; still fully verified.
            tls_context = ssl.create_default_context(cafile=str(settings.smtp_ca_file))
        self.loop = asyncio.new_event_loop()
        self.sessions = [_Session(settings, tls_context) for _ in range(settings.smtp_connections)]

    def run(
        self,
        items: Sequence[T],
        work: Callable[[Sender, T], Awaitable[None]],
        then: Callable[[], Awaitable[None]] | None = None,
        halted: Callable[[], bool] = lambda: False,
    ) -> None:
        """Process items over the pool: each session takes the next item when it is free,
        until `halted()` says to stop taking more. `then` runs after the last item, also
        when one failed."""
        self.loop.run_until_complete(self._run(items, work, then, halted))

    async def _run(
        self,
        items: Sequence[T],
        work: Callable[[Sender, T], Awaitable[None]],
        then: Callable[[], Awaitable[None]] | None,
        halted: Callable[[], bool],
    ) -> None:
        todo = list(reversed(items))

        async def drain(session: _Session) -> None:
            sender = Sender(session)
            while todo and not halted():
                await work(sender, todo.pop())

        width = max(1, min(len(self.sessions), len(items)))
        try:
            # Structured: when one unit fails, its siblings are cancelled and awaited here,
            # so no orphan resumes a transaction on a session the next run hands out again.
            async with asyncio.TaskGroup() as group:
                for session in self.sessions[:width]:
                    group.create_task(drain(session))
        except BaseExceptionGroup as failed:
            raise _first(failed) from None
        finally:
            if then is not None:
                await then()

    def send_all(self, messages: Sequence[Composed]) -> list[Outcome]:
        """Send each message once; the outcome of each, in order."""
        outcomes: dict[int, Outcome] = {}

        async def one(sender: Sender, i: int) -> None:
            outcomes[i] = await sender.send(messages[i])

        self.run(range(len(messages)), one)
        return [outcomes[i] for i in range(len(messages))]

    def close(self) -> None:
        if self.loop.is_closed():
            return
        self.loop.run_until_complete(self._quit_all())
        sockets = [sock for session in self.sessions for sock in session.sockets]
        self.loop.run_until_complete(_sockets_closed(sockets, timeout=2.0))
        self.loop.close()

    async def _quit_all(self) -> None:
        await asyncio.gather(*(s.quit() for s in self.sessions))


def _first(group: BaseExceptionGroup[BaseException]) -> BaseException:
    """The first real error of a task group (callers and Celery's retry rules expect a plain
    exception, e.g. redis.ConnectionError, not a group)."""
    first = group.exceptions[0]
    return _first(first) if isinstance(first, BaseExceptionGroup) else first


async def _connect(host: str, port: int) -> socket.socket:
    """A connected socket to the relay, ours to keep track of (aiosmtplib's documented `sock`
    argument), so that closing can wait for it whatever became of its connection (a failed
    STARTTLS handshake closes a transport that aiosmtplib no longer holds). Errors are those
    aiosmtplib raises for a connection it opens itself."""
    loop = asyncio.get_running_loop()
    failure: OSError = OSError(f"no address for {host}")
    for family, kind, proto, _, address in await loop.getaddrinfo(
        host, port, type=socket.SOCK_STREAM
    ):
        sock = socket.socket(family, kind, proto)
        try:
            sock.setblocking(False)
            await loop.sock_connect(sock, address)
            return sock
        except OSError as exc:
            sock.close()
            failure = exc
        except BaseException:
            sock.close()
            raise
    raise aiosmtplib.SMTPConnectError(f"Error connecting to {host} on port {port}: {failure}")


async def _sockets_closed(sockets: Sequence[socket.socket], timeout: float) -> None:
    """Let the connections we closed finish closing before the loop goes: a TLS close takes a
    few more loop turns (the close_notify exchange), and a loop closed earlier leaves the
    socket open until garbage collection. Waits at most `timeout` s for a slow relay."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while any(sock.fileno() != -1 for sock in sockets) and loop.time() < deadline:
        await asyncio.sleep(0.01)


class Sender:
    """What a unit of work gets: send one message, get its classified outcome."""

    def __init__(self, session: _Session) -> None:
        self._session = session

    async def send(self, msg: Composed) -> Outcome:
        outcome = await self._attempt(msg)
        if isinstance(outcome, TemporaryDeliveryError) and outcome.out_of_step:
            # Our session lost its step (the connection was dropped): once more on a new one.
            outcome = await self._attempt(msg)
        return outcome

    async def _attempt(self, msg: Composed) -> Outcome:
        try:
            return await self._session.send(msg)
        except DeliveryUnknown as unknown:
            return unknown
        except (TimeoutError, aiosmtplib.SMTPException, OSError) as exc:
            outcome = classify(exc)
            if isinstance(outcome, TemporaryDeliveryError) and (
                outcome.slow_down or outcome.out_of_step
            ):
                # Too many connections: hold fewer. Out of step: never reuse the session.
                await self._session.drop()
            return outcome
