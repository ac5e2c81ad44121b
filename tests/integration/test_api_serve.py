"""`notifier serve` as a process (real uvicorn) on a private redis-server: every route of its
OpenAPI document answers without a server error, and schemathesis finds no server error and
no answer that breaks the document (status code, media type, body schema, headers)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given
from hypothesis import settings as hypothesis_settings
from schemathesis.checks import not_a_server_error
from schemathesis.core.result import Ok
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from devtools.localredis import PrivateRedis
from devtools.sink import free_port
from notifier.settings import load_settings
from tests.api_support import make_token
from tests.conftest import ROOT, wait_for
from tests.events import CONFERENCE, created

pytestmark = pytest.mark.integration

#: Examples per operation: enough to reach every branch of the bodies, fast on 2 cores.
EXAMPLES = 20
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]
#: Concrete path parameters for the route walk.
PARAMS = {"slug": CONFERENCE, "registration": "REG-1", "batch": "reminder", "event": "evt-1"}


@dataclass
class Served:
    url: str
    token: str
    log: Path


@pytest.fixture
def served(private_redis: Callable[..., PrivateRedis], tmp_path: Path) -> Iterator[Served]:
    store = private_redis()
    port = free_port()
    env = {
        **os.environ,
        "NOTIFIER_BROKER_URL": store.url,
        "NOTIFIER_CONFERENCES_DIR": "conferences",
    }
    log = tmp_path / "serve.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [str(Path(sys.executable).parent / "notifier"), "serve", "--port", str(port)],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: _answers(url, proc), 30, "notifier serve to answer")
        token = make_token(load_settings({"NOTIFIER_BROKER_URL": store.url}), "organiser")
        yield Served(url, token, log)
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
    assert "Traceback" not in log.read_text(encoding="utf-8", errors="replace")


def _answers(url: str, proc: subprocess.Popen[bytes]) -> bool:
    if proc.poll() is not None:
        raise AssertionError(f"notifier serve exited with {proc.returncode}")
    try:
        return httpx.get(f"{url}/v1/health", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def _body(path: str) -> Any:
    if path.endswith("/events"):
        return created("evt-walk-1", "REG-1")
    if path.endswith("/batch"):
        return {"events": [created("evt-walk-2", "REG-2"), "not an event"]}
    return {"dry_run": True, "allow_past": True}


def test_every_route_of_the_document_answers(served: Served) -> None:
    doc = httpx.get(f"{served.url}/openapi.json", timeout=10).json()
    headers = {"Authorization": f"Bearer {served.token}"}
    called = []
    with httpx.Client(base_url=served.url, headers=headers, timeout=30) as client:
        for template, operations in doc["paths"].items():
            path = template.format(**PARAMS)
            for method in operations:
                body = _body(path) if method == "post" else None
                reply = client.request(method.upper(), path, json=body)
                assert reply.status_code < 500, (method, template, reply.text)
                called.append((method, template, reply.status_code))
    assert ("get", "/metrics", 200) in called
    assert ("get", "/v1/health", 200) in called
    assert ("post", "/v1/events", 202) in called
    assert len(called) == sum(len(ops) for ops in doc["paths"].values()) >= 9


def test_schemathesis_finds_no_server_error_and_no_schema_violation(served: Served) -> None:
    schema = schemathesis.openapi.from_url(f"{served.url}/openapi.json")
    headers = {"Authorization": f"Bearer {served.token}"}
    operations = []
    for result in schema.get_all_operations():
        assert isinstance(result, Ok), result  # every operation of the document is usable
        operations.append(result.ok())
    assert len(operations) >= 9
    for operation in operations:
        strategy = operation.as_strategy(headers=headers)

        @given(case=strategy)
        @hypothesis_settings(
            max_examples=EXAMPLES,
            deadline=None,
            database=None,
            phases=[Phase.generate],
            suppress_health_check=list(HealthCheck),
        )
        def check(case: schemathesis.Case[Any]) -> None:
            case.call_and_validate(base_url=served.url, checks=CHECKS, timeout=30)

        check()
