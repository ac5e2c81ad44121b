"""The worker's log from a whole run holds no name and no clear address, and is JSON."""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest

from tests.conftest import wait_for
from tests.e2e.conftest import Stack
from tests.events import ASTRID, JENS, METTE, cancelled, created, substituted

pytestmark = pytest.mark.e2e

BOUNCER = {
    "name": "Bjørn Ågesen-Østergaard",
    "email": "bjorn.agesen@vejle.dk",
    "organisation": "Vejle Kommune",
}
INVALID = {"name": "Søren Kierkegaard Hansen", "email": "soren@@kk.dk"}


def test_log_has_no_personal_data(stack: Callable[..., Stack]) -> None:
    s = stack(log_format="json")
    s.sink.script.rcpt[BOUNCER["email"]] = f"550 5.1.1 <{BOUNCER['email']}>: no such user"
    s.publish(
        created("e1", "R1", METTE),
        created("e2", "R2", BOUNCER),
        created("e3", "R3", INVALID),
        created("e4", "R4", ASTRID),
    )
    s.sink.wait_for(2)
    s.publish(substituted("e5", "R1", METTE, JENS), cancelled("e6", "R4"))
    s.sink.wait_for(6)
    s.wait_drained()
    wait_for(lambda: s.client.hlen("notifier:dead") == 1, 5, "the dead letter")
    s.worker.stop()
    log = s.worker.text()
    people = [METTE, JENS, ASTRID, BOUNCER, INVALID]
    secrets = [p["email"] for p in people] + [p["name"] for p in people]
    secrets += [part for p in people for part in p["name"].split() if len(part) > 3]
    leaked = [secret for secret in secrets if secret.lower() in log.lower()]
    assert leaked == []
    ours = [json.loads(line) for line in log.splitlines() if line.startswith("{")]
    assert any(e.get("state") == "sent" and e.get("to") == "m***@aarhus.dk" for e in ours)
    failed = [e for e in ours if e.get("state") == "failed"]
    assert failed and failed[0]["reply"] == "550 5.1.1 <b***@vejle.dk>: no such user"
    assert any(e.get("dead_letter") and e.get("event_id") == "e3" for e in ours)
    assert all(e.get("registration") for e in ours if e.get("state") == "sent")
