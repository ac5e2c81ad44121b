"""The whole bounce path on real services (issue 14): a message leaves through the aiosmtpd
sink with its signed return path, a real-world bounce naming it (tests/data/bounces, with our
return path put where the MTA wrote the list's) goes into `notifier bounces receive` as a real
subprocess, and what follows is read from Redis and from what the sink receives next.
"""

from __future__ import annotations

import logging
import os
import re
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from datetime import datetime
from email import message_from_bytes, policy
from email.utils import parseaddr
from pathlib import Path
from subprocess import PIPE

import pytest
import redis

from devtools.localredis import PrivateRedis
from devtools.sink import Sink
from notifier.bounces.token import message_id, message_token, return_path, verify
from notifier.domain.notice import Kind
from notifier.intake import Intake
from notifier.loading import Conferences
from notifier.service import Service
from notifier.settings import SHIPPED_CONFERENCES, Settings
from notifier.store import keys
from notifier.store.bouncelog import BounceLog
from notifier.store.outbox import Record
from notifier.store.purge import ANON_EMAIL, purge, purge_suppressions
from notifier.store.suppressions import COMPLAINT, ORGANISER, Suppressions
from tests.conftest import Clock
from tests.events import ASTRID, CONFERENCE, JENS, METTE, created, reminder, substituted
from tests.integration.test_purge import everything
from tests.unit.test_bounce_report import EXPECTED, sample

pytestmark = pytest.mark.integration

NOTIFIER = str(Path(sys.executable).parent / "notifier")  # the installed console script
BOUNCES = "bounces@kl.dk"
SECRET = "a secret of the kind NOTIFIER_BOUNCE_SECRET holds"
BOUNCE_SETTINGS = {"bounce_address": BOUNCES, "bounce_secret": SECRET}
ORGANISER_ADDRESS = "arrangementsinfo@kl.dk"  # the shipped conference's [organiser]
OLE = {"name": "Ole Ærø", "email": "Ole@Ærø.DK", "organisation": "Ærø Kommune"}
OLE_ACE = "ole@xn--r-3fa9c.dk"  # the suppression list's spelling
RETENTION_ENDS_ISO = "2024-05-23T00:00:00+02:00"  # the shipped conference ends + 30 days


# Helpers --------------------------------------------------------------------------------


def token_of(key: str, secret: str = SECRET) -> str:
    return message_token(key, secret.encode())


# Other spellings of the failed recipient a sample states (Original-Recipient, ARF's
# Original-Rcpt-To): replaced too, so the report is about the message's recipient.
ALSO_NAMED = {"dsn_17.txt": ("userx@example.fi",), "rfc5965_abuse.eml": ("user@example.com",)}


def bounce(name: str, key: str, address: str, *, token: str | None = None) -> bytes:
    """Sample `name` as if it came back for message `key` sent to `address`: our return path
    (with `token`, by default the message's own) where the sample has the list's envelope
    sender, and `address` where it names the recipient that failed."""
    expected = EXPECTED[name]
    raw = sample(name)
    path = return_path(BOUNCES, token if token is not None else token_of(key))
    raw = re.sub(re.escape(expected.sender.encode()), path.encode(), raw, flags=re.I)
    named = [failed for _, _, failed, _ in expected.recipients] + list(ALSO_NAMED.get(name, ()))
    for failed in named:
        raw = re.sub(re.escape(failed.encode()), address.encode(), raw, flags=re.I)
    return raw


def cli_env(redis_url: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("NOTIFIER_")}
    env |= {
        "NOTIFIER_BROKER_URL": redis_url,
        "NOTIFIER_BOUNCE_ADDRESS": BOUNCES,
        "NOTIFIER_BOUNCE_SECRET": SECRET,
        "COLUMNS": "250",  # rich's tables: no folding in the middle of what the tests read
    }
    return env | extra


