"""The fallback sink: notifier's aiosmtpd Sink in a process of its own, stamping each accept.

Run as `python -m bench.aiosink PORT`. It prints `ready` once it listens and then answers one
command per line on stdin: `count` (messages accepted so far) and `times` (JSON: recipient ->
time of its last accept, epoch seconds). EOF on stdin stops it.

A separate process, because a sink in the measuring process would share its GIL and slow the
clients down as much as the server.
"""

from __future__ import annotations

import json
import sys
import threading
import time

from aiosmtpd.smtp import Envelope

from devtools.sink import Sink


class StampingSink(Sink):
    """Keeps only when each recipient's message was accepted, not the message itself, so that
    tens of thousands of mails do not grow the sink's memory."""

    def __init__(self, port: int) -> None:
        super().__init__(port=port)
        self.accepts: dict[str, float] = {}
        self.count = 0
        self._stamps = threading.Lock()

    def store(self, envelope: Envelope) -> None:
        now = time.time()
        with self._stamps:
            self.count += 1
            for rcpt in envelope.rcpt_tos:
                self.accepts[str(rcpt)] = now

    def answer(self, command: str) -> str:
        with self._stamps:
            if command == "count":
                return str(self.count)
            if command == "times":
                return json.dumps(self.accepts)
        return "error unknown command"


def main(argv: list[str]) -> None:
    sink = StampingSink(int(argv[0]))
    sink.start()
    try:
        print("ready", flush=True)
        for line in sys.stdin:
            print(sink.answer(line.strip()), flush=True)
    finally:
        sink.stop()


if __name__ == "__main__":
    main(sys.argv[1:])
