"""The ceiling: pre-composed messages over K reused aiosmtplib connections.

Nothing but SMTP happens while the clock runs, so this is the fastest this machine sends
from one Python process. K is chosen per run by a short calibration over 4..8.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator, Sequence

import aiosmtplib

from bench.stats import Throughput
from notifier.mail.compose import Composed
from notifier.settings import load_settings
from notifier.smtp import Mailer, Sent

LOCAL_NAME = "bench.localhost"  # fixed EHLO name: no DNS lookup of our own host name


async def _connection(host: str, port: int, todo: Iterator[Composed]) -> int:
    smtp = aiosmtplib.SMTP(
        hostname=host, port=port, start_tls=False, use_tls=False, local_hostname=LOCAL_NAME
    )
    await smtp.connect()
    ok = 0
    try:
        # The connections share one iterator: each takes the next message when it is free.
        for msg in todo:
            errors, _ = await smtp.sendmail(msg.sender, [msg.recipient], msg.data)
            ok += not errors
    finally:
        await smtp.quit()
    return ok


async def _send_all(host: str, port: int, messages: Sequence[Composed], k: int) -> int:
    todo = iter(messages)
    counts = await asyncio.gather(*(_connection(host, port, todo) for _ in range(k)))
    return sum(counts)


def send(messages: Sequence[Composed], port: int, k: int, host: str = "127.0.0.1") -> Throughput:
    """Send every message once over k connections; accepted replies per second."""
    started = time.perf_counter()
    ok = asyncio.run(_send_all(host, port, messages, k))
    return Throughput(ok, time.perf_counter() - started)


def best_width(messages: Sequence[Composed], port: int, widths: Sequence[int]) -> int:
    """The connection count in `widths` that sends this sample fastest."""
    rates = {k: send(messages, port, k).rate for k in widths}
    return max(rates, key=lambda k: rates[k])


def send_lean(
    messages: Sequence[Composed], port: int, k: int, host: str = "127.0.0.1"
) -> Throughput:
    """The same messages through notifier's own sender (notifier.smtp.Mailer with k
    sessions): what notifier's SMTP path does with nothing else to do. Not the ceiling
    the issue defines; shown beside it because this path skips two costs of aiosmtplib's
    `sendmail` (see notifier/smtp.py)."""
    settings = load_settings(
        {
            "NOTIFIER_SMTP_HOST": host,
            "NOTIFIER_SMTP_PORT": str(port),
            "NOTIFIER_SMTP_TLS": "none",
            "NOTIFIER_SMTP_CONNECTIONS": str(k),
        }
    )
    mailer = Mailer(settings)
    try:
        started = time.perf_counter()
        outcomes = mailer.send_all(messages)
        elapsed = time.perf_counter() - started
    finally:
        mailer.close()
    return Throughput(sum(isinstance(o, Sent) for o in outcomes), elapsed)
