"""A `notifier.ingest` task message as Celery 5 (task protocol 2) publishes it through
kombu's Redis transport: the JSON that LPUSH puts on the queue.

The HTTP API builds its messages here rather than through `app.send_task` when the broker is
the store's Redis: Celery's path costs most of a request's CPU (message assembly, signals,
the producer's pool), and a request then needs one script for publishing and marking
(notifier.store.acceptance). bench/README.md has the measurement. A test publishes the same
event through Celery and through this module and compares the messages field by field
(tests/integration/test_task_message.py), so a Celery or kombu upgrade that changes the
format fails there, not in production; the worker's own tests consume these messages.
"""

from __future__ import annotations

import base64
import json
import os
import socket
import uuid
from dataclasses import dataclass
from typing import Any

#: The task and the queue (notifier.tasks names them; repeated here so that this module
#: needs no Celery import: tests/integration/test_task_message.py checks they agree).
INGEST = "notifier.ingest"
QUEUE = "notifier"
_EMBED = {"callbacks": None, "errbacks": None, "chain": None, "chord": None}


@dataclass(frozen=True)
class TaskMessages:
    """Makes the messages of one publishing process. `reply_to` is the Celery app's oid,
    `origin` Celery's name for an anonymous publisher (gen<pid>@<host>)."""

    reply_to: str
    origin: str

    @classmethod
    def for_app(cls, app_oid: str) -> TaskMessages:
        return cls(reply_to=app_oid, origin=f"gen{os.getpid()}@{socket.gethostname()}")

    def ingest(self, event: dict[str, Any]) -> str:
        """The task message for one event, as JSON text."""
        task_id = str(uuid.uuid4())
        body = json.dumps([[event], {}, _EMBED]).encode("utf-8")
        argsrepr = f"[<event {event.get('id')!s:.100}>]"
        message = {
            "body": base64.b64encode(body).decode("ascii"),
            "content-encoding": "utf-8",
            "content-type": "application/json",
            "headers": self._headers(task_id, argsrepr),
            "properties": {
                "correlation_id": task_id,
                "reply_to": self.reply_to,
                "argsrepr": argsrepr,
                "delivery_mode": 2,
                "delivery_info": {"exchange": "", "routing_key": QUEUE},
                "priority": 0,
                "body_encoding": "base64",
                "delivery_tag": str(uuid.uuid4()),
            },
        }
        return json.dumps(message)

    def _headers(self, task_id: str, argsrepr: str) -> dict[str, Any]:
        return {
            "lang": "py",
            "task": INGEST,
            "id": task_id,
            "shadow": None,
            "eta": None,
            "expires": None,
            "group": None,
            "group_index": None,
            "retries": 0,
            "timelimit": [None, None],
            "root_id": task_id,
            "parent_id": None,
            "argsrepr": argsrepr,
            "kwargsrepr": "{}",
            "origin": self.origin,
            "ignore_result": None,
            "replaced_task_nesting": 0,
            "stamped_headers": None,
            "stamps": {},
        }
