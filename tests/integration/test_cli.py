"""The `notifier` command against a real Redis broker."""

from __future__ import annotations

import json
from collections.abc import Callable
from email import message_from_bytes, policy
from pathlib import Path

import pytest
import redis
from click.testing import CliRunner
from icalendar import Calendar

from devtools.sink import Sink
from notifier import ops
from notifier.cli import main
from notifier.domain.itip import NOT_HELD
from notifier.service import Service
from notifier.tasks import QUEUE
from tests.conferences import announce, conference_copy
from tests.conftest import TEST_REDIS_URL
from tests.events import CONFERENCE, cancelled, created, person, reminder

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


# -- `notifier update` and `notifier remind` against seats made by the Service ---------------

TIME_CHANGE = "Tid: ikke meldt ud → kl. 9.00–16.00"


def _invite(path: Path) -> tuple[str, int, str]:
    """(METHOD, SEQUENCE, subject) of a written .eml's invite."""
    msg = message_from_bytes(path.read_bytes(), policy=policy.default)
    [part] = [p for p in msg.walk() if p.get_content_type() == "text/calendar"]
    payload = part.get_payload(decode=True)
    assert isinstance(payload, bytes)
    calendar = Calendar.from_ical(payload)
    [event] = calendar.walk("VEVENT")
    return str(calendar["METHOD"]), int(str(event["SEQUENCE"])), str(msg["Subject"])


@pytest.fixture
def registered(
    service: Callable[..., Service], sink: Sink, tmp_path: Path
) -> tuple[Path, dict[str, str]]:
    """Three registrations (one then cancelled) whose confirmations went out with the
    shipped facts; returns the conference file to edit and the CLI's environment."""
    conf_file = conference_copy(tmp_path / "conferences")
    svc = service(conferences_dir=str(conf_file.parent))
    for event in (*(created(f"e{i}", f"R{i}", person(i)) for i in range(3)), cancelled("c", "R2")):
        svc.deliver(svc.ingest(event))
    assert len(sink.received) == 4  # three confirmations and a cancellation
    return conf_file, {**ENV, "NOTIFIER_CONFERENCES_DIR": str(conf_file.parent)}


@pytest.mark.integration
def test_update_dry_run_shows_the_changes_and_writes_a_sample(
    registered: tuple[Path, dict[str, str]], redis_client: redis.Redis, sink: Sink, tmp_path: Path
) -> None:
    conf_file, env = registered
    announce(conf_file, times=True)
    out = tmp_path / "sample.eml"
    result = CliRunner().invoke(
        main, ["update", CONFERENCE, "--allow-past", "--dry-run", "--out", str(out)], env=env
    )
    assert result.exit_code == 0, result.output
    # The mail's own text, with its no-break space after "kl."
    assert f"2 deltager(e): {TIME_CHANGE}" in result.output.replace("\xa0", " ")
    assert "2 recipient(s) get an update" in result.output
    assert "not sent to 1: registration cancelled" in result.output
    method, sequence, subject = _invite(out)
    assert (method, sequence) == ("REQUEST", 1)
    assert subject.startswith("Ændring: ")
    # Nothing published, nothing sent
    assert redis_client.llen(QUEUE) == 0 and len(sink.received) == 4


@pytest.mark.integration
def test_update_dry_run_of_a_cancelled_conference_cancels_it(
    registered: tuple[Path, dict[str, str]], tmp_path: Path
) -> None:
    conf_file, env = registered
    announce(conf_file, cancelled=True)
    out = tmp_path / "sample.eml"
    result = CliRunner().invoke(
        main, ["update", CONFERENCE, "--allow-past", "--dry-run", "--out", str(out)], env=env
    )
    assert result.exit_code == 0, result.output
    assert "cancellation of the conference (METHOD:CANCEL): 2 recipient(s)" in result.output
    assert "2 deltager(e): Status: gennemføres → aflyst" in result.output
    assert _invite(out)[:2] == ("CANCEL", 1)


@pytest.mark.integration
def test_update_with_nothing_changed_publishes_nothing(
    registered: tuple[Path, dict[str, str]], redis_client: redis.Redis
) -> None:
    _, env = registered
    result = CliRunner().invoke(main, ["update", CONFERENCE, "--allow-past"], env=env)
    assert result.exit_code == 0, result.output
    assert "Nothing changed: every current attendee's invite already carries" in result.output
    assert "not sent to 2: the attendee's invite already carries these facts" in result.output
    assert redis_client.llen(QUEUE) == 0


@pytest.mark.integration
def test_update_refuses_a_past_conference(redis_client: redis.Redis) -> None:
    result = CliRunner().invoke(main, ["update", CONFERENCE, "--dry-run"], env=ENV)
    assert result.exit_code != 0
    assert "updates for a past conference are refused" in result.output
    assert "2024-04-22" in result.output and "--allow-past" in result.output
    assert redis_client.llen(QUEUE) == 0


@pytest.mark.integration
@pytest.mark.parametrize("dry", [False, True], ids=["send", "dry-run"])
def test_remind_refuses_a_cancelled_conference(
    registered: tuple[Path, dict[str, str]], redis_client: redis.Redis, dry: bool
) -> None:
    conf_file, env = registered
    announce(conf_file, cancelled=True)
    args = ["remind", CONFERENCE, "--allow-past", *(["--dry-run"] if dry else [])]
    result = CliRunner().invoke(main, args, env=env)
    assert result.exit_code != 0
    assert "is cancelled (cancelled = true in its file): no reminders are sent" in result.output
    assert redis_client.llen(QUEUE) == 0


@pytest.mark.integration
def test_skipped_messages_are_summed_up_by_reason(
    service: Callable[..., Service], redis_client: redis.Redis, capsys: pytest.CaptureFixture[str]
) -> None:
    svc = service()
    for i in range(3):
        svc.deliver(svc.ingest(created(f"e{i}", f"R{i}", person(i))))
    planned = svc.ingest(reminder("rem", "b"))
    for i in (0, 1):  # cancelled after the batch was planned, before it was sent
        svc.deliver(svc.ingest(cancelled(f"c{i}", f"R{i}")))
    svc.deliver(planned)
    capsys.readouterr()
    ops.print_skipped(redis_client, f"{CONFERENCE}:b")
    shown = capsys.readouterr().out
    assert "skipped: why" in shown
    rows = [[cell.strip() for cell in line.split("│")[1:-1]] for line in shown.splitlines()]
    assert [row for row in rows if row] == [[NOT_HELD, "2"]]  # the sent one is not listed
