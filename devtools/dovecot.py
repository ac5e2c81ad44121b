"""A private Dovecot for the tests: a real IMAP server with a bounce mailbox to poll.

One instance has a folder of its own under /tmp (config, certificate, passwd file, maildir,
log, runtime files), listens on free loopback ports for IMAPS (implicit TLS) and for IMAP with
STARTTLS, and knows one user, whose password is checked against a passwd-file. Its server
certificate comes from a trustme CA the caller passes in; the client verifies it with that
CA's PEM (`ca_file`), as a deployment would with NOTIFIER's CA-file setting.

Nothing here touches /etc/dovecot or Debian's own instance: `dovecot -F -c CONF` runs an
independent master with its own base_dir. It needs root (Dovecot binds as root and drops to
the login and mail users) and Debian's `dovecot-imapd`, which also creates the `dovecot` and
`dovenull` users.
"""

from __future__ import annotations

import contextlib
import imaplib
import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from devtools.sink import free_port

DOVECOT = "/usr/sbin/dovecot"
PACKAGE = "dovecot-imapd"
# The mail user: its files under the maildir belong to it. `nobody` exists on every Debian.
MAIL_USER = "nobody"
MAIL_GROUP = "nogroup"
INTERNAL_USER = "dovecot"

CONF = """\
base_dir = {root}/run
state_dir = {root}/state
log_path = {root}/dovecot.log
info_log_path = {root}/dovecot.log
protocols = imap
listen = 127.0.0.1
# Never the system's users: one passwd-file user, mail owned by `{user}`.
passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%u {root}/passwd
}}
userdb {{
  driver = static
  args = uid={user} gid={group} home={root}/home/%u
}}
mail_location = maildir:~/Maildir
mail_privileged_group =
first_valid_uid = 1
# TLS before any password: AUTH is refused on the plain port until STARTTLS.
ssl = required
ssl_cert = <{root}/server.pem
ssl_key = <{root}/server.key
disable_plaintext_auth = yes
auth_mechanisms = plain login
auth_failure_delay = 0
default_internal_user = {internal}
default_login_user = dovenull
login_trusted_networks =
service imap-login {{
  inet_listener imap {{
    address = 127.0.0.1
    port = {starttls_port}
  }}
  inet_listener imaps {{
    address = 127.0.0.1
    port = {imaps_port}
    ssl = yes
  }}
}}
service anvil {{
  # No chroot: the base_dir is ours, not Debian's prepared /run/dovecot.
  chroot =
}}
service imap-login {{
  chroot =
}}
"""


def installed() -> bool:
    return Path(DOVECOT).exists()


def install() -> bool:
    """True once Dovecot is there, after installing Debian's package when this user may
    (root with apt-get), as the fault suite does for Postfix's smtp-sink."""
    if installed():
        return True
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        return False
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    apt = ["apt-get", "install", "-y", "-q", "--no-install-recommends"]
    apt += ["-o", "DPkg::Lock::Timeout=300", PACKAGE]
    for step in (apt, ["apt-get", "update", "-q"], apt):
        subprocess.run(step, env=env, check=False, capture_output=True, timeout=600)
        if installed():
            return True
    return False


