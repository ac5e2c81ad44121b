"""Retention: anonymise a past conference's personal data once its retention period is over.

A conference's data may be purged from `Conference.ends_at + retention_days` on (the
conference file's `retention_days`, default 30). What the purge does, per Redis key:

- seats, `notifier:seat:<conference>:<registration>` (found through the roster set
  `notifier:roster:<conference>`): the attendee's name, address and organisation are replaced
  by fixed placeholders, and the invite UIDs that key `sequences` are relabelled
  (`anonymiseret-1`, ...). A UID is a SHA-256 of conference, registration and address: anyone
  who can guess the address (fornavn.efternavn@kommune.dk) can confirm it, so it is personal
  data too. Status, times and SEQUENCE values stay.
- outbox messages, `notifier:msg:<key>` whose stored notice names the conference: recipient,
  previous and successor are replaced, the invite UID too, the envelope recipient
  (`sent_to`) too, and addresses (and the names of the notice's people) are cut out of
  `last_reply` and of a delivery report's diagnostics (`bounce_diagnostic`,
  `delay_diagnostic`, also cut to 200 characters). State, attempts, kind, batch,
  registration id and times stay, so `notifier status` counts are unchanged. A message that
  has not settled (queued, retrying, or a claim whose lease ran out) would otherwise be sent
  to the placeholder address later: the outbox's skip script settles it as `skipped`,
  moving the counters and the sweeper's indexes as every other transition does. A message
  held by a live claim is left alone and counted as busy; the next run takes it.
- the messages' bounce ids, in the hash `notifier:bounce-ids`: removed, so a report that
  arrives later is unmatched. Suppression entries whose message is one of the conference's
  (hash `notifier:suppressions`) lose that link, so that no entry ties an address to the
  conference; the address stays suppressed. Suppressions are not per conference: the
  retention purge removes them by age (`purge_suppressions`).
- dead letters, in the hash `notifier:dead`, whose payload's `conference` is the slug (the
  payload may be an object or JSON text): the payload is dropped, `purged_at` is set, and
  addresses and the payload's names are cut out of the reason, event id, type and field
  paths (an unknown field's path holds the sender's key, which can be anything). Id, time
  and field paths stay. A dead letter that names no conference, or one that does not exist,
  cannot be attributed and is not touched.

Event markers, batches and counters hold no personal data and are not touched.

Cost: a message's key does not say its conference, so the outbox is found with one
`SCAN MATCH notifier:msg:* TYPE hash` over the whole keyspace plus one pipelined HGET of the
notice per 500 keys: O(all keys) per run, however many conferences are purged in it
(`purge_expired` purges every expired conference in one pass). Each changed record is
rewritten in its own WATCH/MULTI transaction, so a worker's concurrent state change is
never lost (the purge retries that record). An index set per conference, filled by the
outbox's create script, would make this O(the conference's messages).

Purging is idempotent: a record already anonymised is not rewritten, and a second run
reports that nothing was left. Redis' AOF and RDB files and their backups keep the old
values until they are rewritten or roll off (see SECURITY.md).
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from functools import partial
from typing import Any, TypeVar

import redis

from notifier.bounces.token import message_id
from notifier.domain.conference import Conference
from notifier.domain.notice import Notice, Person
from notifier.domain.plan import Seat
from notifier.errors import ConfigError, NotifierError
from notifier.loading import Conferences
from notifier.mail import danish
from notifier.store import keys, outbox
from notifier.store.codec import text
from notifier.store.suppressions import Suppressions

log = logging.getLogger(__name__)
T = TypeVar("T")

ANON_NAME = "Anonymiseret"
ANON_EMAIL = "anonymiseret@anonymiseret.invalid"  # .invalid: RFC 2606, never deliverable
ANON_ORGANISATION = "Anonymiseret"
ANON_UID = "anonymiseret"
ANON_TEXT = "[fjernet]"
SETTLED_REPLY = "not sent: personal data purged after the retention period"
PAGE = 500
MAX_DIAGNOSTIC = 200  # a purged delivery report's diagnostic keeps at most this much
REPORT_FIELDS = ("bounce_diagnostic", "delay_diagnostic")

# Anything shaped like an address: the local part may hold quotes and most punctuation.
_ADDRESS = re.compile(r"[^\s<>()\[\],;:\"]+@[^\s<>()\[\],;:\"]+")


class PurgeRefused(NotifierError):
    """The conference's retention period has not passed yet; the message names the date."""


