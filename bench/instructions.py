"""`python -m bench.instructions [N]`: instructions per reminder delivered, counted by valgrind.

Timings on this shared machine drift by up to a third within minutes; instruction counts do
not. This runs an in-process reminder batch of N (private Redis, the sink, Service.deliver in
chunks as the worker runs it, INFO logging to a file) twice under `valgrind --tool=callgrind`:
once with the delivery and once without it. The difference divided by the messages is what
delivering one reminder costs in instructions: compare two commits by running this on each.
It takes a minute or two (valgrind runs Python about 50 times slower).

`python -m bench.instructions --inner deliver|skip N` is the measured program itself.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import redis

from bench.e2e import EARLY, REMINDER_AT, registrations
from bench.hotspots import deliver_in_chunks, settings_for, worker_like_logging
from bench.sinks import start_sink
from devtools.localredis import PrivateRedis
from notifier.service import Service
from tests.events import reminder

WARM = 20  # delivered in both runs: connections and caches are set up before the count


def inner(deliver: bool, n: int) -> None:
    with tempfile.TemporaryDirectory(prefix="bench-ir-") as tmp:
        work = Path(tmp)
        sink, _ = start_sink("auto", work)
        server = PrivateRedis(folder=work).start()
        try:
            settings = settings_for(server.url, sink.port)
            svc = Service(settings, redis.Redis.from_url(server.url))
            with worker_like_logging(work / "notifier.log"):
                for event in registrations(n, "ir", EARLY):
                    svc.ingest(event)
                keys = svc.ingest(reminder("ir-reminder", "ir", at=REMINDER_AT))
                deliver_in_chunks(svc, keys[:WARM], settings.chunk_size)
                if deliver:
                    deliver_in_chunks(svc, keys[WARM:], settings.chunk_size)
            svc.close()
        finally:
            server.stop()
            sink.stop()


_COLLECTED = re.compile(r"Collected : (\d+)")


def counted(mode: str, n: int) -> int:
    env = {**os.environ, "PYTHONHASHSEED": "0"}  # the same hashing, the same work
    done = subprocess.run(
        [
            "valgrind",
            "--tool=callgrind",
            "--callgrind-out-file=/dev/null",
            sys.executable,
            "-m",
            "bench.instructions",
            "--inner",
            mode,
            str(n),
        ],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    found = _COLLECTED.search(done.stderr)
    if found is None:
        raise SystemExit(f"valgrind gave no count:\n{done.stderr[-2000:]}")
    return int(found.group(1))


def main(argv: list[str]) -> int:
    if argv[:1] == ["--inner"]:
        inner(argv[1] == "deliver", int(argv[2]))
        return 0
    if shutil.which("valgrind") is None:
        print("valgrind is needed (Debian package valgrind)")
        return 1
    n = int(argv[0]) if argv else 220
    with_deliver, without = counted("deliver", n), counted("skip", n)
    print(f"{(with_deliver - without) / (n - WARM):,.0f} instructions per reminder delivered")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