class PrivateDovecot:
    """A Dovecot instance of our own with one user, started and stopped by the caller.

    cert_pem / key_pem: the server's certificate chain and key (PEM bytes), e.g. from
      `trustme.CA().issue_cert("127.0.0.1", "localhost")`.
    ca_pem: the PEM of the CA that issued them: written to `self.ca_file` for clients.
    """

    def __init__(
        self,
        cert_pem: bytes,
        key_pem: bytes,
        ca_pem: bytes,
        *,
        user: str = "bounces@kl.dk",
        password: str = "hemmeligt-imap-kodeord",
    ) -> None:
        self.user = user
        self.password = password
        self.imaps_port = free_port()
        self.starttls_port = free_port()
        # Not pytest's tmp_path: the mail processes run as `nobody` and must enter the home.
        self.root = Path(tempfile.mkdtemp(prefix="notifier-dovecot-"))
        self.root.chmod(0o755)
        self.conf = self.root / "dovecot.conf"
        self.log_file = self.root / "dovecot.log"
        self.ca_file = self.root / "ca.pem"
        self._write(cert_pem, key_pem, ca_pem)
        self.proc: subprocess.Popen[bytes] | None = None

    def _write(self, cert_pem: bytes, key_pem: bytes, ca_pem: bytes) -> None:
        (self.root / "server.pem").write_bytes(cert_pem)
        key = self.root / "server.key"
        key.write_bytes(key_pem)
        key.chmod(0o600)
        self.ca_file.write_bytes(ca_pem)
        passwd = self.root / "passwd"
        passwd.write_text(f"{self.user}:{{PLAIN}}{self.password}::::::\n")
        # Read by the auth process, which runs as the internal user, never as root.
        passwd.chmod(0o600)
        shutil.chown(passwd, user=INTERNAL_USER)
        home = self.root / "home"
        home.mkdir(mode=0o755)
        (home / self.user).mkdir(mode=0o700)
        shutil.chown(home / self.user, user=MAIL_USER, group=MAIL_GROUP)
        self.conf.write_text(
            CONF.format(
                root=self.root,
                user=MAIL_USER,
                group=MAIL_GROUP,
                internal=INTERNAL_USER,
                imaps_port=self.imaps_port,
                starttls_port=self.starttls_port,
            )
        )

    def start(self, timeout: float = 30.0) -> PrivateDovecot:
        # Foreground (-F) in a session of its own: the process group is ours to end.
        self.proc = subprocess.Popen(
            [DOVECOT, "-F", "-c", str(self.conf)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout
        while not (self._greets() and self._listening(self.starttls_port)):
            if self.proc.poll() is not None:
                err = self.proc.stderr.read().decode() if self.proc.stderr else ""
                raise RuntimeError(
                    f"dovecot exited with {self.proc.returncode}:\n{err}{self.log()}"
                )
            if time.monotonic() > deadline:
                raise TimeoutError(f"Dovecot is not listening:\n{self.log()}")
            time.sleep(0.02)
        return self

    def _greets(self) -> bool:
        """Ready: the port is open and a TLS session gets a greeting, which Dovecot sends
        only once its login and auth processes run (a SIGTERM before that takes 6 s)."""
        if not self._listening(self.imaps_port):
            return False
        context = ssl.create_default_context(cafile=str(self.ca_file))
        try:
            _FromAddress("127.0.0.1", self.imaps_port, ssl_context=context, timeout=5).shutdown()
        except (OSError, imaplib.IMAP4.error):
            return False
        return True

    @staticmethod
    def _listening(port: int) -> bool:
        with socket.socket() as probe:
            probe.settimeout(0.5)
            return probe.connect_ex(("127.0.0.1", port)) == 0

    def log(self) -> str:
        if not self.log_file.exists():
            return ""
        return self.log_file.read_text(encoding="utf-8", errors="replace")

    def stop(self, grace: float = 2.0) -> None:
        """SIGTERM to the master, as `doveadm stop` sends (which then waits in steps of
        seconds: 3 s a test); the master ends its children before it exits, normally within
        about a second. One stopped just after its start waits 5 s on a stats handshake, so
        after `grace` the rest of the process group (ours, nothing else) gets SIGKILL;
        every APPEND was complete before its reply, so nothing the tests rely on is lost."""
        if self.proc is None:
            return
        self.proc.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(grace)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)
        if self.proc.stderr:
            self.proc.stderr.close()
        self.proc = None

    def cleanup(self) -> None:
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)

    # --- A client of its own, for putting mail in and looking at folders ---

    def client(self) -> imaplib.IMAP4_SSL:
        """A logged-in IMAPS session that trusts only our CA. It connects from 127.0.0.2:
        Dovecot delays every login from an address that just failed one (seconds, doubling),
        and a test's deliberate wrong password from 127.0.0.1 must not slow the checks."""
        context = ssl.create_default_context(cafile=str(self.ca_file))
        imap = _FromAddress("127.0.0.1", self.imaps_port, ssl_context=context, timeout=10)
        imap.login(self.user, self.password)
        return imap

    def append(self, messages: Iterable[bytes], folder: str = "INBOX") -> int:
        """APPEND raw messages, in this order (so in UID order), over one session. imaplib
        turns bare LF into CRLF; pass CRLF messages to get the very same bytes back."""
        count = 0
        with self.client() as imap:
            for raw in messages:
                typ, data = imap.append(_quoted(folder), None, None, raw)
                if typ != "OK":
                    raise RuntimeError(f"APPEND to {folder} failed: {data!r}")
                count += 1
        return count

    def folders(self) -> list[str]:
        with self.client() as imap:
            typ, data = imap.list()
            assert typ == "OK", data
            return [_folder_name(line) for line in data if isinstance(line, bytes)]

    def messages(self, folder: str = "INBOX") -> list[bytes]:
        """The raw messages in a folder, in UID order (read-only: flags stay as they were);
        [] when the folder does not exist."""
        with self.client() as imap:
            typ, _ = imap.select(_quoted(folder), readonly=True)
            if typ != "OK":
                return []
            typ, data = imap.uid("FETCH", "1:*", "(BODY.PEEK[])")
            assert typ == "OK", data
            return [item[1] for item in data if isinstance(item, tuple)]

    def count(self, folder: str = "INBOX") -> int:
        """How many messages a folder holds (0 when it does not exist)."""
        with self.client() as imap:
            typ, data = imap.status(_quoted(folder), "(MESSAGES)")
            if typ != "OK":
                return 0
            found = re.search(rb"MESSAGES (\d+)", _first(data))
            return int(found.group(1)) if found else 0


class _FromAddress(imaplib.IMAP4_SSL):
    SOURCE = "127.0.0.2"

    def _create_socket(self, timeout: float | None) -> socket.socket:
        plain = socket.create_connection(
            (self.host, self.port), timeout, source_address=(self.SOURCE, 0)
        )
        wrapped: socket.socket = self.ssl_context.wrap_socket(plain, server_hostname=self.host)
        return wrapped


def _quoted(folder: str) -> str:
    return '"' + folder.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _first(data: list[Any]) -> bytes:
    item = data[0] if data else b""
    return item if isinstance(item, bytes) else b""


def _folder_name(line: bytes) -> str:
    """The name in a LIST reply line: `(\\HasNoChildren) "." "INBOX"` -> INBOX."""
    name = line.decode().rsplit(" ", 1)[-1]
    return name.strip('"')