# -- the decision and the anonymisation: pure ---------------------------------------------


def retention_ends(conf: Conference) -> datetime:
    """When the conference's personal data may be purged: its end plus retention_days."""
    return conf.ends_at + timedelta(days=conf.retention_days)


def refusal(conf: Conference, now: datetime) -> str | None:
    """None if the conference's data may be purged at `now`, else why not (naming the date).

    Raises:
        ValueError: `now` is naive.
    """
    if now.tzinfo is None or now.utcoffset() is None:
        raise ValueError("now must be timezone-aware")
    ends = retention_ends(conf)
    if now >= ends:
        return None
    local = ends.astimezone(conf.tz)
    return (
        f"{conf.title} ({conf.slug}) ended {conf.ends_at.isoformat()}; its personal data is "
        f"kept for {conf.retention_days} day(s) after that, until "
        f"{danish.long_date(local.date())} ({local.isoformat()}). Purging is refused before "
        f"then (now: {now.isoformat()})."
    )


def anonymous(person: Person) -> Person:
    """The placeholder for a person; the organisation stays absent if it was absent."""
    return Person(ANON_NAME, ANON_EMAIL, None if person.organisation is None else ANON_ORGANISATION)


def anonymise_seat(seat: Seat) -> Seat:
    """The seat without its attendee (nor anyone in its facts); status, times and SEQUENCE
    values kept. What each invite carried goes: it is keyed by UIDs derived from addresses,
    and nothing is sent for a conference whose retention period is over."""
    return replace(seat.with_people(anonymous), sequences=_relabel(seat.sequences), carried={})


def _relabel(sequences: Mapping[str, int]) -> dict[str, int]:
    prefix = f"{ANON_UID}-"
    done = {uid: seq for uid, seq in sequences.items() if uid.startswith(prefix)}
    n = 0
    for uid in sorted(u for u in sequences if not u.startswith(prefix)):
        n += 1
        while f"{prefix}{n}" in done:
            n += 1
        done[f"{prefix}{n}"] = sequences[uid]
    return done


def anonymise_notice(notice: Notice) -> Notice:
    """The notice without its people and invite UID; kind, keys, method and SEQUENCE kept."""
    return replace(
        notice,
        recipient=anonymous(notice.recipient),
        previous=anonymous(notice.previous) if notice.previous else None,
        successor=anonymous(notice.successor) if notice.successor else None,
        invite=replace(notice.invite, uid=ANON_UID) if notice.invite else None,
    )


def people_of(notice: Notice) -> list[Person]:
    return [p for p in (notice.recipient, notice.previous, notice.successor) if p is not None]


def scrub(value: str, people: Iterable[Person] = ()) -> str:
    """`value` with the people's names and addresses and anything shaped like an address cut
    out (an SMTP reply often quotes the recipient: "550 5.1.1 <mette@aarhus.dk>: unknown")."""
    people = [p for p in people if p.email != ANON_EMAIL]
    # Known addresses first (exactly, so a field path keeps its head), then anything shaped
    # like an address, then names and mailbox names.
    value = _replace(value, (p.email for p in people))
    value = _ADDRESS.sub(ANON_TEXT, value)
    value = _replace(value, (p.name for p in people if p.name != ANON_NAME))
    return _replace(value, (p.email.rpartition("@")[0] for p in people))


def _replace(value: str, needles: Iterable[str]) -> str:
    for needle in needles:
        if len(needle) >= 3:  # "Ib" or "jo" would cut into ordinary words
            value = re.sub(re.escape(needle), ANON_TEXT, value, flags=re.IGNORECASE)
    return value


def payload_conference(payload: Any) -> str | None:
    """The conference a dead letter's payload names (an object, or JSON text), if any."""
    if isinstance(payload, str | bytes):
        try:
            payload = json.loads(payload)
        except ValueError:
            return None
    if isinstance(payload, dict):
        conf = payload.get("conference")
        return conf if isinstance(conf, str) else None
    return None


