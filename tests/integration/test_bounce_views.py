"""Issue 21: where a bounce's reason shows, on real services. Reports go through the intake
(`Intake.receive`, in process, with a clock the test sets) against the tests' Redis, after
real deliveries to the aiosmtpd sink; then `notifier status` (table and --json), the HTTP
API (a registration's messages, a batch's progress), /metrics and the console (a real
server, Danish labels, the notice about our side's problems) are read as their users read
them. The rules over time (a full mailbox over days, a secret's rotation) are here too."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import redis
from click.testing import CliRunner

from notifier.bounces.reason import REASONS
from notifier.cli import main
from notifier.intake import Intake
from notifier.service import Service
from notifier.settings import Settings
from notifier.store.bouncelog import BounceLog
from notifier.store.suppressions import Suppressions
from tests.api_support import Api, api, make_token
from tests.console_support import Client, folder, organiser, server
from tests.events import CONFERENCE, JENS, METTE, reminder
from tests.integration.test_api_organisers import BASE
from tests.integration.test_bounce_intake import BOUNCES, SECRET, bounce, registered, token_of
from tests.integration.test_json_output import ENV
from tests.integration.test_metrics import scrape, serving, value

pytestmark = pytest.mark.integration
__all__ = ["api", "folder", "organiser", "server"]

DAY = 86_400.0
# Yesterday 09:00 UTC: the views show our side's problems of the last 7 UTC days by the real
# clock, so the reports must be recent (a fixed date stops being recent a week later).
T0 = (time.time() // DAY - 1) * DAY + 9 * 3600
SEEN = datetime.fromtimestamp(T0 + 3600, UTC)  # when the `bounced` fixture's blocklist came
USER_UNKNOWN = ("5.1.1", "550 5.1.1 user unknown")
BLOCKED = ("5.7.606", "550 5.7.606 Access denied, banned sending IP [192.0.2.1]")
FULL = ("5.2.2", "552 5.2.2 Mailbox full")
DMARC = ("5.7.26", "550 5.7.26 Unauthenticated email is not accepted due to DMARC policy")


class At:
    """The intake's clock, set by the test (epoch seconds)."""

    def __init__(self, now: float = T0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def failure(key: str, address: str, said: tuple[str, str], *, token: str | None = None) -> bytes:
    """A real-world DSN (dsn_15.txt) about message `key` to `address`, with this status and
    the remote server's words."""
    status, diagnostic = said
    extra = f"Status: {status}\nDiagnostic-Code: smtp; {diagnostic}".encode()
    return bounce("dsn_15.txt", key, address, token=token).replace(b"Status: 5.1.1", extra)


@pytest.fixture
def svc(service: Callable[..., Service]) -> Service:
    return service(bounce_address=BOUNCES, bounce_secret=SECRET)


@pytest.fixture
def at() -> At:
    return At()


@pytest.fixture
def intake(svc: Service, redis_client: redis.Redis, at: At) -> Intake:
    return Intake(svc.settings, redis_client, clock=at)


@pytest.fixture
def bounced(svc: Service, intake: Intake, at: At) -> tuple[str, str]:
    """Mette's confirmation bounced as an unknown user, Jens's as a blocklisted sender (our
    side's problem, an hour later); their keys."""
    mette, jens = registered(svc, METTE, JENS)
    assert intake.receive(failure(mette, METTE["email"], USER_UNKNOWN)) == "bounced"
    at.now += 3600
    assert intake.receive(failure(jens, JENS["email"], BLOCKED)) == "bounced"
    return mette, jens


# notifier status --------------------------------------------------------------------------


def test_status_lists_each_bounce_with_its_reason_and_counts_by_reason(
    bounced: tuple[str, str], redis_client: redis.Redis
) -> None:
    result = CliRunner().invoke(main, ["status"], env=ENV | {"COLUMNS": "250"})
    assert result.exit_code == 0, result.output
    rows = {
        line.split("│")[1].strip(): line for line in result.stdout.splitlines() if "REG-" in line
    }
    assert "user_unknown" in rows["REG-0"] and "blocked" in rows["REG-1"]
    by_reason = result.stdout.partition("bounced: by reason")[2]
    assert re.search(r"user_unknown\s+│\s+1", by_reason) and re.search(
        r"blocked\s+│\s+1", by_reason
    )
    # The blocklist is our side's problem: named with its count and the time it was last seen.
    assert "reports of a problem on our side" in result.stdout
    seen = SEEN.strftime("%Y-%m-%d %H:%M:%S")
    assert re.search(rf"blocked\s+│\s+1\s+│\s+{seen}", result.stdout)


def test_status_json_carries_the_reasons(bounced: tuple[str, str]) -> None:
    result = CliRunner().invoke(main, ["status", "--json"], env=ENV)
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert {r["registration"]: r["reason"] for r in doc["bounced"]} == {
        "REG-0": "user_unknown",
        "REG-1": "blocked",
    }
    assert doc["bounce_reasons"] == {"user_unknown": 1, "blocked": 1}
    assert doc["bounce_signals"] == [{"reason": "blocked", "count": 1, "last_at": SEEN.isoformat()}]
    assert all("reason" not in r for r in doc["failures"] + doc["suppressed"])


# The HTTP API -------------------------------------------------------------------------------


@pytest.fixture
def org_api(
    api: Callable[[Settings], Api], make_settings: Callable[..., Settings], folder: Path
) -> tuple[Api, str]:
    a = api(make_settings(conferences_dir=str(folder)))
    return a, make_token(a.settings, "organiser")


def test_the_registration_resource_shows_the_reason_of_a_bounce_and_of_a_delay(
    svc: Service, intake: Intake, org_api: tuple[Api, str]
) -> None:
    mette, jens = registered(svc, METTE, JENS)
    assert intake.receive(failure(mette, METTE["email"], FULL)) == "bounced"
    delayed = bounce("dsn_17.txt", jens, JENS["email"])
    assert intake.receive(delayed) == "delayed"
    a, token = org_api

    def message(registration: str) -> Any:
        reply = a.call("GET", f"{BASE}/registrations/{registration}", token=token)
        assert reply.status == 200, reply.body
        [found] = [m for m in reply.json()["messages"] if m["kind"] == "confirmation"]
        return found

    assert message("REG-0")["bounce"]["reason"] == "mailbox_full"
    assert message("REG-1")["delay"]["reason"] in REASONS
    assert message("REG-1")["bounce"] is None


def test_the_batch_resource_counts_its_bounces_by_reason(
    svc: Service, intake: Intake, org_api: tuple[Api, str], at: At
) -> None:
    registered(svc, METTE, JENS)
    planned = svc.ingest(reminder("evt-r", "uge-16"))
    svc.deliver(planned)
    a, token = org_api
    progress = a.call("GET", f"{BASE}/batches/uge-16", token=token).json()
    assert progress["bounce_reasons"] == {}
    sent_to = {svc.outbox.get(k).sent_to: k for k in planned}  # type: ignore[union-attr]
    intake.receive(failure(sent_to[METTE["email"]], METTE["email"], DMARC))
    at.now += 60
    intake.receive(failure(sent_to[JENS["email"]], JENS["email"], DMARC))
    progress = a.call("GET", f"{BASE}/batches/uge-16", token=token).json()
    assert progress["counts"]["bounced"] == 2
    assert progress["bounce_reasons"] == {"authentication": 2}


# /metrics -----------------------------------------------------------------------------------


def test_metrics_count_reports_by_outcome_and_reason_without_personal_data(
    svc: Service, intake: Intake, make_settings: Callable[..., Settings], redis_url: str
) -> None:
    mette, jens = registered(svc, METTE, JENS)
    intake.receive(failure(mette, METTE["email"], USER_UNKNOWN))
    # A report about another recipient (Jens's mailbox forwarded to a dead one).
    assert intake.receive(failure(jens, "gone@example.org", USER_UNKNOWN)) == "mismatched"
    intake.receive(failure(jens, JENS["email"], BLOCKED))
    with serving(make_settings(redis_url)) as url:
        samples, response = scrape(url)
    outcome = "notifier_bounce_reports_total"
    assert value(samples, outcome, outcome="bounced") == 2
    assert value(samples, outcome, outcome="mismatched") == 1
    assert value(samples, outcome, outcome="too_large") == 0
    reason = "notifier_bounce_reasons_total"
    assert value(samples, reason, reason="user_unknown") == 1
    assert value(samples, reason, reason="blocked") == 1
    assert value(samples, reason, reason="mailbox_full") == 0
    last = "notifier_bounce_signal_last_seen_timestamp_seconds"
    assert value(samples, last, reason="blocked") == T0
    assert (last, (("reason", "authentication"),)) not in samples
    said = response.text.casefold()
    for who in (METTE, JENS):
        assert who["email"].partition("@")[0] not in said
    assert "example.org" not in said and "aarhus" not in said


# The console -------------------------------------------------------------------------------


def test_the_console_names_each_reason_in_danish(
    bounced: tuple[str, str], organiser: Client
) -> None:
    page = organiser.get(f"/conferences/{CONFERENCE}").body.decode()
    assert "Ukendt modtager" in page
    assert "Blokeret (afsenderens IP/domæne)" in page
    registration = organiser.get(f"/conferences/{CONFERENCE}/registrations/REG-0").body.decode()
    assert "Ukendt modtager" in registration
    suppressions = organiser.get("/suppressions").body.decode()
    assert "Permanent afvist (hard bounce) 5.1.1, Ukendt modtager: 550 5.1.1" in suppressions


def test_our_sides_problem_shows_as_a_notice_with_counts_and_when_last_seen(
    svc: Service, intake: Intake, at: At, organiser: Client
) -> None:
    assert "Jeres mailserver har et problem" not in organiser.get("/").body.decode()
    mette, jens = registered(svc, METTE, JENS)
    intake.receive(failure(mette, METTE["email"], BLOCKED))
    at.now += 2 * 3600
    intake.receive(failure(jens, JENS["email"], BLOCKED))
    at.now += 60
    intake.receive(failure(jens, JENS["email"], DMARC))
    for path in ("/", f"/conferences/{CONFERENCE}"):
        page = organiser.get(path).body.decode()
        notice = page.partition("data-signals")[2].partition("</section>")[0]
        assert "Jeres mailserver har et problem" in notice, path
        blocked = notice.partition('data-signal="blocked"')[2].partition("</li>")[0]
        # 2 reports, the latest at 11.00 UTC, shown in Copenhagen's time.
        assert "Blokeret (afsenderens IP/domæne)</strong>: 2 afvisninger" in blocked
        latest = datetime.fromtimestamp(T0 + 2 * 3600, ZoneInfo("Europe/Copenhagen"))
        assert f"senest {latest.day}.{latest.month}.{latest.year} kl. {latest:%H.%M.%S}" in blocked
        assert "Godkendelse (SPF/DKIM/DMARC)</strong>: 1 afvisning," in notice


def test_the_notice_goes_once_the_reports_are_old(
    svc: Service, intake: Intake, at: At, redis_client: redis.Redis
) -> None:
    [mette] = registered(svc, METTE)
    intake.receive(failure(mette, METTE["email"], BLOCKED))
    log = BounceLog(redis_client)
    assert [s.count for s in log.recent_signals(T0 + 6 * DAY, 7)] == [1]
    assert log.recent_signals(T0 + 8 * DAY, 7) == []


# Over time: a full mailbox, a secret's rotation --------------------------------------------


def three_messages(svc: Service) -> list[str]:
    """Three messages to Mette: her confirmation and two reminders."""
    keys = registered(svc, METTE)
    for batch in ("uge-15", "uge-16"):
        planned = svc.ingest(reminder(f"evt-{batch}", batch))
        svc.deliver(planned)
        keys += planned
    return keys


def test_a_full_mailbox_is_suppressed_only_after_three_failures_over_a_day_apart(
    svc: Service, intake: Intake, at: At, redis_client: redis.Redis
) -> None:
    first, second, third = three_messages(svc)
    sup = Suppressions(redis_client)
    for key, hours in ((first, 0), (second, 2), (third, 5)):  # three within hours: not yet
        at.now = T0 + hours * 3600
        assert intake.receive(failure(key, METTE["email"], FULL)) == "bounced"
    assert sup.get(METTE["email"]) is None
    more = svc.ingest(reminder("evt-uge-17", "uge-17"))
    svc.deliver(more)
    at.now = T0 + 2 * DAY
    assert intake.receive(failure(more[0], METTE["email"], FULL)) == "bounced"
    found = sup.get(METTE["email"])
    assert found is not None and found.reason == "mailbox full 4 times in 2 days"


def test_full_mailbox_failures_older_than_the_span_do_not_count(
    svc: Service, intake: Intake, at: At, redis_client: redis.Redis
) -> None:
    # NOTIFIER_BOUNCE_MAILBOX_FULL_DAYS is 14: a first failure 20 days ago has dropped out.
    for key, days in zip(three_messages(svc), (0, 20, 22), strict=True):
        at.now = T0 + days * DAY
        assert intake.receive(failure(key, METTE["email"], FULL)) == "bounced"
    assert Suppressions(redis_client).get(METTE["email"]) is None


def test_the_console_says_a_full_mailbox_suppression_in_danish(
    svc: Service, intake: Intake, at: At, organiser: Client
) -> None:
    for key, days in zip(three_messages(svc), (0, 1, 3), strict=True):
        at.now = T0 + days * DAY
        intake.receive(failure(key, METTE["email"], FULL))
    page = organiser.get("/suppressions").body.decode()
    assert "Postkassen var fuld 3 gange på 3 dage" in page


OLD = "the-secret-before-the-rotation"


def test_a_report_signed_with_the_previous_secret_counts_until_the_set_time(
    service: Callable[..., Service],
    make_settings: Callable[..., Settings],
    redis_client: redis.Redis,
    at: At,
) -> None:
    sent = service(bounce_address=BOUNCES, bounce_secret=OLD)
    mette, jens = registered(sent, METTE, JENS)
    until = datetime.fromtimestamp(T0 + DAY, UTC).isoformat()
    rotated = make_settings(
        bounce_address=BOUNCES,
        bounce_secret=SECRET,
        bounce_secret_previous=OLD,
        bounce_secret_previous_until=until,
    )
    intake = Intake(rotated, redis_client, clock=at)
    before = failure(mette, METTE["email"], USER_UNKNOWN, token=token_of(mette, OLD))
    assert intake.receive(before) == "bounced"
    at.now = T0 + DAY + 1
    after = failure(jens, JENS["email"], USER_UNKNOWN, token=token_of(jens, OLD))
    assert intake.receive(after) == "forged"
    assert sent.outbox.get(jens).state == "sent"  # type: ignore[union-attr]
    # The current secret's tokens are accepted throughout.
    assert intake.receive(failure(jens, JENS["email"], USER_UNKNOWN)) == "bounced"
