"""End to end: a seat's events close together, applied by two workers at two pool processes
each, while the relay refuses some mails for a while.

Checked per recipient, in the order the SMTP server received the mails: for every invite UID
the SEQUENCE never goes down and a REQUEST arrives before any CANCEL of it; whoever holds a
seat at the end holds a live invite and everyone else's last word is a CANCEL; every
substitution gives the organiser exactly one copy; and every sentence that says someone is
sent something is true (that person got that mail).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
from icalendar import Calendar

from devtools.sink import Received
from notifier.store import keys
from tests.conftest import wait_for
from tests.e2e.caldav import Radicale
from tests.e2e.conftest import SHORT_LEASE, NamedWorker, Stack, start_all
from tests.events import CONFERENCE, created, person, substituted

pytestmark = pytest.mark.e2e

ORGANISER = "arrangementsinfo@kl.dk"
CHAINS = 50  # A -> B -> C, both substitutions published back to back
SWAPS = 20  # G -> H, then H -> G, at one and the same time, published in that order
LATE = 5  # B -> C arrives (and is applied) before A -> B
DAY = "2024-04-02T"
CREATED = "2024-02-14T10:00:00+01:00"


@dataclass(frozen=True)
class Mail:
    to: str
    message_id: str
    subject: str
    text: str
    method: str | None
    uid: str | None
    sequence: int | None
    ics: bytes | None  # the text/calendar part


def _mail(item: Received) -> Mail:
    msg = message_from_bytes(item.data, policy=policy.default)
    assert isinstance(msg, EmailMessage)
    body = msg.get_body(("plain",))
    assert body is not None
    parts = [p for p in msg.walk() if p.get_content_type() == "text/calendar"]
    method = uid = None
    sequence = None
    payload: bytes | None = None
    if parts:
        decoded = parts[0].get_payload(decode=True)
        assert isinstance(decoded, bytes)
        payload = decoded
        cal = Calendar.from_ical(payload)
        event = cal.walk("VEVENT")[0]
        method, uid, sequence = str(cal["METHOD"]), str(event["UID"]), int(str(event["SEQUENCE"]))
    [to] = item.recipients
    subject, message_id = str(msg["Subject"]), str(msg["Message-ID"])
    return Mail(to, message_id, subject, body.get_content(), method, uid, sequence, payload)


class Scenario:
    """The events, who is who, and what must hold at the end."""

    def __init__(self) -> None:
        self.first: list[dict[str, Any]] = []  # published in one go
        self.late: list[dict[str, Any]] = []  # published once the first are all sent
        self.holder: dict[str, str] = {}  # registration -> address holding it at the end
        self.people: dict[str, str] = {}  # name -> address
        self.substitutions: dict[str, int] = {}  # registration -> substitution events
        self.regs: dict[str, tuple[str, ...]] = {}  # registration -> its people's addresses
        n = 0

        def who() -> dict[str, str]:
            nonlocal n
            n += 1
            p = person(n)
            self.people[p["name"]] = p["email"]
            return p

        for i in range(CHAINS):
            reg, (a, b, c) = f"CHAIN-{i}", (who(), who(), who())
            self.first += [
                created(f"c{i}", reg, a, CREATED),
                substituted(f"c{i}-1", reg, a, b, f"{DAY}10:00:00+02:00"),
                substituted(f"c{i}-2", reg, b, c, f"{DAY}10:05:00+02:00"),
            ]
            self.holder[reg], self.substitutions[reg] = c["email"], 2
        for i in range(SWAPS):
            reg, (g, h) = f"SWAP-{i}", (who(), who())
            at = f"{DAY}11:00:00+02:00"
            self.first += [
                created(f"s{i}", reg, g, CREATED),
                substituted(f"s{i}-1", reg, g, h, at),
                substituted(f"s{i}-2", reg, h, g, at),
            ]
            self.holder[reg], self.substitutions[reg] = g["email"], 2
            self.regs[reg] = (g["email"], h["email"])
        for i in range(LATE):
            reg, (a, b, c) = f"LATE-{i}", (who(), who(), who())
            self.first += [
                created(f"l{i}", reg, a, CREATED),
                substituted(f"l{i}-2", reg, b, c, f"{DAY}10:05:00+02:00"),
            ]
            self.late.append(substituted(f"l{i}-1", reg, a, b, f"{DAY}10:00:00+02:00"))
            self.holder[reg], self.substitutions[reg] = c["email"], 2

    def people_of(self, reg: str) -> tuple[str, ...]:
        return self.regs[reg]


def _sent_things(mails: list[Mail]) -> dict[str, set[str]]:
    """address -> which kinds of invite mail it received (REQUEST, CANCEL)."""
    got: dict[str, set[str]] = {}
    for m in mails:
        if m.method:
            got.setdefault(m.to, set()).add(m.method)
    return got


def _check_order(mails: list[Mail]) -> dict[str, Mail]:
    """Per UID, in arrival order: SEQUENCE never goes down; a REQUEST comes before any
    CANCEL. Returns each UID's last mail."""
    by_uid: dict[str, list[Mail]] = {}
    for m in mails:
        if m.uid:
            by_uid.setdefault(m.uid, []).append(m)
    for uid, seen in by_uid.items():
        sequences = [m.sequence or 0 for m in seen]
        assert sequences == sorted(sequences), f"{uid}: SEQUENCE went down: {sequences}"
        methods = [m.method for m in seen]
        if "REQUEST" in methods and "CANCEL" in methods:
            assert methods.index("REQUEST") < methods.index("CANCEL"), f"{uid}: {methods}"
    return {uid: seen[-1] for uid, seen in by_uid.items()}