def payload_people(payload: Any) -> list[Person]:
    """Every object with a name or email anywhere in a payload, and every address-like string."""
    if isinstance(payload, str | bytes):
        try:
            payload = json.loads(payload)
        except ValueError:
            return [Person("", s) for s in _ADDRESS.findall(text(payload))]
    found: list[Person] = []
    for node in _walk(payload):
        if isinstance(node, dict) and ("name" in node or "email" in node):
            name, email = node.get("name"), node.get("email")
            found.append(
                Person(
                    name.strip() if isinstance(name, str) else "",
                    email.strip() if isinstance(email, str) else "",
                )
            )
        elif isinstance(node, str):
            found += [Person("", s) for s in _ADDRESS.findall(node)]
    return found


def _walk(node: Any) -> Iterator[Any]:
    yield node
    if isinstance(node, dict):
        for k, v in node.items():
            yield from _walk(k)
            yield from _walk(v)
    elif isinstance(node, list):
        for v in node:
            yield from _walk(v)


def anonymise_dead_letter(record: dict[str, Any], now: float) -> dict[str, Any]:
    """A dead-letter record without its payload; id, time and field paths kept."""
    if "purged_at" in record:
        return record
    people = payload_people(record.get("payload"))
    out = dict(record)
    for field in ("event_id", "type", "reason"):
        out[field] = scrub(str(record.get(field, "")), people)
    out["fields"] = [scrub(str(f), people) for f in record.get("fields", [])]
    out["payload"] = None
    out["purged_at"] = now
    return out


# -- the report ---------------------------------------------------------------------------


@dataclass
class PurgeReport:
    """What a purge of one conference found and changed (or, in a dry run, would change)."""

    conference: str
    retention_ends: datetime
    dry_run: bool = False
    seats: int = 0  # seats anonymised in this run
    seats_found: int = 0
    messages: int = 0  # outbox messages anonymised in this run
    messages_found: int = 0
    settled: int = 0  # of those, unsettled messages moved to skipped
    busy: int = 0  # held by a live claim: left for the next run
    dead_letters: int = 0  # dead letters cleared in this run
    dead_letters_found: int = 0
    suppressions: int = 0  # suppression entries unlinked from the conference's messages

    @property
    def changed(self) -> int:
        return self.seats + self.messages + self.dead_letters + self.suppressions

    def lines(self) -> list[str]:
        verb = "would anonymise" if self.dry_run else "anonymised"
        lines = [
            f"seats: {verb} {self.seats} of {self.seats_found}",
            f"outbox messages: {verb} {self.messages} of {self.messages_found}"
            + (f" ({self.settled} not yet sent, settled as skipped)" if self.settled else ""),
            f"dead letters: {'would clear' if self.dry_run else 'cleared'} "
            f"{self.dead_letters} of {self.dead_letters_found}",
        ]
        if self.suppressions:
            verb = "would unlink" if self.dry_run else "unlinked"
            lines.append(
                f"suppressions: {verb} {self.suppressions} from this conference's messages "
                "(the addresses stay suppressed)"
            )
        if self.busy:
            lines.append(f"{self.busy} message(s) being sent right now: the next run takes them")
        if not self.changed and not self.busy:
            lines.append(
                "nothing left to purge: every record of this conference is already anonymised"
            )
        elif self.dry_run:
            lines.append("dry run: nothing was changed")
        return lines

    def summary(self) -> str:
        """One line without personal data, for logs."""
        return (
            f"seats={self.seats}/{self.seats_found} messages={self.messages}/"
            f"{self.messages_found} settled={self.settled} busy={self.busy} "
            f"dead_letters={self.dead_letters}/{self.dead_letters_found} "
            f"suppressions={self.suppressions} dry_run={self.dry_run}"
        )


# -- the effects --------------------------------------------------------------------------


def purge(
    client: redis.Redis, conf: Conference, now: datetime, *, dry_run: bool = False
) -> PurgeReport:
    """Anonymise one conference's personal data.

    Raises:
        PurgeRefused: the retention period has not passed at `now` (the message names the date).
    """
    reason = refusal(conf, now)
    if reason is not None:
        raise PurgeRefused(reason)
    return _Purge(client, [conf], now, dry_run).run()[conf.slug]


