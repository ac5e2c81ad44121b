"""Transport security against a real aiosmtpd relay with certificates from a trustme CA:
certificates are verified, STARTTLS is never skipped, AUTH only over TLS, and the password
never shows up in errors, settings, logs or the outbox."""

from __future__ import annotations

import asyncio
import base64
import ssl
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import pytest
import redis
import trustme
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session
from kombu.connection import Connection

from devtools.sink import free_port
from notifier.domain.notice import Kind
from notifier.errors import DeliveryError, TemporaryDeliveryError
from notifier.loading import Conferences, renderer
from notifier.mail.compose import compose
from notifier.mail.samples import SAMPLE_NOW, sample_notice
from notifier.service import Service
from notifier.settings import Settings, load_settings
from notifier.smtp import Mailer
from notifier.store.outbox import Record
from tests.conftest import ROOT
from tests.events import CONFERENCE, METTE, created

pytestmark = pytest.mark.integration

USER = "notifier"
PASSWORD = "Kodeord-æøå-7f3Q!x"  # distinctive, so that any leak is found
Mode = Literal["starttls", "tls", "plain"]


@dataclass(frozen=True)
class Delivered:
    recipients: tuple[str, ...]
    over_tls: bool


class Relay:
    """An SMTP relay on 127.0.0.1: STARTTLS (required before mail), implicit TLS, or plain;
    with auth, every MAIL needs a login (and a login needs TLS, unless the relay is plain)."""

    def __init__(
        self, cert: trustme.LeafCert, mode: Mode, *, auth: bool = False, linger: bool = False
    ) -> None:
        server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        cert.configure_cert(server)
        self.port = free_port()
        self.received: list[Delivered] = []
        self.logins: list[tuple[str, bool]] = []  # (login, password right)
        kwargs: dict[str, Any] = {}
        if mode == "tls":
            kwargs["ssl_context"] = server
        elif mode == "starttls":
            kwargs.update(tls_context=server, require_starttls=True)
        if auth:
            kwargs.update(
                authenticator=self._authenticate,
                auth_required=True,
                # aiosmtpd counts only STARTTLS as TLS; implicit TLS is TLS from the start.
                auth_require_tls=mode == "starttls",
            )
        kind = _LingeringController if linger else Controller
        self.controller = kind(self, hostname="127.0.0.1", port=self.port, **kwargs)
        self.mode = mode

    def _authenticate(
        self, server: SMTP, session: Session, envelope: Envelope, mechanism: str, data: Any
    ) -> AuthResult:
        assert isinstance(data, LoginPassword)
        right = data.login == USER.encode() and data.password == PASSWORD.encode()
        self.logins.append((data.login.decode(), right))
        return AuthResult(success=right, handled=False)

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        over_tls = self.mode == "tls" or session.ssl is not None
        self.received.append(Delivered(tuple(envelope.rcpt_tos), over_tls))
        return "250 2.0.0 Ok: queued"

    def __enter__(self) -> Relay:
        self.controller.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.controller.stop()


class _Lingering(SMTP):
    """Answers QUIT, then is busy for a while (as a loaded relay is) before it answers the
    client's TLS close_notify or closes the connection itself."""

    async def smtp_QUIT(self, arg: str) -> None:
        await self.push("221 Bye")
        await asyncio.sleep(0.05)  # the reply is on its way
        time.sleep(0.5)  # blocks this relay's loop: the client must close on its own
        await asyncio.sleep(0.5)
        if self.transport is not None:
            self.transport.close()


class _LingeringController(Controller):
    def factory(self) -> SMTP:
        return _Lingering(self.handler, **self.SMTP_kwargs)


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture(scope="module")
def cert(ca: trustme.CA) -> trustme.LeafCert:
    return ca.issue_cert("127.0.0.1", "localhost")


@pytest.fixture
def trusting(ca: trustme.CA) -> ssl.SSLContext:
    """A client context that trusts the test CA and nothing else; hostnames are checked."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ca.configure_trust(context)
    return context


@pytest.fixture
def send(
    make_settings: Callable[..., Settings], redis_client: redis.Redis
) -> Callable[..., Record]:
    """Ingest one registration, deliver it through a Mailer with the given TLS context, and
    close the kept sessions (while the relay still runs); the message's outbox record."""
    count = iter(range(1, 100))

    def run(relay: Relay, tls: ssl.SSLContext | None, **overrides: str) -> Record:
        mode = "tls" if relay.mode == "tls" else "starttls"
        settings = make_settings(smtp_port=str(relay.port), smtp_tls=mode, **overrides)
        svc = Service(
            settings,
            redis_client,
            mailer=lambda: Mailer(settings, tls_context=tls),
            clock=lambda: datetime(2024, 2, 14, 9, 0, tzinfo=UTC),
            rand=lambda: 0.0,
        )
        n = next(count)
        try:
            svc.deliver(svc.ingest(created(f"evt-{n}", f"REG-{n}", METTE)))
        finally:
            svc.close()
        record = svc.outbox.get(f"evt-{n}:confirmation")
        assert record is not None
        return record

    return run


