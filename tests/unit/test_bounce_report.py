"""Bounce and complaint parsing on real-world samples (tests/data/bounces/PROVENANCE.md).

The samples were bounces to mailing lists, not to our return path. Each test puts a
`bounces+TOKEN@kl.dk` where an MTA would have written ours: in place of the list's envelope
sender (which the bounce was delivered to and which its reports and returned headers repeat),
or in one chosen place only, to show that the token is found there.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from notifier.bounces.report import Report, parse
from notifier.bounces.token import message_id, message_token, return_path, verify

SAMPLES = Path(__file__).resolve().parents[1] / "data" / "bounces"
BOUNCES = "bounces@kl.dk"
SECRET = b"a secret of the kind NOTIFIER_BOUNCE_SECRET holds"
KEY = "digitaliseringstraef-2024:REG-1001:confirmation:1"
TOKEN = message_token(KEY, SECRET)
OURS = return_path(BOUNCES, TOKEN).encode()


@dataclass(frozen=True)
class Sample:
    sender: str  # the envelope sender of the message that bounced: where the bounce went
    kind: str
    source: str
    # (action, status, final recipient, words the diagnostic contains)
    recipients: tuple[tuple[str, str, str, str], ...]


EXPECTED = {
    # Postfix 1.1, RFC 3464: "X-Postfix; ... said: 550" with no enhanced code given.
    "dsn_10.txt": Sample(
        "somelist-bounces@listi.example.com",
        "dsn",
        "rfc3464",
        (("failed", "5.0.0", "anne.person@dom.ain", "said: 550"),),
    ),
    # Postfix, RFC 3464 delay warning, returned headers as quoted-printable text/rfc822-headers.
    "dsn_17.txt": Sample(
        "pray4-team-bounces@strategicnetwork.org",
        "dsn",
        "rfc3464",
        (("delayed", "4.3.0", "xxx@example.fi", "Quota exceeded"),),
    ),
    # Exchange 2003 DSN, wrapped whole in message/rfc822 by a virus-scanning gateway.
    "dsn_15.txt": Sample(
        "gpc-talk-bounces@grizz.org",
        "dsn",
        "rfc3464",
        (("failed", "5.1.1", "userx@example.com", ""),),
    ),
    # Sendmail RFC 3464 DSN repeating one recipient's block for every alias it expanded.
    "dsn_11.txt": Sample(
        "mailman-developers-bounces@python.org",
        "dsn",
        "rfc3464",
        (("failed", "5.1.1", "joem@example.com", ""),),
    ),
    # NTMail: "Action: failure" and a plain SMTP reply in Status.
    "dsn_03.txt": Sample(
        "python-list-admin@python.org",
        "dsn",
        "rfc3464",
        (("failed", "5.0.0", "userx@example.be", "553 Exceeded maximum inbound message size"),),
    ),
    # OpenSMTPD-style "Action: error".
    "dsn_18.txt": Sample(
        "list.name-bounces@domain.replaced",
        "dsn",
        "rfc3464",
        (("failed", "5.0.0", "email@replaced.net", ""),),
    ),
    # Exchange 5.5 Internet Mail Service NDR: no delivery-status part at all.
    "microsoft_01.txt": Sample(
        "pit-penguins-bounces@plaidworks.com",
        "dsn",
        "heuristic",
        (("failed", "5.0.0", "userx@example.COM", ""),),
    ),
    # The same, as HTML only.
    "groupwise_02.txt": Sample(
        "mailman-developers-bounces@python.org",
        "dsn",
        "heuristic",
        (("failed", "5.0.0", "userx@example.com", ""),),
    ),
    # Mimecast reporting that Office 365 refused for 92 hours: permanent, though it quotes 4.4.4.
    # Mimecast gave up after 92 hours of 4.4.4: a failure, with the temporary status it
    # states (so it suppresses nothing).
    "simple_44.txt": Sample(
        "dns-operations-bounces@example.net",
        "dsn",
        "heuristic",
        (("failed", "4.4.4", "user@example.com", "4.4.4 Temporary server error"),),
    ),
    "qmail_01.txt": Sample(
        "psa-members-admin@python.org",
        "dsn",
        "heuristic",
        (("failed", "5.0.0", "userx@example.de", ""),),
    ),
    # Exim 2: the status code is only in the text, the returned message is inline text.
    "exim_01.txt": Sample(
        "lanparty-helden-admin@rotzorg.org",
        "dsn",
        "heuristic",
        (("failed", "5.1.1", "userx@its.example.nl", "553 5.1.1 unknown or illegal user"),),
    ),
    "yahoo_11.txt": Sample(
        "user@bellsouth.net",
        "dsn",
        "heuristic",
        (("failed", "5.1.1", "bad_user@aol.com", "Recipient address rejected"),),
    ),
    # SMTP32 (Imail): two recipients, each with its own reply line.
    "smtp32_04.txt": Sample(
        "msapiro@example.net",
        "dsn",
        "heuristic",
        (
            ("failed", "5.3.0", "after_another@example.net", "<after_another@example.net>"),
            ("failed", "5.3.0", "one_bad_address@example.net", "<one_bad_address@example.net>"),
        ),
    ),
    # Exim warning: still trying.
    "simple_03.txt": Sample(
        "python-list-admin@python.org",
        "dsn",
        "heuristic",
        (("delayed", "4.0.0", "userx@example.za", ""),),
    ),
    # Not a bounce: a message forwarded with an attachment.
    "dumbass_01.txt": Sample("python-list-admin@python.org", "unrecognised", "", ()),
    "rfc3464_multi_recipient.eml": Sample(
        "owner-ups-mib@CS.UTK.EDU",
        "dsn",
        "rfc3464",
        (
            ("failed", "5.0.0", "arathib@vnet.ibm.com", "is not a registered gateway user"),
            ("delayed", "4.0.0", "johnh@hpnjld.njd.hp.com", ""),
            ("failed", "5.0.0", "wsnell@sdcc13.ucsd.edu", "550 user unknown"),
        ),
    ),
    "rfc5965_abuse.eml": Sample("somespammer@example.net", "complaint", "arf", ()),
}


def sample(name: str) -> bytes:
    return (SAMPLES / name).read_bytes()


def ours(name: str, path: bytes = OURS) -> bytes:
    """The sample as if the message that bounced had left with our return path."""
    sender = re.escape(EXPECTED[name].sender.encode())
    return re.sub(sender, path, sample(name), flags=re.IGNORECASE)


def test_every_sample_is_listed_and_documented() -> None:
    files = {p.name for p in SAMPLES.iterdir() if p.suffix in (".txt", ".eml")}
    assert files == set(EXPECTED)
    provenance = (SAMPLES / "PROVENANCE.md").read_text(encoding="utf-8")
    assert all(name in provenance for name in files)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_sample_parses_to_the_expected_recipients(name: str) -> None:
    expected = EXPECTED[name]
    report = parse(ours(name), BOUNCES)
    assert (report.kind, report.source) == (expected.kind, expected.source)
    got = [(r.action, r.status, r.final_recipient) for r in report.recipients]
    assert got == [(action, status, rcpt) for action, status, rcpt, _ in expected.recipients]
    for recipient, (*_, words) in zip(report.recipients, expected.recipients, strict=True):
        assert words in recipient.diagnostic


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_sample_names_our_message(name: str) -> None:
    report = parse(ours(name), BOUNCES)
    assert report.tokens == (TOKEN,)
    assert verify(report.tokens[0], SECRET) == message_id(KEY)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_sample_not_sent_by_us_names_nothing(name: str) -> None:
    assert parse(sample(name), BOUNCES).tokens == ()


def test_complaint_carries_its_feedback_type() -> None:
    assert parse(ours("rfc5965_abuse.eml"), BOUNCES).feedback_type == "abuse"


def test_upper_cased_return_path_is_found_and_verifies() -> None:
    report = parse(ours("dsn_10.txt", OURS.upper()), BOUNCES)
    assert report.tokens == (TOKEN,)
    assert verify(report.tokens[0], SECRET) == message_id(KEY)


def test_forged_token_is_found_and_refused() -> None:
    forged = TOKEN[:-1] + ("a" if TOKEN[-1] != "a" else "b")
    report = parse(ours("dsn_10.txt", return_path(BOUNCES, forged).encode()), BOUNCES)
    assert report.tokens == (forged,)
    assert verify(forged, SECRET) is None


def _insert_after(raw: bytes, marker: bytes, line: bytes) -> bytes:
    head, found, tail = raw.partition(marker)
    assert found, marker
    return head + found + line + tail


# Each case puts our return path in exactly one place; everything else names the list.
ONE_PLACE = {
    "Delivered-To (local delivery)": lambda: (
        b"Delivered-To: " + OURS + b"\n" + sample("dsn_10.txt")
    ),
    "X-Original-To (Postfix)": lambda: b"X-Original-To: " + OURS + b"\n" + sample("dsn_10.txt"),
    "Envelope-To (Exim), after an mbox From_ line": lambda: _insert_after(
        sample("groupwise_02.txt"), b"2002\n", b"Envelope-To: " + OURS + b"\n"
    ),
    "Return-Path of the returned message/rfc822": lambda: _insert_after(
        sample("dsn_10.txt"),
        b"Content-Type: message/rfc822\nContent-Transfer-Encoding: 8bit\n\n",
        b"Return-Path: <" + OURS + b">\n",
    ),
    "Return-Path of quoted-printable text/rfc822-headers": lambda: _insert_after(
        sample("dsn_17.txt"),
        b'filename="Undelivered Message Headers.txt"\n\n',
        b"Return-Path: <" + OURS + b">\n",
    ),
    "Original-Envelope-Id holding the return path": lambda: _insert_after(
        sample("rfc3464_multi_recipient.eml"),
        b"Reporting-MTA: dns; cs.utk.edu\n",
        b"Original-Envelope-Id: " + OURS + b"\n",
    ),
    "Original-Envelope-Id holding the bare token": lambda: _insert_after(
        sample("rfc3464_multi_recipient.eml"),
        b"Reporting-MTA: dns; cs.utk.edu\n",
        b"Original-Envelope-Id: " + TOKEN.upper().encode() + b"\n",
    ),
    "ARF Original-Mail-From": lambda: sample("rfc5965_abuse.eml").replace(
        b"Original-Mail-From: <somespammer@example.net>", b"Original-Mail-From: <" + OURS + b">"
    ),
    "Return-path quoted in a plain-text bounce": lambda: sample("exim_01.txt").replace(
        b"Return-path: <lanparty-helden-admin@rotzorg.org>", b"Return-path: <" + OURS + b">"
    ),
}


@pytest.mark.parametrize("place", list(ONE_PLACE))
def test_token_is_found_in(place: str) -> None:
    raw = ONE_PLACE[place]()
    assert raw.count(TOKEN.encode()) + raw.count(TOKEN.upper().encode()) == 1
    assert parse(raw, BOUNCES).tokens == (TOKEN,)


def test_recipient_headers_come_before_the_returned_message() -> None:
    """The MTA that delivered the bounce to us is the authority on where it went."""
    other = message_token("another message", SECRET)
    raw = _insert_after(
        b"Delivered-To: " + OURS + b"\n" + sample("dsn_10.txt"),
        b"Content-Type: message/rfc822\nContent-Transfer-Encoding: 8bit\n\n",
        b"Return-Path: <" + return_path(BOUNCES, other).encode() + b">\n",
    )
    assert parse(raw, BOUNCES).tokens == (TOKEN, other)


# Fingerprints -------------------------------------------------------------------------------


def redelivered(raw: bytes) -> bytes:
    """The same report delivered again: new trace headers in front, CRLF as IMAP gives it."""
    trace = b"Return-Path: <>\nDelivered-To: " + OURS + b"\nReceived: from mx2 by mx1; now\n"
    return (trace + raw).replace(b"\n", b"\r\n")


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_fingerprint_is_the_same_for_the_same_report_twice(name: str) -> None:
    assert (
        parse(ours(name), BOUNCES).fingerprint
        == parse(redelivered(ours(name)), BOUNCES).fingerprint
    )


def test_fingerprint_without_message_id_is_the_same_for_the_same_report_twice() -> None:
    raw = ours("rfc3464_multi_recipient.eml")
    assert b"message-id" not in raw.lower().partition(b"\n\n")[0]
    assert parse(raw, BOUNCES).fingerprint == parse(redelivered(raw), BOUNCES).fingerprint


def test_fingerprints_differ_between_reports() -> None:
    prints = {parse(ours(name), BOUNCES).fingerprint for name in EXPECTED}
    assert len(prints) == len(EXPECTED)


def test_fingerprint_without_message_id_differs_when_the_report_does() -> None:
    raw = ours("rfc3464_multi_recipient.eml")
    other = raw.replace(b"550 user unknown", b"550 mailbox disabled")
    assert parse(raw, BOUNCES).fingerprint != parse(other, BOUNCES).fingerprint


def test_fingerprint_with_message_id_follows_the_message_id() -> None:
    raw = ours("dsn_10.txt")
    other = raw.replace(b"<20021021152058.7A58560E24@", b"<20021021152058.7A58560E25@", 1)
    assert parse(raw, BOUNCES).fingerprint != parse(other, BOUNCES).fingerprint


# Garbage ------------------------------------------------------------------------------------

GARBAGE = [
    b"",
    b"\n\n\n",
    b"\x00\xff\xfe" * 100,
    b"Content-Type: multipart/report; report-type=delivery-status\n\nno boundary at all",
    b"Content-Type: multipart/report; boundary=x\n\n--x\nContent-Type: message/delivery-status\n\n",
    b"Content-Type: message/delivery-status\n\nAction: failed\nStatus: 5.1.1\n",
    b"Content-Type: multipart/report; boundary=x\n\n--x\nContent-Type: message/rfc822\n\n--x--",
    b"To: =?utf-8?q?bounces+" + TOKEN.encode() + b"=40kl.dk?=\n\nbody",
    b"Content-Type: text/plain; charset=no-such-charset\n\n\xe6\xf8\xe5 5.1.1",
    b"Content-Type: multipart/mixed; boundary=a\n\n"
    + b"--a\nContent-Type: multipart/mixed; boundary=a\n\n" * 2000,
]


@pytest.mark.parametrize("raw", GARBAGE, ids=range(len(GARBAGE)))
def test_garbage_gives_a_report(raw: bytes) -> None:
    report = parse(raw, BOUNCES)
    assert isinstance(report, Report)
    assert report.kind in ("dsn", "complaint", "unrecognised")


@settings(max_examples=300, deadline=None)
@given(raw=st.binary(max_size=2000))
def test_any_bytes_give_a_report(raw: bytes) -> None:
    assert isinstance(parse(raw, BOUNCES), Report)


@settings(max_examples=300, deadline=None)
@given(
    name=st.sampled_from(sorted(EXPECTED)),
    cut=st.floats(0, 1),
    noise=st.binary(max_size=50),
)
def test_damaged_samples_give_a_report(name: str, cut: float, noise: bytes) -> None:
    """Truncated and spliced real bounces: what a broken relay or a hostile sender hands us."""
    raw = ours(name)
    at = int(len(raw) * cut)
    assert isinstance(parse(raw[:at] + noise + raw[at + len(noise) :], BOUNCES), Report)


def test_a_bad_bounce_address_is_a_configuration_error() -> None:
    with pytest.raises(ValueError):
        parse(sample("dsn_10.txt"), "no-at-sign")


def test_a_huge_message_is_read_from_its_head_quickly() -> None:
    # flufl.bounce reads only the first 256 KiB: a notice's words, not the 5 MiB after them.
    raw = sample("exim_01.txt")
    padding = (b"> " + b"x" * 74 + b"\n") * (5 * 1024 * 1024 // 77)
    assert parse(raw + padding, BOUNCES).recipients == parse(raw, BOUNCES).recipients != ()
    unknown = b"From: someone@example.org\nSubject: hello\n\n" + padding
    started = time.perf_counter()
    assert parse(unknown, BOUNCES).kind == "unrecognised"
    took = time.perf_counter() - started
    assert took < 2.0, took  # several seconds when flufl.bounce read every line
