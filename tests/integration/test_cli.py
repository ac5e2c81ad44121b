"""The `notifier` command against a real Redis broker."""

from __future__ import annotations

import json
from email import message_from_bytes, policy
from pathlib import Path

import pytest
import redis
from click.testing import CliRunner

from notifier.cli import main
from notifier.tasks import QUEUE
from tests.conftest import TEST_REDIS_URL
from tests.events import created

ENV = {"NOTIFIER_BROKER_URL": TEST_REDIS_URL}


@pytest.mark.integration
def test_publish_names_bad_lines_and_publishes_good_ones(
    redis_client: redis.Redis, tmp_path: Path
) -> None:
    bad_email = created("evt-2", "REG-2", {"name": "Ole", "email": "ole@"})
    lines = [
        json.dumps(created("evt-1", "REG-1")),
        "",
        json.dumps(bad_email),
        "{not json",
        json.dumps(created("evt-3", "REG-3")),
    ]
    source = tmp_path / "events.jsonl"
    source.write_text("\n".join(lines) + "\n", encoding="utf-8")
    result = CliRunner().invoke(main, ["publish", str(source)], env=ENV)
    assert result.exit_code == 1
    assert "line 3: registration.attendee.email: not a valid email address" in result.output
    assert "line 4: event: not valid JSON" in result.output
    assert "published 2 event(s)" in result.output
    assert redis_client.llen(QUEUE) == 2
    bodies = [json.loads(m) for m in redis_client.lrange(QUEUE, 0, -1)]
    assert sorted(b["headers"]["task"] for b in bodies) == ["notifier.ingest"] * 2
    assert all(b["content-type"] == "application/json" for b in bodies)


@pytest.mark.integration
def test_publish_reads_stdin(redis_client: redis.Redis) -> None:
    result = CliRunner().invoke(
        main, ["publish", "-"], input=json.dumps(created("e", "R")), env=ENV
    )
    assert result.exit_code == 0, result.output
    assert redis_client.llen(QUEUE) == 1


def test_bad_setting_stops_with_the_variable_named() -> None:
    result = CliRunner().invoke(
        main, ["publish", "-"], input="", env={"NOTIFIER_SMTP_PORT": "seventy"}
    )
    assert result.exit_code != 0
    assert "NOTIFIER_SMTP_PORT" in result.output


@pytest.mark.parametrize(
    "kind",
    [
        "confirmation",
        "reminder",
        "substitution_out",
        "substitution_in",
        "substitution_copy",
        "cancellation",
    ],
)
def test_preview_writes_eml_and_html(kind: str, tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["preview", kind, "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    msg = message_from_bytes((tmp_path / f"{kind}.eml").read_bytes(), policy=policy.default)
    assert msg["Subject"]
    html = (tmp_path / f"{kind}.html").read_text(encoding="utf-8")
    assert '<html lang="da"' in html
