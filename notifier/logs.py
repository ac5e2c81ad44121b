"""Logging without personal data: addresses masked everywhere, JSON lines on request.

Our own log calls never pass names or clear addresses (they log registration ids, event ids,
message keys and masked addresses). As a safety net every formatted line, Celery's included,
has any address-shaped text masked before it is written.
"""

from __future__ import annotations

import json
import logging
import re
from datetime import UTC, datetime
from typing import Any

from notifier.domain.recipients import mask

ADDRESS = re.compile(r"[^\s<>()\[\],;:\"'@]+@[^\s<>()\[\],;:\"'@]+\.[^\s<>()\[\],;:\"'@]+")
FIELDS = (
    "event_id",
    "registration",
    "key",
    "state",
    "batch",
    "to",
    "attempt",
    "reply",
    "kind",
    "dead_letter",
    "fields",
)


def scrub(text: str) -> str:
    """Mask every address-shaped substring: 'mette@aarhus.dk' -> 'm***@aarhus.dk'."""
    return ADDRESS.sub(lambda m: mask(m.group(0)), text)


class ScrubbingFormatter(logging.Formatter):
    """Celery's usual text lines, with addresses masked."""

    def format(self, record: logging.LogRecord) -> str:
        return scrub(super().format(record))


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message and our structured fields."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for name in FIELDS:
            value = getattr(record, name, None)
            if value is not None:
                entry[name] = value
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return scrub(json.dumps(entry, ensure_ascii=False, default=str))


def formatter(kind: str) -> logging.Formatter:
    if kind == "json":
        return JsonFormatter()
    return ScrubbingFormatter("[%(asctime)s: %(levelname)s/%(processName)s] %(message)s")


def install(logger: logging.Logger, kind: str) -> None:
    """Put our formatter on every handler of a logger (Celery calls this after its setup)."""
    for handler in logger.handlers:
        handler.setFormatter(formatter(kind))
