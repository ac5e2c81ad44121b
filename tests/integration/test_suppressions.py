"""The suppression list and the report log on a real Redis, and what the retention purge
leaves of both: a purged conference's messages keep no address, and no suppression entry
ties an address to them; suppressions go by age."""

from __future__ import annotations

import asyncio
import json
from datetime import datetime
from zoneinfo import ZoneInfo

import pytest
import redis
import redis.asyncio

from notifier.bounces.token import message_id
from notifier.domain.notice import Kind, Notice, Person
from notifier.loading import Conferences
from notifier.settings import SHIPPED_CONFERENCES
from notifier.store import keys, lua
from notifier.store.bouncelog import OUTCOMES, SEEN_SECONDS, BounceLog
from notifier.store.codec import text
from notifier.store.outbox import Outbox, Settlement
from notifier.store.purge import ANON_EMAIL, PurgeReport, purge, purge_suppressions
from notifier.store.suppressions import (
    COMPLAINT,
    ORGANISER,
    AsyncSuppressions,
    Suppressions,
    hard_bounce_reason,
)
from tests.events import ASTRID, CONFERENCE, JENS, METTE
from tests.integration.test_purge import everything, strings, traces

pytestmark = pytest.mark.integration

T0 = 1_700_000_000.0
AERO = "mette@xn--r-3fa9c.dk"  # Ærø's A-label


@pytest.fixture
def sup(redis_client: redis.Redis) -> Suppressions:
    return Suppressions(redis_client)


def test_every_spelling_is_one_entry(redis_client: redis.Redis, sup: Suppressions) -> None:
    assert sup.add("Mette@Ærø.DK", COMPLAINT, message="m1", now=T0) is True
    for spelling in ("mette@ærø.dk", "METTE@XN--R-3FA9C.DK", AERO):
        found = sup.get(spelling)
        assert found is not None and (found.address, found.reason) == (AERO, COMPLAINT)
    assert redis_client.hkeys(keys.SUPPRESSIONS) == [AERO.encode()]
    assert sup.get("mette@xn--r-xfa4b.dk") is None  # "ãrð": another domain
    assert sup.remove("METTE@ærø.dk") is True
    assert sup.remove(AERO) is False
    assert sup.get(AERO) is None


def test_the_newest_entry_is_kept(sup: Suppressions) -> None:
    bounce = hard_bounce_reason("5.1.1", "user unknown")
    assert sup.add("a@kl.dk", bounce, message="m1", now=T0) is True
    assert sup.add("A@KL.DK", COMPLAINT, message="m2", now=T0 + 10) is False
    found = sup.get("a@kl.dk")
    assert found is not None and (found.reason, found.at, found.message) == (
        COMPLAINT,
        T0 + 10,
        "m2",
    )
    # A report handled late (older than the entry) does not replace it.
    assert sup.add("a@kl.dk", bounce, message="m0", now=T0 + 5) is False
    assert sup.get("a@kl.dk") == found


def test_the_list_is_sorted_by_time_and_holds_only_what_suppression_needs(
    redis_client: redis.Redis, sup: Suppressions
) -> None:
    sup.add("late@kl.dk", COMPLAINT, message="m2", now=T0 + 2)
    sup.add("early@kl.dk", ORGANISER, message=None, now=T0)
    sup.add("middle@kl.dk", hard_bounce_reason("5.1.1", "gone"), message="m1", now=T0 + 1)
    listed = sup.list()
    assert [(s.address, s.at, s.message) for s in listed] == [
        ("early@kl.dk", T0, None),
        ("middle@kl.dk", T0 + 1, "m1"),
        ("late@kl.dk", T0 + 2, "m2"),
    ]
    assert listed[1].reason == "hard bounce 5.1.1: gone"
    stored = json.loads(redis_client.hget(keys.SUPPRESSIONS, "early@kl.dk") or b"")
    assert stored == {"reason": ORGANISER, "at": T0, "message": None}


def test_a_hard_bounce_reason_masks_addresses_before_it_cuts() -> None:
    said = "550 5.1.1 <mette.sorensen@aarhus.dk>:\r\n   Recipient address rejected"
    reason = hard_bounce_reason("5.1.1", said)
    assert reason == "hard bounce 5.1.1: 550 5.1.1 <m***@aarhus.dk>: Recipient address rejected"
    # An address across the 200th character: cut first, "mette.sorensen@aarh" would no
    # longer look like an address to the mask and would be kept in clear.
    long = "x" * 190 + " mette.sorensen@aarhus.dk and more"
    reason = hard_bounce_reason("5.1.1", long)
    assert "sorensen" not in reason
    assert len(reason) == len("hard bounce 5.1.1: ") + 200
    # The mailbox name alone, which the mask cannot recognise, given the address.
    alone = "550 User Mette.Sorensen unknown; mette.sorensen@aarhus.dk rejected"
    assert hard_bounce_reason("5.1.1", alone, "mette.sorensen@aarhus.dk") == (
        "hard bounce 5.1.1: 550 User m*** unknown; m***@aarhus.dk rejected"
    )
    assert hard_bounce_reason("5.1.1", "Bo is away", "bo@kl.dk").endswith("Bo is away")