def _check_sentences(mails: list[Mail], people: dict[str, str]) -> None:
    """Every "we send X a confirmation / a cancellation" names a mail X got."""
    got = _sent_things(mails)
    for m in mails:
        assert "har fået" not in m.text, f"a claim about the past in a mail to {m.to}"
        for name in re.findall(r"Vi sender (.+?) en bekræftelse", m.text):
            assert "REQUEST" in got.get(people[name], set()), f"{name} got no confirmation"
        for name, what in re.findall(r"^- (.+?): (besked om|en bekræftelse)", m.text, re.M):
            if name not in people:
                continue  # named by role ("Den deltager, ..."): checked by the counts
            method = "CANCEL" if what == "besked om" else "REQUEST"
            assert method in got.get(people[name], set()), f"{name} got no {method}"


def _check_calendars(mails: list[Mail], scenario: Scenario, folder: Path) -> None:
    """Applied in arrival order to a real CalDAV server, the invites leave exactly one live
    event in each holder's calendar and none in anyone else's."""
    server = Radicale(folder).start()
    try:
        for m in mails:
            if m.ics is not None:
                server.apply(m.to, m.ics)
        holders = set(scenario.holder.values())
        wrong = {
            address: live
            for address in scenario.people.values()
            if len(live := server.live(address)) != (1 if address in holders else 0)
        }
        assert wrong == {}, f"calendars that end wrong: {wrong}"
    finally:
        server.stop()


def _facts(s: Stack, reg: str) -> list[dict[str, Any]]:
    raw = s.client.get(keys.seat(CONFERENCE, reg))
    assert raw is not None
    facts: list[dict[str, Any]] = json.loads(raw)["facts"]
    return facts


def _check_publication_order(s: Stack, scenario: Scenario) -> None:
    """Every applied fact carries its place in publication order, in the order its events
    were published; no registration is left with a pending number."""
    published = [e["id"] for e in scenario.first + scenario.late]
    for reg in scenario.holder:
        facts = _facts(s, reg)
        orders = [f["order"] for f in facts]
        assert all(isinstance(o, int) and o > 0 for o in orders), orders
        # In arrival order; the late substitution was published last, and arrived last.
        assert orders == sorted(orders), f"{reg}: applied out of publication order: {orders}"
    assert len(published) == sum(
        len(json.loads(s.client.get(keys.seat(CONFERENCE, r)) or "{}")["facts"])
        for r in scenario.holder
    )
    assert list(s.client.scan_iter(keys.registration_pending("*", "*"))) == []


@pytest.mark.timeout(600)
def test_close_events_keep_every_calendar_true(
    stack: Callable[..., Stack], workers: Callable[..., NamedWorker], tmp_path: Path
) -> None:
    s = stack(start=False, **SHORT_LEASE)
    second = workers(s, "second")
    start_all(second)
    s.worker.start()
    # The relay refuses some mails for a while: their retries must hold back later mails
    # for the same invite UID, and only those.
    s.sink.script.data.extend(["451 4.3.0 try again later"] * 12)
    scenario = Scenario()
    s.publish(*scenario.first)
    # At least: 50 chains of 7 mails, 20 swaps of 3 (or 7), 5 late chains of 5 so far.
    wait_for(lambda: len(s.sink.received) >= CHAINS * 7 + SWAPS * 3 + LATE * 5, 240, "mails")
    s.wait_past_rescue(240)  # everything planned so far has settled
    s.publish(*scenario.late)
    s.wait_drained(60)
    s.wait_past_rescue(240)

    mails = [_mail(r) for r in s.sink.received]
    last = _check_order(mails)
    _check_sentences(mails, scenario.people)
    # Who holds a live invite at the end: exactly the holders.
    live = {m.to for m in last.values() if m.method == "REQUEST"}
    assert live == set(scenario.holder.values())
    # One organiser copy per substitution, late or not.
    copies = [m for m in mails if m.to == ORGANISER]
    per_reg: dict[str, int] = {}
    for m in copies:
        reg = re.search(r"Deltagerskift (\S+):", m.subject)
        assert reg is not None, m.subject
        per_reg[reg.group(1)] = per_reg.get(reg.group(1), 0) + 1
    assert per_reg == scenario.substitutions
    # Each late substitution's copy says that nobody is sent anything about it.
    for i in range(LATE):
        late_copies = [m for m in copies if f"LATE-{i}:" in m.subject]
        assert sum("sender vi ingen mails" in m.text for m in late_copies) == 1
    _check_publication_order(s, scenario)
    _check_calendars(mails, scenario, tmp_path / "caldav")
    # Nobody got a mail twice (the refused ones were refused, not accepted).
    ids = [m.message_id for m in mails]
    assert len(ids) == len(set(ids))
    assert len(mails) == CHAINS * 7 + LATE * 6 + sum(
        7 if any(m.to == scenario.people_of(f"SWAP-{i}")[1] for m in mails) else 3
        for i in range(SWAPS)
    )
