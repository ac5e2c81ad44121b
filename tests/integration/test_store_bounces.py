"""The store's side of bounces on a real Redis: a message settles as suppressed through the
finish script, a report moves a sent message to bounced (once) or records a delay, and every
transition keeps the counters (global and per batch) and the status sets equal to the
messages' states. Bounce ids lead back to their messages; the finish records the envelope
recipient; status lists both new states."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime

import pytest
import redis

from notifier.bounces.token import message_id
from notifier.domain.notice import Kind, Notice, Person
from notifier.store import keys
from notifier.store.batches import Batches
from notifier.store.codec import text
from notifier.store.outbox import STATES, Claim, Outbox, Settlement
from notifier.store.roster import Roster
from notifier.store.status import status
from tests.integration.test_purge import everything

pytestmark = pytest.mark.integration

CONF = "konf-2024"
BATCH = f"{CONF}:uge"
PLACEHOLDER = Person("Deltager", "pladsholder@example.invalid")  # what a reminder names
ADDRESS = "mette.sorensen@aarhus.dk"
NOW = 1000.0
REASON = "hard bounce 5.1.1: 550 5.1.1 <m***@aarhus.dk>: user unknown"
SET_OF = {"failed": keys.FAILED, "unknown": keys.UNKNOWN, "bounced": keys.BOUNCED}
SET_OF |= {"suppressed": keys.SUPPRESSED}


@pytest.fixture
def box(redis_client: redis.Redis) -> Outbox:
    return Outbox(redis_client, lease_seconds=60, unknown_resends=0, store_clock=lambda: NOW)


def reminder(registration: str) -> Notice:
    key = f"reminder:{BATCH}:{registration}"
    return Notice(key, Kind.REMINDER, CONF, registration, PLACEHOLDER, batch=BATCH)


def claimed(box: Outbox, notice: Notice) -> Claim:
    box.create(notice, NOW)
    claim = box.claim(notice.key)
    assert claim is not None
    return claim


def settled(box: Outbox, notice: Notice, state: str, reply: str = "250 2.0.0 ok") -> None:
    claim = claimed(box, notice)
    assert box.finish(claim, Settlement(state, reply, recipient=ADDRESS)) == 1


def assert_consistent(r: redis.Redis) -> dict[str, int]:
    """The counters (global and the batch's) and the status sets say what the messages say;
    returns the states' numbers."""
    states: dict[str, str] = {}
    for rkey in r.scan_iter(match=keys.message("*")):
        states[text(rkey).removeprefix(keys.message(""))] = text(r.hget(rkey, "state") or b"")
    actual = Counter(states.values())
    expected = {s: actual.get(s, 0) for s in STATES}
    for counts_key in (keys.COUNTS, keys.batch_counts(BATCH)):
        got = {text(k): int(v) for k, v in r.hgetall(counts_key).items()}
        assert {s: got.get(s, 0) for s in STATES} == expected, counts_key
        assert set(got) <= set(STATES)
    for state, set_key in SET_OF.items():
        members = {text(m) for m in r.smembers(set_key)}
        assert members == {k for k, s in states.items() if s == state}, state
    return {s: n for s, n in expected.items() if n}


def snapshot(r: redis.Redis) -> dict[str, list[str]]:
    """Every key with every value (DUMP would not do: a hash's field order may change)."""
    return everything(r)


def test_a_suppressed_message_is_settled_like_a_failed_one(
    redis_client: redis.Redis, box: Outbox
) -> None:
    notice = reminder("R1")
    claim = claimed(box, notice)
    assert box.finish(claim, Settlement("suppressed", REASON, recipient=ADDRESS)) == 1

    assert assert_consistent(redis_client) == {"suppressed": 1}
    assert redis_client.zscore(keys.SENDING, notice.key) is None  # out of the sweeper's way
    assert box.due_for_sweeper(limit=10, visibility=0) == []
    assert box.claim(notice.key) is None  # never sent afterwards
    assert box.defer(notice.key, NOW + 30) is False
    record = box.get(notice.key)
    assert record is not None
    assert (record.state, record.last_reply, record.sent_to) == ("suppressed", REASON, ADDRESS)
    st = status(redis_client)
    assert st.counts["suppressed"] == 1 and st.done
    assert [(f.key, f.recipient, f.reply) for f in st.suppressed] == [(notice.key, ADDRESS, REASON)]
    assert st.failures == st.bounced == ()


def test_a_hard_bounce_moves_a_sent_message_once(redis_client: redis.Redis, box: Outbox) -> None:
    bounced, other = reminder("R1"), reminder("R2")
    settled(box, bounced, "sent")
    settled(box, other, "sent")
    assert assert_consistent(redis_client) == {"sent": 2}

    assert box.bounce(bounced.key, "5.1.1", "550 5.1.1 user unknown", NOW + 5) == "bounced"
    assert assert_consistent(redis_client) == {"sent": 1, "bounced": 1}
    before = snapshot(redis_client)
    # The same report again, or a later one: nothing moves, the first diagnostic stays.
    assert box.bounce(bounced.key, "5.2.1", "mailbox disabled", NOW + 9) == "bounced"
    assert snapshot(redis_client) == before

    record = box.get(bounced.key)
    assert record is not None
    assert (record.state, record.bounce_status, record.bounce_diagnostic, record.bounced_at) == (
        "bounced",
        "5.1.1",
        "550 5.1.1 user unknown",
        NOW + 5,
    )
    assert record.last_reply == "250 2.0.0 ok"  # what the relay said at the time stays
    st = status(redis_client)
    assert (st.counts["bounced"], st.counts["sent"], st.finished, st.done) == (1, 1, 2, True)
    assert [(f.key, f.recipient, f.reply) for f in st.bounced] == [
        (bounced.key, ADDRESS, "5.1.1 550 5.1.1 user unknown")
    ]
    opened(redis_client, box)
    in_batch = status(redis_client, BATCH)
    assert (in_batch.counts["bounced"], in_batch.bounced) == (1, st.bounced)
    assert in_batch.failures == in_batch.unknown == in_batch.suppressed == ()


def opened(r: redis.Redis, box: Outbox) -> None:
    """The batch's record, as the planner opens it (status finds a batch by it)."""
    batches = Batches(r, box, Roster(r, box))
    batches.open(CONF, BATCH.partition(":")[2], datetime(2024, 4, 1, tzinfo=UTC), NOW)


def test_a_batch_lists_its_suppressed_messages(redis_client: redis.Redis, box: Outbox) -> None:
    opened(redis_client, box)
    sent, suppressed = reminder("R1"), reminder("R2")
    settled(box, sent, "sent")
    settled(box, suppressed, "suppressed", REASON)
    st = status(redis_client, BATCH)
    assert (st.counts["sent"], st.counts["suppressed"], st.finished) == (1, 1, 2)
    assert [(f.key, f.recipient, f.reply) for f in st.suppressed] == [
        (suppressed.key, ADDRESS, REASON)
    ]
    assert status(redis_client, BATCH, failures=False).suppressed == ()  # counts only


def test_a_bounce_takes_a_message_out_of_unknown(redis_client: redis.Redis, box: Outbox) -> None:
    notice = reminder("R1")
    settled(box, notice, "unknown", "no reply to the final dot")
    assert assert_consistent(redis_client) == {"unknown": 1}
    assert box.bounce(notice.key, "5.1.1", "gone", NOW) == "bounced"
    assert assert_consistent(redis_client) == {"bounced": 1}  # and out of the unknown set
    assert status(redis_client).unknown == ()


def test_a_message_of_the_previous_version_bounces_in_its_batch_too(
    redis_client: redis.Redis, box: Outbox
) -> None:
    notice = reminder("R1")
    settled(box, notice, "sent")
    redis_client.hdel(keys.message(notice.key), "batch_counts_key")  # as created before
    assert box.bounce(notice.key, "5.1.1", "gone", NOW) == "bounced"
    assert assert_consistent(redis_client) == {"bounced": 1}


def _in_state(box: Outbox, state: str) -> Notice:
    notice = reminder("R9")
    if state == "missing":
        return notice
    box.create(notice, NOW)
    if state == "retrying":
        assert box.defer(notice.key, NOW + 30)
    elif state != "queued":
        claim = box.claim(notice.key)
        assert claim is not None
        if state != "sending":
            assert box.finish(claim, Settlement(state, "x", recipient=ADDRESS)) == 1
    return notice


@pytest.mark.parametrize(
    "state", ["missing", "queued", "retrying", "sending", "failed", "skipped", "suppressed"]
)
def test_a_report_for_a_message_the_relay_never_accepted_changes_nothing(
    redis_client: redis.Redis, box: Outbox, state: str
) -> None:
    notice = _in_state(box, state)
    before = snapshot(redis_client)
    assert box.bounce(notice.key, "5.1.1", "user unknown", NOW) == state
    assert box.delay(notice.key, "4.4.7", "still trying", NOW) is False
    assert snapshot(redis_client) == before
    assert_consistent(redis_client)


def test_a_delay_is_recorded_and_the_state_stays(redis_client: redis.Redis, box: Outbox) -> None:
    notice = reminder("R1")
    settled(box, notice, "sent")
    assert box.delay(notice.key, "4.4.7", "retrying for 4 hours", NOW + 1)
    assert box.delay(notice.key, "4.4.7", "retrying for 24 hours", NOW + 2)  # the newest wins
    assert assert_consistent(redis_client) == {"sent": 1}
    record = box.get(notice.key)
    assert record is not None
    assert (record.state, record.delay_status, record.delay_diagnostic, record.delayed_at) == (
        "sent",
        "4.4.7",
        "retrying for 24 hours",
        NOW + 2,
    )
    assert (record.bounce_status, record.bounced_at) == ("", None)
    # A hard bounce after the delays still moves it.
    assert box.bounce(notice.key, "5.4.7", "expired", NOW + 3) == "bounced"
    assert box.delay(notice.key, "4.4.7", "late", NOW + 4) is False
    assert assert_consistent(redis_client) == {"bounced": 1}


def test_a_long_diagnostic_is_cut(box: Outbox) -> None:
    notice = reminder("R1")
    settled(box, notice, "sent")
    box.bounce(notice.key, "5.1.1", "x" * 5000, NOW)
    record = box.get(notice.key)
    assert record is not None and len(record.bounce_diagnostic) == 1000


def test_every_message_has_a_bounce_id_that_leads_back_to_it(
    redis_client: redis.Redis, box: Outbox
) -> None:
    batch, single = (
        reminder("R1"),
        Notice("evt-7:confirmation", Kind.CONFIRMATION, CONF, "R7", PLACEHOLDER),
    )
    for notice in (batch, single):
        box.create(notice, NOW)
        assert box.key_for_bounce_id(message_id(notice.key)) == notice.key
    assert box.key_for_bounce_id(message_id("no-such-message")) is None
    assert redis_client.hlen(keys.BOUNCE_IDS) == 2
    box.create(batch, NOW)  # exists already: nothing changes
    assert redis_client.hlen(keys.BOUNCE_IDS) == 2


def test_a_message_queued_before_bounce_ids_gets_its_id_when_sent(
    redis_client: redis.Redis, box: Outbox
) -> None:
    notice = reminder("R1")
    box.create(notice, NOW)
    redis_client.delete(keys.BOUNCE_IDS)  # as the previous version created it
    claim = box.claim(notice.key)
    assert claim is not None and box.key_for_bounce_id(message_id(notice.key)) is None
    box.finish(claim, Settlement("sent", "250 ok", recipient=ADDRESS))
    assert box.key_for_bounce_id(message_id(notice.key)) == notice.key


def test_the_finish_records_the_envelope_recipient(redis_client: redis.Redis, box: Outbox) -> None:
    notice = reminder("R1")
    claim = claimed(box, notice)
    assert box.finish(claim, Settlement("retrying", "451 later", 30, recipient=ADDRESS)) == 1
    assert box.defer(notice.key, NOW)  # due now
    again = box.claim(notice.key)
    assert again is not None
    assert box.finish(again, Settlement("sent", "250 ok")) == 1  # '' keeps what is stored
    record = box.get(notice.key)
    assert record is not None and record.sent_to == ADDRESS
    # A message finished before the recipient was recorded: the notice's address.
    redis_client.hdel(keys.message(notice.key), "sent_to")
    record = box.get(notice.key)
    assert record is not None and record.sent_to == PLACEHOLDER.email


def test_counts_list_every_state_including_the_new_ones(box: Outbox) -> None:
    assert list(box.counts()) == list(STATES)
    assert {"bounced", "suppressed"} <= set(STATES)