def purge_expired(
    client: redis.Redis,
    conferences: Conferences | Iterable[Conference],
    now: datetime,
    *,
    dry_run: bool = False,
) -> dict[str, PurgeReport]:
    """Purge every conference whose retention period has passed at `now`, in one pass over the
    outbox. For the daily beat task; conference files that do not load are logged and skipped.
    """
    if isinstance(conferences, Conferences):
        loaded = []
        for slug in conferences.slugs():
            try:
                loaded.append(conferences.get(slug))
            except ConfigError as exc:
                log.error("purge: skipping conference %s: %s", slug, exc)
    else:
        loaded = list(conferences)
    due = [c for c in loaded if refusal(c, now) is None]
    reports = _Purge(client, due, now, dry_run).run() if due else {}
    for slug, report in reports.items():
        log.info("purge %s: %s", slug, report.summary())
    return reports


def purge_suppressions(client: redis.Redis, older_than: float) -> int:
    """Remove suppression entries made before `older_than` (epoch seconds: the caller's now
    minus the suppression retention); how many went. Suppressions are not per conference,
    so they have a retention of their own rather than a conference's."""
    return Suppressions(client).purge_older_than(older_than)


Writes = Callable[[Any], None]  # queues writes on a transaction's pipeline


class _Purge:
    def __init__(
        self, client: redis.Redis, confs: Iterable[Conference], now: datetime, dry_run: bool
    ) -> None:
        self.r = client
        self.now = now.timestamp()
        self.dry = dry_run
        self.reports = {
            c.slug: PurgeReport(c.slug, retention_ends(c), dry_run=dry_run) for c in confs
        }
        self.found: dict[str, set[str]] = {slug: set() for slug in self.reports}  # bare keys

    def run(self) -> dict[str, PurgeReport]:
        for slug in self.reports:
            self._seats(slug)
        self._messages()
        for slug, found in self.found.items():
            self._links(slug, found)
        self._dead_letters()
        return self.reports

    def _update(self, key: str, change: Callable[[Any], tuple[T, Writes | None]]) -> T:
        """Read `key` under WATCH with change(pipe), then commit its writes; again on conflict.

        In a dry run nothing is written; the result says what would have changed.
        """
        while True:
            with self.r.pipeline(transaction=True) as pipe:
                try:
                    pipe.watch(key)  # type: ignore[no-untyped-call]
                    result, writes = change(pipe)
                    if writes is not None and not self.dry:
                        pipe.multi()
                        writes(pipe)
                        pipe.execute()
                    return result
                except redis.WatchError:
                    continue

    # seats

    def _seats(self, slug: str) -> None:
        report = self.reports[slug]
        for reg in self.r.sscan_iter(keys.roster(slug), count=1000):
            skey = keys.seat(slug, text(reg))
            outcome = self._update(skey, partial(self._seat_change, skey))
            report.seats_found += outcome != "gone"
            report.seats += outcome == "anonymised"

    @staticmethod
    def _seat_change(skey: str, pipe: Any) -> tuple[str, Writes | None]:
        raw = pipe.get(skey)
        if raw is None:
            return "gone", None
        seat = Seat.from_json(raw)
        anon = anonymise_seat(seat)
        if anon == seat:
            return "unchanged", None
        return "anonymised", lambda p: p.set(skey, anon.to_json())

    # outbox messages

    def _messages(self) -> None:
        page: list[str] = []
        for k in self.r.scan_iter(match=keys.message("*"), count=1000, _type="HASH"):
            page.append(text(k))
            if len(page) == PAGE:
                self._message_page(page)
                page = []
        if page:
            self._message_page(page)

    def _message_page(self, redis_keys: list[str]) -> None:
        pipe = self.r.pipeline(transaction=False)
        for rkey in redis_keys:
            pipe.hget(rkey, "notice")
        for rkey, raw in zip(redis_keys, pipe.execute(), strict=True):
            slug = _notice_conference(raw)
            if slug not in self.reports:
                continue
            outcome = self._update(rkey, partial(self._message_change, rkey))
            self.found[slug].add(rkey.removeprefix(keys.message("")))
            report = self.reports[slug]
            report.messages_found += outcome != "gone"
            report.busy += outcome == "busy"
            report.messages += outcome in ("anonymised", "settled")
            report.settled += outcome == "settled"

    def _message_change(self, rkey: str, pipe: Any) -> tuple[str, Writes | None]:
        d = {text(k): text(v) for k, v in pipe.hgetall(rkey).items()}
        if "notice" not in d:
            return "gone", None
        state = d.get("state", "")
        if state == "sending" and float(d.get("lease_until") or 0) > self.now:
            return "busy", None
        notice = Notice.from_json(d["notice"])
        anon = anonymise_notice(notice)
        people = people_of(notice)
        if d.get("sent_to"):  # a reminder's real address: its notice names a placeholder
            people.append(Person("", d["sent_to"]))
        reply = scrub(d.get("last_reply", ""), people)
        if state not in ("queued", "retrying", "sending"):
            fields = {"notice": anon.to_json(), "last_reply": reply}
            fields |= _scrubbed_reports(d, people)
            ordered = bool(d.get("order_key"))  # names its invite UID, derived from an address
            same = all(d.get(f) == v for f, v in fields.items() if f != "notice")
            if anon == notice and same and not ordered:
                return "unchanged", None

            def anonymise(p: Any) -> None:
                p.hset(rkey, mapping=fields)
                if ordered:
                    p.hdel(rkey, "order_key")

            return "anonymised", anonymise
        # Not settled: it would be sent to the placeholder later. The outbox's skip script
        # settles it: state, per-state counters (global and batch) and sweeper indexes.
        last = f"{SETTLED_REPLY} (last reply: {reply})" if reply else SETTLED_REPLY
        bare = rkey.removeprefix(keys.message(""))
        reports = _scrubbed_reports(d, people)  # a retry records the address it went to

        def settle(p: Any) -> None:
            outbox.skip(p, bare, anon, last, self.now)
            if reports:
                p.hset(rkey, mapping=reports)

        return "settled", settle

    # what links to the messages: bounce ids and suppression entries

    def _links(self, slug: str, bare_keys: set[str]) -> None:
        if not bare_keys:
            return
        if not self.dry:
            ids = sorted({message_id(k) for k in bare_keys})
            for start in range(0, len(ids), PAGE):
                self.r.hdel(keys.BOUNCE_IDS, *ids[start : start + PAGE])
        unlinked = Suppressions(self.r).unlink_messages(bare_keys, dry_run=self.dry)
        self.reports[slug].suppressions += unlinked

    # dead letters

    def _dead_letters(self) -> None:
        for dl_id, raw in self.r.hscan_iter(keys.DEAD, count=1000):
            record = json.loads(text(raw))
            slug = payload_conference(record.get("payload"))
            if slug is None and "purged_at" in record:
                slug = record.get("conference")
            if slug not in self.reports:
                continue
            report = self.reports[slug]
            report.dead_letters_found += 1
            report.dead_letters += self._update(
                keys.DEAD, partial(self._dead_change, text(dl_id), slug)
            )

    def _dead_change(self, dl_id: str, slug: str, pipe: Any) -> tuple[bool, Writes | None]:
        raw = pipe.hget(keys.DEAD, dl_id)
        if raw is None:
            return False, None
        record = json.loads(text(raw))
        anon = anonymise_dead_letter(record, self.now)
        if anon == record:
            return False, None
        anon["conference"] = slug  # the payload that named it is gone
        body = json.dumps(anon, ensure_ascii=False, default=str)
        return True, lambda p: p.hset(keys.DEAD, dl_id, body)


def _scrubbed_reports(d: Mapping[str, str], people: list[Person]) -> dict[str, str]:
    """A delivery report's diagnostics without people (cut: a report quotes whole bounce
    messages), and the envelope recipient replaced; only the fields the message has."""
    out = {f: scrub(d[f], people)[:MAX_DIAGNOSTIC] for f in REPORT_FIELDS if d.get(f)}
    if d.get("sent_to"):
        out["sent_to"] = ANON_EMAIL
    return out


def _notice_conference(raw: bytes | str | None) -> str | None:
    if raw is None:
        return None
    try:
        conf = json.loads(raw).get("conference")
    except (ValueError, AttributeError):
        return None
    return conf if isinstance(conf, str) else None