def receive(raw: bytes, redis_url: str, **extra: str) -> subprocess.CompletedProcess[str]:
    """`notifier bounces receive` as an MTA's pipe runs it: the message on stdin."""
    return receive_all([raw], redis_url, **extra)[0]


def receive_all(
    raws: list[bytes], redis_url: str, **extra: str
) -> list[subprocess.CompletedProcess[str]]:
    """One `receive` per message, all at once (as an MTA runs its pipes): the start-up of
    the command is most of its time, and these tests run it often."""
    argv = [NOTIFIER, "bounces", "receive"]
    env = cli_env(redis_url, **extra)
    running = [subprocess.Popen(argv, env=env, stdin=PIPE, stdout=PIPE, stderr=PIPE) for _ in raws]
    done = []
    for proc, raw in zip(running, raws, strict=True):
        out, err = proc.communicate(raw, timeout=60)
        done.append(subprocess.CompletedProcess(argv, proc.returncode, out.decode(), err.decode()))
    return done


def outcome(done: subprocess.CompletedProcess[str]) -> str:
    assert done.returncode == 0, (done.stdout, done.stderr)
    found = re.fullmatch(r"notifier bounces receive: (\w+)\n", done.stdout)
    assert found, done.stdout
    return found.group(1)


def notifier(args: list[str], redis_url: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [NOTIFIER, *args],
        env=cli_env(redis_url),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def record(svc: Service, key: str) -> Record:
    found = svc.outbox.get(key)
    assert found is not None, key
    return found


def registered(svc: Service, *people: dict[str, str]) -> list[str]:
    """Each person registered and the confirmation delivered; the confirmations' keys."""
    found: list[str] = []
    for n, who in enumerate(people):
        found += svc.ingest(created(f"evt-{n}", f"REG-{n}", who))
    svc.deliver(found)
    assert [record(svc, k).state for k in found] == ["sent"] * len(found)
    return found


@pytest.fixture
def svc(service: Callable[..., Service]) -> Service:
    return service(**BOUNCE_SETTINGS)


@pytest.fixture
def sup(redis_client: redis.Redis) -> Suppressions:
    return Suppressions(redis_client)


# The return path ------------------------------------------------------------------------


def test_each_message_leaves_with_a_signed_return_path_and_the_same_from(
    service: Callable[..., Service], redis_client: redis.Redis, sink: Sink
) -> None:
    plain = service()
    [key] = registered(plain, METTE)
    organiser = sink.received[0]
    redis_client.flushdb()
    signed = service(**BOUNCE_SETTINGS)
    assert registered(signed, METTE) == [key]
    ours = sink.received[1]

    # Without the setting: the organiser's address, as the From header says.
    from_header = parseaddr(str(message_from_bytes(organiser.data, policy=policy.default)["From"]))
    assert organiser.sender == from_header[1] == ORGANISER_ADDRESS
    # With it: bounces+TOKEN@kl.dk, a token that verifies and names this message.
    local, _, domain = ours.sender.partition("@")
    assert (local.partition("+")[0], domain) == ("bounces", "kl.dk")
    token = local.partition("+")[2]
    assert verify(token, SECRET.encode()) == message_id(key)
    assert verify(token, b"another secret, sixteen+ chars") is None
    assert signed.outbox.key_for_bounce_id(message_id(key)) == key
    # The header does not change, and nothing else in the message does either.
    assert _headers(ours.data, "From") == _headers(organiser.data, "From")
    assert ours.data == organiser.data
    assert token.encode() not in ours.data


def _headers(data: bytes, name: str) -> list[str]:
    return [str(v) for v in message_from_bytes(data, policy=policy.default).get_all(name, [])]


def test_every_message_of_a_batch_has_its_own_return_path(svc: Service, sink: Sink) -> None:
    messages = registered(svc, METTE, JENS)
    messages += svc.ingest(reminder("evt-r", "uge"))
    svc.deliver(messages[2:])
    senders = [m.sender for m in sink.received]
    assert len(senders) == len(set(senders)) == 4
    assert set(senders) == {return_path(BOUNCES, token_of(k)) for k in messages}


# A hard bounce, end to end --------------------------------------------------------------


def test_a_hard_bounce_marks_the_message_suppresses_the_address_and_stops_later_mail(
    svc: Service, sup: Suppressions, sink: Sink, redis_url: str
) -> None:
    mette, jens, astrid = registered(svc, METTE, JENS, ASTRID)

    runs = receive_all(
        [
            # Exchange 2003's DSN (5.1.1, wrapped by a gateway), the address in upper case.
            bounce("dsn_15.txt", mette, METTE["email"].upper()),
            # Postfix's DSN (5.0.0) whose diagnostic names the address: kept, masked.
            bounce("dsn_10.txt", jens, JENS["email"]),
        ],
        redis_url,
    )
    assert [outcome(d) for d in runs] == ["bounced", "bounced"]
    bounced = record(svc, mette)
    assert (bounced.state, bounced.bounce_status) == ("bounced", "5.1.1")
    assert bounced.bounced_at is not None and abs(bounced.bounced_at - time.time()) < 60
    jens_record = record(svc, jens)
    assert (jens_record.state, jens_record.bounce_status) == ("bounced", "5.0.0")
    assert "said: 550" in jens_record.bounce_diagnostic
    assert "<j***@aarhus.dk>... User unknown" in jens_record.bounce_diagnostic
    assert record(svc, astrid).state == "sent"

    entry = sup.get("Mette.Sorensen@AARHUS.dk")
    assert entry is not None
    assert (entry.address, entry.message) == (METTE["email"], mette)
    assert entry.reason == "hard bounce 5.1.1 user_unknown"
    assert {s.address for s in sup.list()} == {METTE["email"], JENS["email"]}

    # A reminder batch: the two bounced addresses settle `suppressed` without SMTP.
    sink.received.clear()
    connections = sink.connections
    batch = svc.ingest(reminder("evt-r", "uge"))
    svc.deliver(batch)
    assert [m.recipients for m in sink.received] == [(ASTRID["email"],)]
    states = {record(svc, k).sent_to: record(svc, k) for k in batch}
    assert {a: r.state for a, r in states.items()} == {
        METTE["email"]: "suppressed",
        JENS["email"]: "suppressed",
        ASTRID["email"]: "sent",
    }
    assert states[METTE["email"]].last_reply == "suppressed: hard bounce 5.1.1 user_unknown"
    assert sink.connections == connections  # the kept session: no new one for them either
    counts = svc.outbox.counts()
    assert (counts["bounced"], counts["suppressed"], counts["sent"]) == (2, 2, 2)


def test_an_idna_address_is_one_entry_in_every_spelling(
    svc: Service, sup: Suppressions, sink: Sink, redis_client: redis.Redis, redis_url: str
) -> None:
    [ole] = registered(svc, OLE)
    assert sink.received[0].recipients == ("Ole@xn--r-3fa9c.dk",)  # the mailbox's own case
    assert outcome(receive(bounce("dsn_15.txt", ole, OLE_ACE.upper()), redis_url)) == "bounced"
    assert redis_client.hkeys(keys.SUPPRESSIONS) == [OLE_ACE.encode()]
    for spelling in ("ole@ærø.dk", "OLE@XN--R-3FA9C.DK", OLE["email"]):
        found = sup.get(spelling)
        assert found is not None and found.address == OLE_ACE
    batch = svc.ingest(reminder("evt-r", "uge"))
    svc.deliver(batch)
    assert [record(svc, k).state for k in batch] == ["suppressed"]
    assert len(sink.received) == 1


def test_status_shows_bounced_and_suppressed_rows_with_their_codes(
    svc: Service, redis_url: str
) -> None:
    mette, _ = registered(svc, METTE, JENS)
    assert outcome(receive(bounce("dsn_10.txt", mette, METTE["email"]), redis_url)) == "bounced"
    svc.deliver(svc.ingest(reminder("evt-r", "uge")))
    done = notifier(["status"], redis_url)
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert re.search(r"│ bounced\s+│\s+1 │", out) and re.search(r"│ suppressed\s+│\s+1 │", out)
    bounced_table = out.partition("bounced: accepted by the relay")[2].partition("suppressed:")[0]
    assert re.search(r"REG-0 .*mette\.sorensen@aarhus\.dk .* 5\.0\.0 host mx", bounced_table)
    assert "<m***@aarhus.dk>" in bounced_table  # the diagnostic's copy of it is masked
    suppressed_table = out.partition("suppressed: not sent")[2]
    assert re.search(r"REG-0 .*mette\.sorensen.* suppressed: hard bounce 5\.0\.0", suppressed_table)
    assert "jens" not in out


# What else can come back ----------------------------------------------------------------


def test_an_organisers_copy_is_never_suppressed(
    svc: Service, sup: Suppressions, sink: Sink, redis_url: str
) -> None:
    registered(svc, METTE)
    sup.add(ORGANISER_ADDRESS, ORGANISER, message=None, now=time.time())
    keys = svc.ingest(substituted("evt-s", "REG-0", METTE, JENS))
    svc.deliver(keys)
    copy = next(k for k in keys if record(svc, k).kind == Kind.SUBSTITUTION_COPY)
    assert record(svc, copy).state == "sent"
    assert (ORGANISER_ADDRESS,) in [m.recipients for m in sink.received]
    # A hard bounce of the copy marks it, but leaves the organiser's entry as the organiser
    # made it; without that entry, none is made.
    assert outcome(receive(bounce("dsn_15.txt", copy, ORGANISER_ADDRESS), redis_url)) == "bounced"
    assert record(svc, copy).state == "bounced"
    entry = sup.get(ORGANISER_ADDRESS)
    assert entry is not None and (entry.reason, entry.message) == (ORGANISER, None)
    sup.remove(ORGANISER_ADDRESS)
    assert outcome(receive(bounce("rfc5965_abuse.eml", copy, ORGANISER_ADDRESS), redis_url)) == (
        "complaint"
    )
    assert sup.list() == []


def test_a_delay_is_recorded_and_suppresses_nothing(
    svc: Service, sup: Suppressions, redis_url: str
) -> None:
    [mette] = registered(svc, METTE)
    assert outcome(receive(bounce("dsn_17.txt", mette, METTE["email"]), redis_url)) == "delayed"
    found = record(svc, mette)
    assert (found.state, found.delay_status, found.bounce_status) == ("sent", "4.3.0", "")
    assert "Quota exceeded" in found.delay_diagnostic
    assert found.delayed_at is not None
    assert sup.list() == []
    assert svc.outbox.counts()["bounced"] == 0


def test_a_complaint_suppresses_with_the_reason_complaint(
    svc: Service, sup: Suppressions, redis_url: str
) -> None:
    [mette] = registered(svc, METTE)
    done = receive(bounce("rfc5965_abuse.eml", mette, METTE["email"]), redis_url)
    assert outcome(done) == "complaint"
    entry = sup.get(METTE["email"])
    assert entry is not None and (entry.reason, entry.message) == (COMPLAINT, mette)
    assert record(svc, mette).state == "sent"  # it was delivered: the attendee complained


def test_a_failure_on_a_temporary_condition_bounces_without_suppressing(
    svc: Service, sup: Suppressions, redis_url: str
) -> None:
    """Postfix gives up after its queue lifetime with `Action: failed` and the 4.x.x of the
    last attempt: this message is lost, but the mailbox may work tomorrow."""
    [mette] = registered(svc, METTE)
    raw = bounce("dsn_10.txt", mette, METTE["email"]).replace(b"Status: 5.0.0", b"Status: 4.4.7")
    assert outcome(receive(raw, redis_url)) == "bounced"
    found = record(svc, mette)
    assert (found.state, found.bounce_status) == ("bounced", "4.4.7")
    assert sup.list() == []


@pytest.mark.parametrize(
    ("name", "status"), [("exim_01.txt", "5.1.1"), ("microsoft_01.txt", "5.0.0")]
)
def test_a_non_standard_bounce_works_end_to_end(
    svc: Service, sup: Suppressions, sink: Sink, redis_url: str, name: str, status: str
) -> None:
    """No delivery-status part: flufl.bounce's heuristics find the address, the text the code."""
    [mette, _] = registered(svc, METTE, JENS)
    assert outcome(receive(bounce(name, mette, METTE["email"]), redis_url)) == "bounced"
    assert record(svc, mette).bounce_status == status
    entry = sup.get(METTE["email"])
    assert entry is not None and entry.reason.startswith(f"hard bounce {status}")
    sink.received.clear()
    svc.deliver(svc.ingest(reminder("evt-r", "uge")))
    assert [m.recipients for m in sink.received] == [(JENS["email"],)]


# What changes nothing -------------------------------------------------------------------


def _flipped(token: str) -> str:
    return token[:-1] + ("a" if token[-1] != "a" else "b")


def test_forged_tokens_are_counted_and_change_nothing(
    svc: Service, redis_client: redis.Redis, redis_url: str
) -> None:
    [mette] = registered(svc, METTE)
    other_secret = token_of(mette, "another secret of sixteen or more")
    before = _store(redis_client)
    tokens = [other_secret, _flipped(token_of(mette)), token_of(mette).upper()[:-2]]
    raws = [bounce("dsn_15.txt", mette, METTE["email"], token=t) for t in tokens]
    assert [outcome(d) for d in receive_all(raws, redis_url)] == ["forged"] * 3
    assert record(svc, mette).state == "sent"
    assert Suppressions(redis_client).list() == []
    assert BounceLog(redis_client).stats()["forged"] == 3
    assert _store(redis_client) == before  # not even a fingerprint: a forger could fill Redis


def _store(r: redis.Redis) -> dict[str, list[str]]:
    """Everything in Redis but the report counters."""
    found = everything(r)
    found.pop(keys.BOUNCE_STATS, None)
    return found


def test_the_same_report_twice_counts_once(
    svc: Service, redis_client: redis.Redis, sup: Suppressions, redis_url: str
) -> None:
    [mette] = registered(svc, METTE)
    raw = bounce("dsn_15.txt", mette, METTE["email"])
    assert outcome(receive(raw, redis_url)) == "bounced"
    first = (record(svc, mette), sup.list())
    # Again, as an IMAP poll or a second pipe delivery hands it over: CRLF, new trace headers.
    again = b"Return-Path: <>\r\nDelivered-To: x@kl.dk\r\n" + raw.replace(b"\n", b"\r\n")
    assert [outcome(d) for d in receive_all([raw, again], redis_url)] == ["duplicate"] * 2
    assert (record(svc, mette), sup.list()) == first
    stats = BounceLog(redis_client).stats()
    assert (stats["bounced"], stats["duplicate"]) == (1, 2)


def test_a_bounce_without_our_token_is_unmatched(
    svc: Service, redis_client: redis.Redis, redis_url: str
) -> None:
    [mette] = registered(svc, METTE)
    # As the list got it; and with a valid token for a message this store does not know.
    stranger = bounce("dsn_15.txt", mette, METTE["email"], token=token_of("elsewhere:REG-9:x:1"))
    runs = receive_all([sample("dsn_15.txt"), stranger], redis_url)
    assert [outcome(d) for d in runs] == ["unmatched"] * 2
    assert record(svc, mette).state == "sent"
    assert BounceLog(redis_client).stats()["unmatched"] == 2


def test_what_is_not_a_report_exits_0(redis_client: redis.Redis, redis_url: str) -> None:
    raws = [b"", b"\x00\xff\xfe garbage \x80" * 50, sample("dumbass_01.txt")]
    assert [outcome(d) for d in receive_all(raws, redis_url)] == ["unrecognised"] * 3
    assert BounceLog(redis_client).stats()["unrecognised"] == 3


# Redis down -----------------------------------------------------------------------------


@pytest.fixture
def own_redis(private_redis: Callable[..., PrivateRedis]) -> PrivateRedis:
    return private_redis(appendonly=True)


@pytest.fixture
def own_svc(
    own_redis: PrivateRedis, make_settings: Callable[..., Settings], clock: Clock
) -> Iterator[Service]:
    client = redis.Redis.from_url(own_redis.url)
    svc = Service(
        make_settings(redis_url=own_redis.url, **BOUNCE_SETTINGS),
        client,
        clock=clock,
        rand=lambda: 0.0,
    )
    yield svc
    svc.close()
    client.close()


def test_redis_down_exits_75_and_the_report_is_applied_when_it_is_back(
    own_redis: PrivateRedis, own_svc: Service
) -> None:
    [mette] = registered(own_svc, METTE)
    raw = bounce("dsn_15.txt", mette, METTE["email"])
    own_redis.stop()
    done = receive(raw, own_redis.url)
    assert done.returncode == 75, (done.stdout, done.stderr)
    assert "cannot record the report now" in done.stderr
    assert METTE["email"] not in done.stdout + done.stderr
    own_redis.start()  # its data back from the append-only file
    assert record(own_svc, mette).state == "sent"
    assert outcome(receive(raw, own_redis.url)) == "bounced"
    assert record(own_svc, mette).state == "bounced"
    assert Suppressions(own_svc.r).get(METTE["email"]) is not None


def test_a_store_failure_after_the_report_was_seen_loses_nothing(
    own_redis: PrivateRedis, own_svc: Service
) -> None:
    """Redis refuses the scripts that apply the report (a real ACL user without EVALSHA and
    EVAL; it may read and mark what it saw): exit 75, and when the MTA tries again the
    report must be applied, not taken for a duplicate of itself."""
    [mette] = registered(own_svc, METTE)
    raw = bounce("dsn_15.txt", mette, METTE["email"])
    own_svc.r.acl_setuser(
        "halfway",
        enabled=True,
        passwords=["+pw"],
        keys=["*"],
        commands=["+@all", "-evalsha", "-eval"],
    )
    halfway = f"redis://halfway:pw@127.0.0.1:{own_redis.port}/0"
    done = receive(raw, halfway)
    assert done.returncode == 75, (done.stdout, done.stderr)
    assert record(own_svc, mette).state == "sent"
    assert outcome(receive(raw, own_redis.url)) == "bounced"
    assert Suppressions(own_svc.r).get(METTE["email"]) is not None


# No addresses in what receive says ------------------------------------------------------


def test_receive_says_no_address(svc: Service, redis_url: str) -> None:
    mette, jens = registered(svc, METTE, JENS)
    raws = [
        bounce("dsn_10.txt", mette, METTE["email"]),
        bounce("exim_01.txt", jens, JENS["email"]),
        bounce("rfc5965_abuse.eml", jens, JENS["email"]),
        bounce("dsn_10.txt", mette, METTE["email"], token=_flipped(token_of(mette))),
    ]
    runs = receive_all(raws, redis_url)
    said = "".join(d.stdout + d.stderr for d in runs).casefold()
    assert [outcome(d) for d in runs] == ["bounced", "bounced", "complaint", "forged"]
    for who in (METTE, JENS):
        local = who["email"].partition("@")[0]
        assert local not in said and who["name"].casefold() not in said


def test_intake_logs_no_address(
    svc: Service, redis_client: redis.Redis, caplog: pytest.LogCaptureFixture
) -> None:
    mette, jens = registered(svc, METTE, JENS)
    intake = Intake(svc.settings, redis_client)
    caplog.set_level(logging.DEBUG)
    outcomes = [
        intake.receive(bounce("dsn_10.txt", mette, METTE["email"])),
        intake.receive(bounce("exim_01.txt", jens, JENS["email"])),
        intake.receive(bounce("dsn_17.txt", jens, JENS["email"])),
    ]
    assert outcomes == ["bounced", "bounced", "delayed"]
    assert caplog.records, "nothing logged: the test would see nothing"
    logged = "\n".join(
        f"{r.getMessage()} {sorted(map(str, r.__dict__.values()))}" for r in caplog.records
    ).casefold()
    for who in (METTE, JENS):
        assert who["email"].partition("@")[0] not in logged


# Retention ------------------------------------------------------------------------------


def test_a_purged_conference_keeps_its_bounces_without_addresses(
    svc: Service, redis_client: redis.Redis, sup: Suppressions, redis_url: str
) -> None:
    mette, jens = registered(svc, METTE, JENS)
    raws = [bounce("dsn_10.txt", mette, METTE["email"]), bounce("dsn_17.txt", jens, JENS["email"])]
    assert [outcome(d) for d in receive_all(raws, redis_url)] == ["bounced", "delayed"]
    conf = Conferences(SHIPPED_CONFERENCES).get(CONFERENCE)
    report = purge(redis_client, conf, datetime.fromisoformat(RETENTION_ENDS_ISO))
    assert report.suppressions == 1
    bounced, delayed = record(svc, mette), record(svc, jens)
    assert (bounced.state, bounced.bounce_status, bounced.sent_to) == (
        "bounced",
        "5.0.0",
        ANON_EMAIL,
    )
    assert "said: 550" in bounced.bounce_diagnostic
    assert delayed.sent_to == ANON_EMAIL and delayed.delay_status == "4.3.0"
    dump = _dump(redis_client)
    for who in (METTE, JENS):
        local = who["email"].partition("@")[0]
        leftover = [k for k, v in dump if local in v and k != keys.SUPPRESSIONS]
        assert leftover == []
    entry = sup.get(METTE["email"])  # still suppressed, but no longer tied to the conference
    assert entry is not None and entry.message is None
    # A report for a purged message no longer finds it.
    again = bounce("dsn_15.txt", mette, METTE["email"])
    assert outcome(receive(again, redis_url)) == "unmatched"


def _dump(r: redis.Redis) -> list[tuple[str, str]]:
    return [(k, v.casefold()) for k, vs in everything(r).items() for v in vs]


def test_suppressions_older_than_the_cut_off_are_purged(
    svc: Service, sup: Suppressions, redis_client: redis.Redis, redis_url: str
) -> None:
    [mette] = registered(svc, METTE)
    now = time.time()
    sup.add("gammel@kl.dk", ORGANISER, message=None, now=now - 400 * 86_400)
    assert outcome(receive(bounce("dsn_15.txt", mette, METTE["email"]), redis_url)) == "bounced"
    days = svc.settings.suppression_days
    assert purge_suppressions(redis_client, now - days * 86_400) == 1
    assert [s.address for s in sup.list()] == [METTE["email"]]
    assert purge_suppressions(redis_client, time.time() + 1) == 1
    assert sup.list() == []


def test_a_broken_setting_keeps_the_report_for_later(redis_url: str, tmp_path: Path) -> None:
    done = receive(
        sample("dsn_15.txt"),
        redis_url,
        NOTIFIER_BOUNCE_SECRET="",
        NOTIFIER_BOUNCE_SECRET_FILE=str(tmp_path / "missing"),
    )
    assert done.returncode == 75, (done.stdout, done.stderr)