def test_delivery_asks_with_one_call_on_its_asyncio_client(
    redis_url: str, sup: Suppressions
) -> None:
    sup.add("Mette@Ærø.DK", COMPLAINT, message=None, now=T0)

    async def ask() -> list[str | None]:
        client = redis.asyncio.Redis.from_url(redis_url)
        try:
            found = AsyncSuppressions(client)
            return [await found.reason("mette@ærø.dk"), await found.reason("jens@ærø.dk")]
        finally:
            await client.aclose()

    assert asyncio.run(ask()) == [COMPLAINT, None]


def test_suppressions_are_purged_by_age(redis_client: redis.Redis, sup: Suppressions) -> None:
    sup.add("old@kl.dk", COMPLAINT, message=None, now=T0)
    sup.add("edge@kl.dk", COMPLAINT, message=None, now=T0 + 100)
    sup.add("new@kl.dk", COMPLAINT, message=None, now=T0 + 200)
    assert purge_suppressions(redis_client, T0 + 100) == 1  # strictly older than the cut-off
    assert [s.address for s in sup.list()] == ["edge@kl.dk", "new@kl.dk"]
    assert purge_suppressions(redis_client, T0 + 100) == 0
    assert purge_suppressions(redis_client, T0 + 1000) == 2
    assert redis_client.exists(keys.SUPPRESSIONS) == 0


def test_an_entry_renewed_while_the_purge_reads_is_kept(redis_client: redis.Redis) -> None:
    # The purge's compare-and-set: it deletes an entry only if it is still what it read.
    replace = redis_client.register_script(lua.source("replace_unchanged.lua"))
    sup = Suppressions(redis_client)
    sup.add("a@kl.dk", COMPLAINT, message=None, now=T0)
    read = redis_client.hget(keys.SUPPRESSIONS, "a@kl.dk")
    assert read is not None
    sup.add("a@kl.dk", COMPLAINT, message=None, now=T0 + 50)  # a new complaint meanwhile
    assert replace(keys=[keys.SUPPRESSIONS], args=["a@kl.dk", read, ""]) == 0
    assert sup.get("a@kl.dk") is not None
    now = redis_client.hget(keys.SUPPRESSIONS, "a@kl.dk")
    assert now is not None
    assert replace(keys=[keys.SUPPRESSIONS], args=["a@kl.dk", now, ""]) == 1
    assert sup.get("a@kl.dk") is None


def test_a_report_is_handled_once_and_every_outcome_counted(redis_client: redis.Redis) -> None:
    log = BounceLog(redis_client)
    fingerprint = "<dsn-1@relay.kl.dk> mette.sorensen@aarhus.dk 5.1.1"
    assert log.first(fingerprint, T0) is True
    assert log.first(fingerprint, T0 + 1) is False
    assert log.first(fingerprint + " ", T0) is True
    [key] = [text(k) for k in redis_client.scan_iter(match=keys.bounce_report("*"))][:1]
    assert "aarhus" not in key and "mette" not in key  # only a digest is stored
    assert SEEN_SECONDS - 5 <= redis_client.ttl(key) <= SEEN_SECONDS
    for outcome in ("bounced", "duplicate", "bounced", "forged"):
        log.count(outcome)
    assert log.stats() == dict.fromkeys(OUTCOMES, 0) | {"bounced": 2, "duplicate": 1, "forged": 1}
    with pytest.raises(ValueError):
        log.count("")


# -- the conference's retention purge ---------------------------------------------------

CPH = ZoneInfo("Europe/Copenhagen")
RETENTION_ENDS = datetime(2024, 5, 23, 0, 0, tzinfo=CPH)  # the shipped conference's
OTHER = "andet-traef-2099"
BATCH = f"{CONFERENCE}:uge"
LEFT = Person(JENS["name"], JENS["email"], JENS["organisation"])  # planned: gave the seat away
SEEDED = [METTE, JENS, ASTRID]


def _notice(reg: str, recipient: Person = LEFT, conference: str = CONFERENCE) -> Notice:
    key = f"reminder:{conference}:uge:{reg}"
    return Notice(key, Kind.REMINDER, conference, reg, recipient, batch=BATCH)


def _settle(box: Outbox, notice: Notice, end: Settlement) -> None:
    box.create(notice, T0)
    claim = box.claim(notice.key)
    assert claim is not None and box.finish(claim, end) == 1


