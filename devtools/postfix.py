"""A private Postfix for the tests: a real MTA that says 250, relays, and bounces later.

One instance has a folder of its own under /tmp (config, queue, data, log), listens on a free
loopback port, relays everything to one loopback SMTP server (the test's sink) and delivers
mail for the bounce domains through a pipe transport to a command the test chooses. So when
the sink answers 550, Postfix writes a real RFC 3464 DSN to the envelope sender, and that DSN
reaches the command as an MTA's pipe or alias would hand it over.

Nothing here touches /etc/postfix or Debian's own instance: `postfix -c DIR` runs a second,
independent master with its own queue. It needs root (Postfix drops to `postfix` itself) and
Debian's `postfix` package (>= 3.4 for `maillog_file`; Debian 12 ships 3.7).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shlex
import shutil
import signal
import socket
import socketserver
import subprocess
import tempfile
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from devtools.sink import free_port

POSTFIX = "/usr/sbin/postfix"
POSTQUEUE = "/usr/sbin/postqueue"
PIPE_SERVICE = "dsnpipe"

# Services a relay-only instance needs. chroot is off ("n") everywhere: a chroot would need
# copies of /etc files in the queue folder, and nothing here is exposed beyond loopback.
# There is no `local` or `virtual` service: no mail is ever delivered to a user of this host.
MASTER_CF = """\
{listen} inet n - n - - smtpd
pickup    unix n - n 60 1 pickup
cleanup   unix n - n - 0 cleanup
qmgr      unix n - n 300 1 qmgr
rewrite   unix - - n - - trivial-rewrite
bounce    unix - - n - 0 bounce
defer     unix - - n - 0 bounce
trace     unix - - n - 0 bounce
verify    unix - - n - 1 verify
flush     unix n - n 1000? 0 flush
proxymap  unix - - n - - proxymap
smtp      unix - - n - - smtp
relay     unix - - n - - smtp
showq     unix n - n - - showq
error     unix - - n - - error
retry     unix - - n - - error
discard   unix - - n - - discard
anvil     unix - - n - 1 anvil
scache    unix - - n - 1 scache
postlog   unix-dgram n - n - 1 postlogd
{pipe} unix - n n - - pipe
  {options}