def test_starttls_with_an_untrusted_certificate_is_refused(
    cert: trustme.LeafCert, send: Callable[..., Record]
) -> None:
    with Relay(cert, "starttls") as relay:
        record = send(relay, None)  # the system's trust store: the test CA is not in it
    assert record.state == "retrying"
    assert "certificate verify failed" in record.last_reply.lower()
    assert relay.received == []


def test_starttls_delivers_when_the_ca_is_trusted(
    cert: trustme.LeafCert, send: Callable[..., Record], trusting: ssl.SSLContext
) -> None:
    with Relay(cert, "starttls") as relay:
        record = send(relay, trusting)
    assert (record.state, record.last_reply) == ("sent", "250 2.0.0 Ok: queued")
    assert relay.received == [Delivered((METTE["email"],), over_tls=True)]


def test_the_ca_file_setting_is_trusted(
    ca: trustme.CA, cert: trustme.LeafCert, send: Callable[..., Record], tmp_path: Path
) -> None:
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    with Relay(cert, "starttls") as relay:
        record = send(relay, None, smtp_ca_file=str(ca_file))
    assert record.state == "sent"
    assert relay.received == [Delivered((METTE["email"],), over_tls=True)]


def test_a_certificate_for_another_host_is_refused(
    ca: trustme.CA, send: Callable[..., Record], trusting: ssl.SSLContext
) -> None:
    elsewhere = ca.issue_cert("mail.example.org")
    with Relay(elsewhere, "starttls") as relay:
        record = send(relay, trusting)
    assert record.state == "retrying"
    assert "certificate" in record.last_reply.lower()
    assert "127.0.0.1" in record.last_reply  # hostname mismatch, named
    assert relay.received == []


def test_implicit_tls(
    cert: trustme.LeafCert, send: Callable[..., Record], trusting: ssl.SSLContext
) -> None:
    with Relay(cert, "tls") as relay:
        refused = send(relay, None)
        delivered = send(relay, trusting)
    assert refused.state == "retrying"
    assert "certificate verify failed" in refused.last_reply.lower()
    assert delivered.state == "sent"
    assert relay.received == [Delivered((METTE["email"],), over_tls=True)]


@pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS:UserWarning")
def test_starttls_is_never_skipped_nor_a_password_sent_in_the_clear(
    cert: trustme.LeafCert, send: Callable[..., Record], trusting: ssl.SSLContext
) -> None:
    # A relay (or a man in the middle) that offers no STARTTLS but would take AUTH in clear.
    with Relay(cert, "plain", auth=True) as relay:
        record = send(relay, trusting, smtp_username=USER, smtp_password=PASSWORD)
    assert record.state == "retrying"
    assert "starttls" in record.last_reply.lower()
    assert relay.logins == []
    assert relay.received == []
    assert PASSWORD not in record.last_reply


def test_auth_over_tls(
    cert: trustme.LeafCert,
    send: Callable[..., Record],
    trusting: ssl.SSLContext,
    caplog: pytest.LogCaptureFixture,
) -> None:
    with Relay(cert, "starttls", auth=True) as relay:
        wrong = send(relay, trusting, smtp_username=USER, smtp_password=PASSWORD + "x")
        right = send(relay, trusting, smtp_username=USER, smtp_password=PASSWORD)
    assert wrong.state == "retrying"  # an operator fixes the password; then it goes out
    assert "535" in wrong.last_reply
    assert right.state == "sent"
    # aiosmtplib tries each mechanism the relay offers before it gives up.
    assert relay.logins[-1] == (USER, True)
    assert relay.logins[:-1] and not any(ok for _, ok in relay.logins[:-1])
    assert relay.received == [Delivered((METTE["email"],), over_tls=True)]
    for leak in secrets(PASSWORD) + secrets(PASSWORD + "x"):
        assert leak not in wrong.last_reply and leak not in right.last_reply
        assert leak not in caplog.text


def test_auth_with_the_password_from_a_file(
    cert: trustme.LeafCert,
    send: Callable[..., Record],
    trusting: ssl.SSLContext,
    make_settings: Callable[..., Settings],
    tmp_path: Path,
) -> None:
    secret = tmp_path / "smtp-password"
    secret.write_text(PASSWORD + "\n", encoding="utf-8")
    with Relay(cert, "starttls", auth=True) as relay:
        record = send(relay, trusting, smtp_username=USER, smtp_password_file=str(secret))
    assert record.state == "sent"
    assert relay.logins == [(USER, True)]
    settings = make_settings(smtp_username=USER, smtp_password_file=str(secret))
    assert settings.smtp_secret() == PASSWORD
    for leak in secrets(PASSWORD):
        assert leak not in repr(settings) and leak not in str(settings)
        assert leak not in settings.model_dump_json()


