"""Retention purge against a real Redis: after it, no seeded person is left anywhere in Redis."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import idna
import pytest
import redis
from click.testing import CliRunner

from devtools.sink import Sink
from notifier.cli import main
from notifier.domain.conference import Conference
from notifier.domain.notice import invite_uid
from notifier.loading import Conferences
from notifier.service import Service
from notifier.settings import SHIPPED_CONFERENCES, Settings
from notifier.store import keys
from notifier.store.codec import text
from notifier.store.outbox import STATES
from notifier.store.purge import (
    ANON_EMAIL,
    PurgeRefused,
    anonymise_dead_letter,
    purge,
    purge_expired,
    refusal,
    retention_ends,
    scrub,
)
from tests.conftest import TEST_REDIS_URL, Clock
from tests.events import ASTRID, CONFERENCE, JENS, METTE, cancelled, created, reminder, substituted

CPH = ZoneInfo("Europe/Copenhagen")
# 22 April 2024, all day: it ends at midnight, and 30 days later the data may go.
RETENTION_ENDS = datetime(2024, 5, 23, 0, 0, tzinfo=CPH)
OTHER = "andet-traef-2099"

HOSTILE: dict[str, Any] = {
    "name": 'Ærøskøbing "Boss" <b>Lund</b>, Jr. 😀',
    "email": "o'brien.lund@ærø.dk",
    "organisation": "Ærø Kommune <script>x</script>",
}
RETRYING: dict[str, Any] = {
    "name": "Birgitte Venter",
    "email": "birgitte.venter@odense.dk",
    "organisation": None,
}
BAD_EMAIL: dict[str, Any] = {
    "name": "Karen Ugyldig",
    "email": "karen.ugyldig@",
    "organisation": "Vejle Kommune",
}
CONTROL: dict[str, Any] = {"name": "Lars\x07 Klokke", "email": "lars.klokke@vejle.dk"}
EXTRA_KEY: dict[str, Any] = {
    "name": "Pia Ekstra",
    "email": "pia.ekstra@horsens.dk",
    "pia.hemmelig@horsens.dk": 1,
}
TEXT_PAYLOAD: dict[str, Any] = {
    "name": "Ole Tekst",
    "email": "ole.tekst@esbjerg",
    "organisation": "Esbjerg",
}
FUTURE: dict[str, Any] = {
    "name": "Frida Fremtid",
    "email": "frida.fremtid@kolding.dk",
    "organisation": "Kolding",
}

GONE: list[dict[str, Any]] = [
    METTE,
    JENS,
    ASTRID,
    HOSTILE,
    RETRYING,
    BAD_EMAIL,
    CONTROL,
    EXTRA_KEY,
    TEXT_PAYLOAD,
]


@pytest.fixture
def clock() -> Clock:
    return Clock(datetime(2024, 4, 1, 12, 0, tzinfo=UTC))


@pytest.fixture
def conferences_dir(tmp_path: Path) -> Path:
    """The shipped conference and one in 2099 whose data must survive."""
    folder = tmp_path / "conferences"
    folder.mkdir()
    shutil.copy(SHIPPED_CONFERENCES / f"{CONFERENCE}.toml", folder)
    source = (SHIPPED_CONFERENCES / f"{CONFERENCE}.toml").read_text(encoding="utf-8")
    (folder / f"{OTHER}.toml").write_text(
        source.replace("date = 2024-04-22", "date = 2099-04-22"), encoding="utf-8"
    )
    return folder


@pytest.fixture
def svc(
    make_settings: Callable[..., Settings],
    redis_client: redis.Redis,
    clock: Clock,
    conferences_dir: Path,
) -> Iterator[Service]:
    service = Service(
        make_settings(conferences_dir=str(conferences_dir)),
        redis_client,
        clock=clock,
        rand=lambda: 0.0,
    )
    yield service
    service.close()


def conf(svc: Service, slug: str = CONFERENCE) -> Conference:
    return svc.conferences.get(slug)


def _run(svc: Service, *events: Any) -> None:
    for event in events:
        svc.deliver(svc.ingest(event))


def seed(svc: Service, sink: Sink) -> None:
    """Every kind of personal data the service keeps, for two conferences."""
    sink.script.rcpt["o'brien.lund@"] = (
        "550 5.1.1 <o'brien.lund@xn--r-3fa9c.dk>: Recipient address rejected: User unknown"
    )
    _run(
        svc,
        created("e1", "R1", METTE),
        created("e2", "R2", JENS),
        substituted("s2", "R2", JENS, ASTRID),
        created("e3", "R3", HOSTILE),  # permanently refused, the reply quoting the address
        created("e5", "R5", {"name": "Søren Sent", "email": "soren.sent@aarhus.dk"}),
        reminder("rem", "uge"),
        cancelled("c5", "R5"),
    )
    sink.script.data.append("451 4.3.0 <birgitte.venter@odense.dk>: try again later")
    _run(svc, created("e4", "R4", RETRYING))  # left retrying: not yet sent at purge time
    # Dead letters: a bad address, a control character, an unknown key that is an address,
    # a payload that came as JSON text, and a cancellation of an unknown registration.
    _run(
        svc,
        created("d1", "R9", BAD_EMAIL),
        created("d2", "R9", CONTROL),
        created("d3", "R9", EXTRA_KEY),
        json.dumps(created("d4", "R9", TEXT_PAYLOAD), ensure_ascii=False),
        cancelled("d5", "R-UNKNOWN"),
    )
    other = created("f1", "F1", FUTURE) | {"conference": OTHER}
    other_bad = created("f2", "F2", FUTURE | {"email": "frida@"}) | {"conference": OTHER}
    _run(svc, other, other_bad)


def strings(value: Any) -> Iterator[str]:
    """Every string inside a Redis value: the value itself and, if it is JSON, what is in it."""
    yield value
    try:
        stack = [json.loads(value)]
    except ValueError:
        return
    while stack:
        node = stack.pop()
        if isinstance(node, str):
            yield from strings(node)  # JSON text inside JSON (a dead letter's text payload)
        elif isinstance(node, dict):
            stack += [*node.keys(), *node.values()]
        elif isinstance(node, list):
            stack += node


def everything(r: redis.Redis) -> dict[str, list[str]]:
    """Every key of every type with every value (hash fields too, set and zset members)."""
    found: dict[str, list[str]] = {}
    for raw_key in r.scan_iter(count=1000):
        key = text(raw_key)
        kind = text(r.type(raw_key))
        values: list[Any]
        if kind == "string":
            values = [r.get(raw_key) or b""]
        elif kind == "hash":
            values = [x for kv in sorted(r.hgetall(raw_key).items()) for x in kv]
        elif kind == "set":
            values = sorted(r.smembers(raw_key))
        elif kind == "zset":
            values = list(r.zrange(raw_key, 0, -1))
        elif kind == "list":
            values = list(r.lrange(raw_key, 0, -1))
        else:
            raise AssertionError(f"{key}: unexpected type {kind}")
        found[key] = [key] + [_decoded(v) for v in values]
    return found


def _decoded(value: bytes | str) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else value


def traces(person: dict[str, Any], regs: list[str], domain: str = "kl.dk") -> list[str]:
    """What of a person could be stored: name, address (Unicode and punycode), mailbox name,
    organisation, and the invite UIDs derived from the address."""
    email = str(person["email"])
    local, _, host = email.rpartition("@")
    found = [str(person["name"]).strip(), email, local]
    if host:
        found.append(f"{local}@{idna.encode(host, uts46=True).decode()}")
    if person.get("organisation"):
        found.append(str(person["organisation"]))
    found += [invite_uid(slug, reg, email, domain) for slug in (CONFERENCE, OTHER) for reg in regs]
    found += [k for k in person if "@" in k]  # a key that is an address
    return [t.casefold() for t in found if t]


def leftovers(r: redis.Redis, people: list[dict[str, Any]]) -> list[tuple[str, str]]:
    regs = ["R1", "R2", "R3", "R4", "R5", "R9", "F1", "F2"]
    needles = [t for p in people for t in traces(p, regs)]
    hits = []
    for key, values in everything(r).items():
        for value in values:
            for s in strings(value):
                hits += [(key, n) for n in needles if n in s.casefold()]
    return sorted(set(hits))


def counters(r: redis.Redis) -> dict[str, dict[str, int]]:
    found = {}
    for key in [keys.COUNTS, *(keys.batch_counts(text(b)) for b in r.smembers(keys.BATCHES))]:
        got = {text(k): int(v) for k, v in r.hgetall(key).items()}
        found[key] = {state: got.get(state, 0) for state in STATES}
    return found


@pytest.mark.integration
def test_purge_leaves_no_personal_data_and_keeps_the_counts(svc: Service, sink: Sink) -> None:
    seed(svc, sink)
    r = svc.r
    before = leftovers(r, GONE)
    assert {n for _, n in before} >= {t for p in GONE for t in traces(p, [])}, "scanner blind"
    counts_before = counters(r)
    letters_before = svc.dead.list()
    assert len(letters_before) == 6
    states_before = svc.outbox.states(_message_keys(r))

    report = purge(r, conf(svc), RETENTION_ENDS)

    assert leftovers(r, GONE) == []
    assert leftovers(r, [FUTURE]) != []  # the 2099 conference is untouched
    assert (report.seats, report.seats_found) == (5, 5)
    assert report.messages == report.messages_found == len(states_before) - 1  # f1 is 2099's
    assert (report.settled, report.busy) == (1, 0)
    assert (report.dead_letters, report.dead_letters_found) == (5, 5)
    # Statistics stay: the one message not yet sent is now skipped, nothing else moved.
    counts_after = counters(r)
    expected = json.loads(json.dumps(counts_before))
    expected[keys.COUNTS]["retrying"] -= 1
    expected[keys.COUNTS]["skipped"] += 1
    assert counts_after == expected
    states_after = svc.outbox.states(_message_keys(r))
    assert {k: s for k, s in states_after.items() if s != states_before[k]} == {
        "e4:confirmation": "skipped"
    }
    record = svc.outbox.get("e3:confirmation")
    assert record is not None and (record.state, record.attempts) == ("failed", 1)
    assert record.last_reply.startswith("550 5.1.1 <[fjernet]>")
    assert record.notice.recipient.email == ANON_EMAIL
    letters = svc.dead.list()
    assert [(d.id, d.event_type, d.at) for d in letters] == [
        (d.id, d.event_type, d.at) for d in letters_before
    ]
    purged = [d for d in letters if d.purged_at is not None]
    assert len(purged) == 5 and all(d.payload is None for d in purged)
    assert ("registration.attendee.[fjernet]",) in [d.fields for d in purged]
    seat = svc.roster.seat(CONFERENCE, "R2")
    assert seat is not None and seat.status == "active"
    assert sorted(seat.sequences.values()) == [0, 1]  # Jens's CANCEL, Astrid's REQUEST


def _message_keys(r: redis.Redis) -> list[str]:
    prefix = keys.message("")
    return sorted(text(k).removeprefix(prefix) for k in r.scan_iter(match=keys.message("*")))


@pytest.mark.integration
def test_purge_is_idempotent_and_a_dry_run_changes_nothing(svc: Service, sink: Sink) -> None:
    seed(svc, sink)
    r = svc.r
    untouched = everything(r)
    dry = purge(r, conf(svc), RETENTION_ENDS, dry_run=True)
    assert everything(r) == untouched
    assert dry.changed > 0 and "dry run: nothing was changed" in dry.lines()

    first = purge(r, conf(svc), RETENTION_ENDS + timedelta(days=400))
    assert (first.seats, first.messages, first.dead_letters) == (
        dry.seats,
        dry.messages,
        dry.dead_letters,
    )
    after_first = everything(r)
    second = purge(r, conf(svc), RETENTION_ENDS + timedelta(days=401))
    assert everything(r) == after_first  # byte for byte
    assert (second.changed, second.settled, second.busy) == (0, 0, 0)
    assert (second.seats_found, second.messages_found, second.dead_letters_found) == (
        first.seats_found,
        first.messages_found,
        first.dead_letters_found,
    )
    assert second.lines()[-1].startswith("nothing left to purge")


@pytest.mark.integration
def test_a_settled_message_is_never_sent_to_the_placeholder(
    svc: Service, sink: Sink, clock: Clock
) -> None:
    seed(svc, sink)
    sent = len(sink.received)
    purge(svc.r, conf(svc), RETENTION_ENDS)
    clock.now = RETENTION_ENDS + timedelta(hours=1)
    assert "e4:confirmation" not in svc.due()
    svc.deliver(["e4:confirmation"])  # a task still in the broker
    assert len(sink.received) == sent


@pytest.mark.integration
def test_purge_is_refused_before_the_retention_date(svc: Service, sink: Sink) -> None:
    seed(svc, sink)
    untouched = everything(svc.r)
    with pytest.raises(PurgeRefused, match=r"2024-05-23T00:00:00\+02:00") as refused:
        purge(svc.r, conf(svc), RETENTION_ENDS - timedelta(seconds=1))
    assert "torsdag den 23. maj 2024" in str(refused.value)
    assert everything(svc.r) == untouched


@pytest.mark.integration
def test_purge_expired_takes_only_conferences_past_retention(svc: Service, sink: Sink) -> None:
    seed(svc, sink)
    assert purge_expired(svc.r, svc.conferences, RETENTION_ENDS - timedelta(days=1)) == {}
    reports = purge_expired(svc.r, svc.conferences, RETENTION_ENDS)
    assert list(reports) == [CONFERENCE]
    assert leftovers(svc.r, GONE) == []
    assert leftovers(svc.r, [FUTURE]) != []


@pytest.mark.integration
def test_purge_command(redis_client: redis.Redis, svc: Service, sink: Sink) -> None:
    # The command reads the shipped conferences/, which holds the same conference.
    seed(svc, sink)
    env = {"NOTIFIER_BROKER_URL": TEST_REDIS_URL}
    run = CliRunner().invoke
    early = run(main, ["purge", CONFERENCE, "--now", "2024-05-22T12:00:00+02:00"], env=env)
    assert early.exit_code == 1
    assert "2024-05-23" in early.output and "refused" in early.output
    dry = run(main, ["purge", CONFERENCE, "--dry-run", "--now", "2024-06-01T00:00Z"], env=env)
    assert dry.exit_code == 0, dry.output
    assert "would anonymise 5 of 5" in dry.output and "nothing was changed" in dry.output
    assert leftovers(redis_client, [METTE]) != []
    done = run(main, ["purge", CONFERENCE, "--now", "2024-06-01T00:00Z"], env=env)
    assert done.exit_code == 0, done.output
    assert "seats: anonymised 5 of 5" in done.output
    assert "dead letters: cleared 5 of 5" in done.output
    again = run(main, ["purge", CONFERENCE, "--now", "2024-06-02T00:00Z"], env=env)
    assert again.exit_code == 0 and "nothing left to purge" in again.output
    naive = run(main, ["purge", CONFERENCE, "--now", "2024-06-02T00:00"], env=env)
    assert naive.exit_code == 2 and "UTC offset" in naive.output
    replay = run(main, ["dead-letters", "--replay-all"], env=env)
    # Only the 2099 conference's letter is replayed; purged ones stay for statistics.
    assert replay.exit_code == 0 and "replayed 1 event(s)" in replay.output
    assert [d.purged_at is not None for d in svc.dead.list()] == [True] * 5


# -- the pure parts -------------------------------------------------------------------------


def test_retention_counts_from_the_conference_end() -> None:
    shipped = Conferences(SHIPPED_CONFERENCES).get(CONFERENCE)
    assert retention_ends(shipped) == RETENTION_ENDS
    assert refusal(shipped, RETENTION_ENDS) is None
    assert refusal(shipped, RETENTION_ENDS - timedelta(microseconds=1)) is not None
    none_kept = shipped.model_copy(update={"retention_days": 0})
    assert refusal(none_kept, datetime(2024, 4, 23, 0, 0, tzinfo=CPH)) is None
    with pytest.raises(ValueError, match="timezone-aware"):
        refusal(shipped, datetime(2030, 1, 1))


def test_scrub_removes_addresses_and_known_people() -> None:
    from notifier.domain.notice import Person

    mette = Person("Mette Sørensen", "mette.sorensen@aarhus.dk")
    assert scrub("550 5.1.1 <mette.sorensen@aarhus.dk>: unknown", [mette]) == (
        "550 5.1.1 <[fjernet]>: unknown"
    )
    assert scrub("452 mailbox METTE.SORENSEN full (Mette Sørensen)", [mette]) == (
        "452 mailbox [fjernet] full ([fjernet])"
    )
    assert (
        scrub("421 4.7.0 a'b+c@xn--r-1fa7a.dk, x@y later") == "421 4.7.0 [fjernet], [fjernet] later"
    )
    assert scrub("250 2.0.0 Ok: queued as 4F2A") == "250 2.0.0 Ok: queued as 4F2A"


def test_a_dead_letter_keeps_its_shape_without_its_payload() -> None:
    record = {
        "id": "dl-1",
        "event_id": "evt-9",
        "type": "registration.created",
        "at": 1.0,
        "reason": "registration.attendee.email: not a valid email address: x@y z",
        "fields": ["registration.attendee.email"],
        "payload": {"registration": {"attendee": {"name": "Ib", "email": "x@y"}}},
    }
    anon = anonymise_dead_letter(record, 2.0)
    assert anon["payload"] is None and anon["purged_at"] == 2.0
    assert anon["reason"] == "registration.attendee.email: not a valid email address: [fjernet] z"
    assert anonymise_dead_letter(anon, 3.0) == anon