def _seed(r: redis.Redis) -> tuple[Outbox, Suppressions]:
    """A reminder batch whose seat R1 passed from Jens to Mette before it was sent: the
    notice names Jens, the envelope Mette. Mette's bounced, Astrid's was delayed, R3's went
    nowhere (Astrid is suppressed), R4 waits for a retry; one message of a later conference."""
    box, sup = Outbox(r, lease_seconds=60, store_clock=lambda: T0), Suppressions(r)
    mette, astrid = METTE["email"], ASTRID["email"]
    _settle(box, _notice("R1"), Settlement("sent", "250 ok", recipient=mette))
    said = f"550 5.1.1 <{mette}>: user mette.sorensen unknown (left)"
    assert box.bounce(_notice("R1").key, "5.1.1", said, T0 + 60) == "bounced"
    reason = hard_bounce_reason("5.1.1", said, mette)
    sup.add(mette, reason, message=_notice("R1").key, now=T0 + 60)
    _settle(box, _notice("R2"), Settlement("sent", "250 ok", recipient=astrid))
    assert box.delay(_notice("R2").key, "4.4.7", f"queued for {astrid}", T0 + 30)
    sup.add(astrid, ORGANISER, message=None, now=T0 + 70)
    reason = hard_bounce_reason("5.1.1", f"<{astrid}> unknown", astrid)
    _settle(box, _notice("R3"), Settlement("suppressed", reason, recipient=astrid))
    _settle(box, _notice("R4"), Settlement("retrying", f"451 {astrid} busy", 60, astrid))
    later = _notice("R5", Person("Frida", "frida@kolding.dk"), OTHER)
    _settle(box, later, Settlement("sent", "250 ok", recipient="frida@kolding.dk"))
    box.bounce(later.key, "5.1.1", "gone", T0 + 60)
    sup.add("frida@kolding.dk", COMPLAINT, message=later.key, now=T0 + 80)
    return box, sup


def _traces(r: redis.Redis) -> set[tuple[str, str]]:
    needles = [t for p in SEEDED for t in traces(p, [])]
    return {
        (key, n)
        for key, values in everything(r).items()
        for value in values
        for s in strings(value)
        for n in needles
        if n in s.casefold()
    }


def _purge(r: redis.Redis) -> PurgeReport:
    return purge(r, Conferences(SHIPPED_CONFERENCES).get(CONFERENCE), RETENTION_ENDS)


def test_the_purge_leaves_no_address_with_the_conference_and_keeps_suppressing(
    redis_client: redis.Redis,
) -> None:
    r = redis_client
    _, sup = _seed(r)
    assert {key for key, _ in _traces(r)} > {keys.SUPPRESSIONS}, "scanner blind"
    report = _purge(r)
    assert (report.messages, report.settled, report.suppressions) == (4, 1, 1)
    # What is left of the seeded people: only the suppression list's own keys (its fields).
    assert {key for key, _ in _traces(r)} == {keys.SUPPRESSIONS}
    needles = [t for p in SEEDED for t in traces(p, [])]
    entries = [text(v).casefold() for v in r.hvals(keys.SUPPRESSIONS)]
    assert [(e, n) for e in entries for n in needles if n in e] == []
    assert set(r.hkeys(keys.SUPPRESSIONS)) == {
        METTE["email"].encode(),
        ASTRID["email"].encode(),
        b"frida@kolding.dk",
    }
    mette = sup.get(METTE["email"])
    assert mette is not None and mette.message is None  # no link to the conference left
    assert mette.reason.startswith("hard bounce 5.1.1: 550 5.1.1 <m***@aarhus.dk>")
    frida = sup.get("frida@kolding.dk")
    assert frida is not None and frida.message == _notice("R5", conference=OTHER).key
    # The suppression list's own retention takes the rest.
    assert purge_suppressions(r, T0 + 1000) == 3
    assert _traces(r) == set()


def test_the_purged_messages_keep_their_states_without_addresses_or_bounce_ids(
    redis_client: redis.Redis,
) -> None:
    r = redis_client
    box, _ = _seed(r)
    untouched = everything(r)
    dry = purge(r, Conferences(SHIPPED_CONFERENCES).get(CONFERENCE), RETENTION_ENDS, dry_run=True)
    assert everything(r) == untouched and dry.suppressions == 1
    _purge(r)
    records = {n: box.get(_notice(n).key) for n in ("R1", "R2", "R3", "R4")}
    assert {n: rec.state for n, rec in records.items() if rec} == {
        "R1": "bounced",
        "R2": "sent",
        "R3": "suppressed",
        "R4": "skipped",
    }
    assert {rec.sent_to for rec in records.values() if rec} == {ANON_EMAIL}
    bounced, delayed = records["R1"], records["R2"]
    assert bounced is not None and bounced.bounce_status == "5.1.1"
    assert bounced.bounce_diagnostic == "550 5.1.1 <[fjernet]>: user [fjernet] unknown (left)"
    assert delayed is not None and delayed.delay_diagnostic == "queued for [fjernet]"
    for n in ("R1", "R2", "R3", "R4"):
        assert box.key_for_bounce_id(message_id(_notice(n).key)) is None
    assert box.key_for_bounce_id(message_id(_notice("R5", conference=OTHER).key)) is not None
    after = everything(r)
    again = _purge(r)
    assert everything(r) == after and again.changed == 0
    assert "nothing left to purge" in again.lines()[-1]