"""


def version() -> str:
    out = subprocess.run(
        ["postconf", "-d", "-h", "mail_version"], capture_output=True, text=True, check=False
    )
    return out.stdout.strip()


class PrivatePostfix:
    """A Postfix instance of our own, started and stopped by the caller.

    relay_port: the loopback SMTP server every message is relayed to.
    pipe_argv: the command the pipe transport runs (by default one that saves each message
      as a file in `self.drops`, see `dropped`) for mail to `bounce_domains`, one message
      on its stdin; it runs as `pipe_user` with `pipe_env` set (through a wrapper script, so
      that values need no quoting for master.cf). Its exit status counts as sysexits:
      0 delivered, 75 try again later, anything else a bounce of the bounce.
    pipe_args: Postfix macros appended to the command line, e.g. ("${sender}", "${recipient}").
    bridge: run the command in this process (as root) instead of as `pipe_user`; the pipe
      then runs a small client that hands it the message and returns its exit status and
      output. For commands the pipe's user cannot run, such as a virtualenv under /root.
    settings: main.cf parameters on top of the defaults below, e.g. to make a 4xx from the
      relay turn into a DSN quickly ({"maximal_queue_lifetime": "4s"}) or to have Postfix send
      "delayed" DSNs ({"delay_warning_time": "1s"}, with short backoff times).
    """

    def __init__(
        self,
        relay_port: int,
        pipe_argv: Sequence[str] | None = None,
        *,
        bounce_domains: Sequence[str] = ("kl.dk",),
        pipe_env: Mapping[str, str] | None = None,
        pipe_args: Sequence[str] = (),
        pipe_user: str = "nobody",
        pipe_flags: str = "R",
        settings: Mapping[str, str] | None = None,
        port: int | None = None,
        bridge: bool = False,
    ) -> None:
        self.relay_port = relay_port
        self.bounce_domains = list(bounce_domains)
        self.pipe_env = dict(pipe_env or {})
        self.pipe_args = list(pipe_args)
        self.pipe_user = pipe_user
        self.pipe_flags = pipe_flags
        self.settings = dict(settings or {})
        self.port = port or free_port()
        # Not pytest's tmp_path: Postfix's daemons run as `postfix` and the pipe as `nobody`,
        # and neither may enter a 0700 folder of root's.
        self.root = Path(tempfile.mkdtemp(prefix="notifier-postfix-"))
        self.root.chmod(0o755)
        self.config = self.root / "conf"
        self.queue = self.root / "queue"
        self.maillog = self.root / "maillog"
        self.wrapper = self.root / "pipe-command"
        # A folder the pipe command may write to, named in its environment as
        # PRIVATE_POSTFIX_DROPS; the default command saves each message there.
        self.drops = self.root / "drops"
        self.drops.mkdir()
        shutil.chown(self.drops, user=self.pipe_user)
        self.pipe_argv = list(pipe_argv) if pipe_argv else [str(self._file_drop())]
        self.bridge = Bridge(self) if bridge else None

    def main_cf(self) -> dict[str, str]:
        domains = " ".join(f"{d}={PIPE_SERVICE}:" for d in self.bounce_domains)
        return {
            "compatibility_level": "3.6",
            "queue_directory": str(self.queue),
            "data_directory": str(self.root / "data"),
            "mail_owner": "postfix",
            "setgid_group": "postdrop",
            "maillog_file": str(self.maillog),
            "maillog_file_prefixes": str(self.root),
            "myhostname": "mta.notifier.test",
            "mydomain": "notifier.test",
            "myorigin": "$myhostname",
            # Nothing is local: every domain is relayed, except the bounce domains (below).
            "mydestination": "",
            "local_recipient_maps": "",
            "local_transport": "error:5.1.1 no local delivery here",
            "alias_maps": "",
            "alias_database": "",
            "relay_domains": "",
            "inet_interfaces": "127.0.0.1",
            "inet_protocols": "ipv4",
            "mynetworks": "127.0.0.0/8",
            "smtpd_relay_restrictions": "permit_mynetworks, reject",
            "smtpd_peername_lookup": "no",
            # Brackets and an IP: no MX, no A lookup; and no DNS at all should one slip in.
            "relayhost": f"[127.0.0.1]:{self.relay_port}",
            "smtp_dns_support_level": "disabled",
            "smtp_host_lookup": "native",
            "smtp_tls_security_level": "none",
            "smtpd_tls_security_level": "none",
            "transport_maps": "inline:{ " + domains + " }" if domains else "",
            f"{PIPE_SERVICE}_destination_recipient_limit": "1",
            f"{PIPE_SERVICE}_time_limit": "60s",
            # No postmaster notices: they would be relayed to the sink and confuse its count.
            "notify_classes": "",
            "biff": "no",
            "append_dot_mydomain": "no",
            # A 4xx from the relay stays queued (Postfix's own behaviour) but is retried soon
            # when the test flushes or waits; tests that want a quick DSN shorten the lifetimes.
            "queue_run_delay": "1s",
            "minimal_backoff_time": "1s",
            "maximal_backoff_time": "2s",
            **self.settings,
        }

    def _write_config(self) -> None:
        self.config.mkdir(mode=0o755)
        # Postfix wants the queue's top folder there, owned by root; it makes the rest.
        self.queue.mkdir(mode=0o755)
        main = "".join(f"{k} = {v}\n" for k, v in self.main_cf().items())
        (self.config / "main.cf").write_text(main)
        self._write_wrapper()
        options = [f"flags={self.pipe_flags}"] if self.pipe_flags else []
        # null_sender= : the standard <> in Return-Path and ${sender}, not "MAILER-DAEMON".
        options += [
            "null_sender=",
            f"user={self.pipe_user}",
            "argv=" + str(self.wrapper),
            *self.pipe_args,
        ]
        master = MASTER_CF.format(
            listen=f"127.0.0.1:{self.port}", pipe=PIPE_SERVICE, options=" ".join(options)
        )
        (self.config / "master.cf").write_text(master)

    def _write_wrapper(self) -> None:
        """The pipe runs this; it sets the command's environment (pipe(8) passes only a
        short fixed list of variables) and then becomes the command."""
        lines = ["#!/bin/sh"]
        if self.bridge is not None:  # the environment is set on our side of the bridge
            lines.append("exec " + shlex.join(self.bridge.client_argv()) + ' "$@"')
        else:
            lines += [f"export {k}={shlex.quote(v)}" for k, v in self.command_env().items()]
            lines.append("exec " + shlex.join(self.pipe_argv) + ' "$@"')
        self.wrapper.write_text("\n".join(lines) + "\n")
        # Readable by the pipe's user only, as the environment may carry a secret.
        self.wrapper.chmod(0o700)
        shutil.chown(self.wrapper, user=self.pipe_user)

    def command_env(self) -> dict[str, str]:
        return {"PRIVATE_POSTFIX_DROPS": str(self.drops), **self.pipe_env}

    def _postfix(self, *args: str, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [POSTFIX, "-c", str(self.config), *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def start(self, timeout: float = 30.0) -> PrivatePostfix:
        if self.bridge is not None:
            self.bridge.start()
        self._write_config()
        # `start` creates the queue folders with their owners (post-install create-missing).
        done = self._postfix("start")
        if done.returncode != 0:
            raise RuntimeError(f"postfix start failed:\n{done.stdout}{done.stderr}{self.log()}")
        deadline = time.monotonic() + timeout
        while not self._listening():
            if time.monotonic() > deadline:
                raise TimeoutError(f"Postfix is not listening on {self.port}:\n{self.log()}")
            time.sleep(0.02)
        return self

    def _listening(self) -> bool:
        with socket.socket() as probe:
            probe.settimeout(0.5)
            return probe.connect_ex(("127.0.0.1", self.port)) == 0

    def log(self) -> str:
        if not self.maillog.exists():
            return ""
        return self.maillog.read_text(encoding="utf-8", errors="replace")

    def log_matches(self, pattern: str) -> list[re.Match[str]]:
        return list(re.finditer(pattern, self.log(), re.MULTILINE))

    def queued(self) -> list[dict[str, Any]]:
        """What is still in the queue (postqueue -j: one JSON object per message)."""
        done = subprocess.run(
            [POSTQUEUE, "-c", str(self.config), "-j"],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        return [json.loads(line) for line in done.stdout.splitlines() if line.strip()]

    def flush(self) -> None:
        """Retry deferred mail now instead of at the next queue run."""
        subprocess.run(
            [POSTQUEUE, "-c", str(self.config), "-f"], capture_output=True, timeout=30, check=False
        )

    def _master_pid(self) -> int | None:
        pid_file = self.queue / "pid" / "master.pid"
        try:
            return int(pid_file.read_text().strip())
        except (OSError, ValueError):
            return None

    def _our_processes(self) -> list[int]:
        """Processes of this instance: the master exports MAIL_CONFIG=<our config> to every
        daemon it starts, so this finds ours and never Debian's or another test's."""
        marker = f"MAIL_CONFIG={self.config}".encode()
        found = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                environ = (entry / "environ").read_bytes().split(b"\0")
            except OSError:
                continue
            if marker in environ:
                found.append(int(entry.name))
        return found

    def stop(self, timeout: float = 15.0) -> None:
        if self.config.exists():
            self._postfix("stop", timeout=timeout)
        deadline = time.monotonic() + timeout
        while self._our_processes() and time.monotonic() < deadline:
            time.sleep(0.05)
        for pid in self._our_processes():  # leftovers of a master that did not stop in time
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        if self.bridge is not None:
            self.bridge.stop()

    def cleanup(self) -> None:
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)

    def _file_drop(self) -> Path:
        """The default pipe command: save each message as a new file in `self.drops` (written
        under a dot name, then renamed, so that a file that is there is complete)."""
        script = self.root / "file-drop"
        script.write_text(
            "#!/bin/sh\n"
            "set -e\n"
            'name="$(date +%s%N).$$"\n'
            'cat > "$PRIVATE_POSTFIX_DROPS/.$name"\n'
            'mv "$PRIVATE_POSTFIX_DROPS/.$name" "$PRIVATE_POSTFIX_DROPS/$name.eml"\n'
        )
        script.chmod(0o755)
        return script

    def dropped(self) -> list[bytes]:
        """The messages the default pipe command saved, oldest first."""
        return [f.read_bytes() for f in sorted(self.drops.glob("*.eml"))]


# The pipe's side of the bridge, run by Debian's python3 as the pipe's user: it sends its
# arguments (one JSON line) and the message, and exits as the command did.
BRIDGE_CLIENT = """\
import json, socket, sys
with socket.socket(socket.AF_UNIX) as s:
    s.connect(sys.argv[1])
    s.sendall(json.dumps(sys.argv[2:]).encode() + b"\\n" + sys.stdin.buffer.read())
    s.shutdown(socket.SHUT_WR)
    f = s.makefile("rb")
    status = int(f.readline())
    sys.stdout.buffer.write(f.read())
