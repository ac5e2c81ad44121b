"""Starting a real Celery worker as a subprocess, for the demo, the tests and the benchmark."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

from notifier.tasks import QUEUE

ROOT = Path(__file__).resolve().parent.parent


def start_worker(
    env: Mapping[str, str], log: Path, *, name: str, concurrency: int = 2
) -> subprocess.Popen[bytes]:
    """`celery -A worker worker -Q notifier` as in production, in its own process group (so
    that a test can SIGKILL it with its pool children), logging INFO to `log`."""
    args = [
        sys.executable,
        "-m",
        "celery",
        "-A",
        "worker",
        "worker",
        "-Q",
        QUEUE,
        "-c",
        str(concurrency),
        "--without-gossip",
        "--without-mingle",
        "-l",
        "INFO",
        f"--logfile={log}",
        "-n",
        f"{name}@%h",
    ]
    return subprocess.Popen(
        args,
        cwd=ROOT,
        env=dict(env),
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.STDOUT,
    )