def test_the_password_is_not_in_errors_or_settings(
    cert: trustme.LeafCert, make_settings: Callable[..., Settings], trusting: ssl.SSLContext
) -> None:
    with Relay(cert, "starttls", auth=True) as relay:
        settings = make_settings(
            smtp_port=str(relay.port),
            smtp_tls="starttls",
            smtp_username=USER,
            smtp_password=PASSWORD + "x",
        )
        mailer = Mailer(settings, tls_context=trusting)
        try:
            conf = Conferences(settings.conferences_dir).get(CONFERENCE)
            notice = sample_notice(Kind.CONFIRMATION, conf)
            msg = compose(notice, conf, renderer(settings.templates_dir), now=SAMPLE_NOW)
            [outcome] = mailer.send_all([msg])
        finally:
            mailer.close()
    assert isinstance(outcome, TemporaryDeliveryError)
    assert isinstance(outcome, DeliveryError) and outcome.smtp_code == 535
    shown = [str(outcome), repr(outcome), outcome.reply, repr(settings), str(settings)]
    for leak in secrets(PASSWORD + "x"):
        assert not any(leak in text for text in shown), leak


def secrets(password: str) -> list[str]:
    """The password and the forms AUTH sends it in (PLAIN and LOGIN base64)."""
    plain = base64.b64encode(f"\0{USER}\0{password}".encode()).decode()
    login = base64.b64encode(password.encode()).decode()
    return [password, plain, login]


def test_tls_is_the_default_and_none_only_when_set() -> None:
    assert load_settings({}).smtp_tls == "starttls"
    assert load_settings({"NOTIFIER_SMTP_TLS": "none"}).smtp_tls == "none"


def test_a_rediss_url_verifies_the_certificate_in_broker_and_store() -> None:
    settings = load_settings({"NOTIFIER_BROKER_URL": "rediss://:hemmeligt@redis.kl.local:6380/0"})
    # Without the added ssl_cert_reqs, kombu would connect with CERT_NONE.
    broker = Connection(settings.broker_url)  # type: ignore[no-untyped-call]
    assert broker.ssl == {"ssl_cert_reqs": ssl.CERT_REQUIRED}
    store = redis.Redis.from_url(settings.redis_url).connection_pool.connection_kwargs
    assert (store["ssl_cert_reqs"], store["password"]) == ("required", "hemmeligt")
    private_ca = load_settings(
        {"NOTIFIER_REDIS_URL": "rediss://redis.kl.local:6380/1?ssl_ca_certs=/etc/kl/ca.pem"}
    )
    assert private_ca.redis_url.endswith("?ssl_ca_certs=/etc/kl/ca.pem&ssl_cert_reqs=required")
    assert "hemmeligt" not in repr(settings) and "hemmeligt" not in str(settings)


CLOSE_SCRIPT = """
import ssl, sys
from notifier.mail.compose import compose
from notifier.loading import Conferences, renderer
from notifier.domain.notice import Kind
from notifier.mail.samples import SAMPLE_NOW, sample_notice
from notifier.settings import load_settings
from notifier.smtp import Mailer, Sent

settings = load_settings({"NOTIFIER_SMTP_PORT": sys.argv[1], "NOTIFIER_SMTP_TLS": "starttls"})
context = ssl.create_default_context(cafile=sys.argv[2])
mailer = Mailer(settings, tls_context=context)
conf = Conferences(settings.conferences_dir).get("digitaliseringstraef-2024")
notice = sample_notice(Kind.CONFIRMATION, conf)
msg = compose(notice, conf, renderer(settings.templates_dir), now=SAMPLE_NOW)
assert all(isinstance(o, Sent) for o in mailer.send_all([msg]))
sockets = [s.smtp.get_transport_info("socket") for s in mailer.sessions if s.smtp is not None]
mailer.close()
print(sum(sock.fileno() != -1 for sock in sockets))
"""


def test_closing_the_mailer_closes_its_tls_socket(
    ca: trustme.CA, cert: trustme.LeafCert, tmp_path: Path
) -> None:
    # In a process of its own: a socket left open there cannot warn in a later test here.
    cafile = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(cafile))
    with Relay(cert, "starttls", linger=True) as relay:
        done = subprocess.run(
            [sys.executable, "-c", CLOSE_SCRIPT, str(relay.port), str(cafile)],
            capture_output=True,
            text=True,
            timeout=60,
            cwd=ROOT,
            check=True,
        )
    assert done.stdout.split() == ["0"], done.stdout + done.stderr