sys.exit(status)
"""
SYSTEM_PYTHON = "/usr/bin/python3"
EX_TEMPFAIL = 75


class Bridge:
    """A Unix socket served by a thread of ours, which runs the pipe command as root."""

    def __init__(self, postfix: PrivatePostfix) -> None:
        self.postfix = postfix
        self.socket_path = postfix.root / "bridge.sock"
        self.client = postfix.root / "bridge-client.py"
        self.server: socketserver.ThreadingUnixStreamServer | None = None

    def client_argv(self) -> list[str]:
        return [SYSTEM_PYTHON, "-I", "-S", str(self.client), str(self.socket_path)]

    def start(self) -> None:
        self.client.write_text(BRIDGE_CLIENT)
        self.client.chmod(0o644)
        bridge = self

        class Handler(socketserver.StreamRequestHandler):
            def handle(self) -> None:
                args = json.loads(self.rfile.readline())
                status, output = bridge.run(args, self.rfile.read())
                self.wfile.write(f"{status}\n".encode() + output)

        self.server = socketserver.ThreadingUnixStreamServer(str(self.socket_path), Handler)
        self.socket_path.chmod(0o666)  # the pipe's user connects to it
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def run(self, args: list[str], message: bytes) -> tuple[int, bytes]:
        env = {**os.environ, **self.postfix.command_env()}
        try:
            done = subprocess.run(
                [*self.postfix.pipe_argv, *args],
                input=message,
                env=env,
                capture_output=True,
                timeout=50,  # under the pipe's time limit, so that Postfix hears a 75
                check=False,
            )
        except subprocess.TimeoutExpired:
            return EX_TEMPFAIL, b"bridge: the command timed out"
        # Killed by a signal: try again later, as pipe(8) does for a command that dies so.
        status = done.returncode if done.returncode >= 0 else EX_TEMPFAIL
        return status, done.stdout + done.stderr

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.server = None
