"""The console's registration page, search and mail previews on a real server, Redis and SMTP
sink: what a substitution left on the seat and in the outbox, the mails composed again, the
framable mail document's own headers, and a test mail sent through the relay."""

from __future__ import annotations

import html
import re
from collections.abc import Callable
from email import message_from_bytes, policy
from pathlib import Path
from urllib.parse import quote

import pytest

from devtools.sink import Sink
from notifier.domain.notice import Kind
from notifier.service import Service
from tests.api_support import Api, api
from tests.conferences import announce
from tests.console_support import Client, folder, form_for, organiser, server
from tests.events import CONFERENCE, JENS, METTE, created, person, substituted

pytestmark = pytest.mark.integration
__all__ = ["api", "folder", "organiser", "server"]

REG = f"/conferences/{CONFERENCE}/registrations"
PREVIEWS = f"/conferences/{CONFERENCE}/previews"
FRAME_CSP = (
    "default-src 'none'; style-src 'unsafe-inline'; img-src data:; frame-ancestors 'self'; sandbox"
)


@pytest.fixture
def substitution(service: Callable[..., Service], folder: Path, sink: Sink) -> Service:
    """REG-S1: Mette registers, then passes the seat to Jens; every mail delivered."""
    svc = service(conferences_dir=str(folder))
    svc.deliver(svc.ingest(created("evt-s1", "REG-S1")))
    svc.deliver(svc.ingest(substituted("evt-s2", "REG-S1", METTE, JENS)))
    return svc


def text(reply_body: bytes) -> str:
    return html.unescape(reply_body.decode("utf-8"))


def links(page: str, prefix: str) -> list[str]:
    return [html.unescape(h) for h in re.findall(r'href="([^"]+)"', page) if h.startswith(prefix)]


def test_registration_page_shows_the_new_holder_history_and_messages(
    organiser: Client, substitution: Service
) -> None:
    reply = organiser.get(f"{REG}/REG-S1")
    assert reply.status == 200
    page = text(reply.body)
    assert re.search(r"data-holder>Jens Ødegaard<", page)
    assert re.search(r"data-status>Aktiv<", page)
    assert "Overdraget" in page and "Tilmeldt" in page  # both facts of the history
    assert "Jens Ødegaard <jens.odegaard@aarhus.dk>" in page  # who took over ...
    assert "Mette Sørensen <mette.sorensen@aarhus.dk>" in page  # ... from whom
    rows = re.findall(r'<tr data-message="[^"]+">(.*?)</tr>', page, re.S)
    kinds = {k for row in rows for k in re.findall(r">(Bekræftelse|Overdraget \(\w+\))<", row)}
    assert {"Bekræftelse", "Overdraget (afgiver)", "Overdraget (modtager)"} <= kinds
    assert all(re.search(r"data-state>Sendt<", row) for row in rows)
    assert all("250" in row for row in rows)  # the relay's reply


def test_unknown_registration_is_a_danish_404(organiser: Client) -> None:
    reply = organiser.get(f"{REG}/REG-NOPE")
    assert reply.status == 404 and "Ukendt tilmelding" in text(reply.body)


def test_a_sent_mail_composed_again_shows_its_subject_and_text(
    organiser: Client, substitution: Service, sink: Sink
) -> None:
    page = text(organiser.get(f"{REG}/REG-S1").body)
    [first, *_] = links(page, f"{REG}/REG-S1/messages/")
    reply = organiser.get(first)
    assert reply.status == 200
    shown = text(reply.body)
    confirmation = message_from_bytes(sink.received[0].data, policy=policy.default)
    assert f"data-subject>{confirmation['Subject']}<" in shown  # what was sent
    plain = confirmation.get_body(preferencelist=("plain",))
    assert plain is not None
    pre = re.search(r'<pre class="text"[^>]*>(.*?)</pre>', shown, re.S)
    assert pre and pre.group(1).strip() == plain.get_content().strip()
    assert "sat op igen" in shown  # the page says it is composed again
    assert re.search(r"data-method>Invitation<", shown)
    assert f'src="{first.replace(":", "%3A")}/mail.html"' in reply.body.decode()


def test_mail_html_is_the_framable_document_and_needs_a_session(
    organiser: Client, substitution: Service, server: Api
) -> None:
    page = text(organiser.get(f"{REG}/REG-S1").body)
    [first, *_] = links(page, f"{REG}/REG-S1/messages/")
    for path in (f"{first}/mail.html", f"{PREVIEWS}/confirmation/mail.html"):
        reply = organiser.get(path)
        assert reply.status == 200 and reply.headers["content-type"].startswith("text/html")
        assert reply.headers["content-security-policy"] == FRAME_CSP
        assert reply.headers["x-frame-options"] == "SAMEORIGIN"
        assert reply.headers["cache-control"] == "no-store"
        assert b'lang="da"' in reply.body
        anonymous = Client(server).get(path)
        assert anonymous.status == 303 and anonymous.headers["location"].startswith("/login")
        assert b"Mette" not in anonymous.body


def test_a_message_key_of_another_registration_is_refused(
    organiser: Client, substitution: Service
) -> None:
    substitution.deliver(substitution.ingest(created("evt-o1", "REG-O1", JENS)))
    page = text(organiser.get(f"{REG}/REG-S1").body)
    [first, *_] = links(page, f"{REG}/REG-S1/messages/")
    key = first.rsplit("/", 1)[1]
    for path in (f"{REG}/REG-O1/messages/{key}", f"{REG}/REG-O1/messages/{key}/mail.html"):
        reply = organiser.get(path)
        assert reply.status == 404 and "Ukendt mail" in text(reply.body)
    assert organiser.get(f"{REG}/REG-S1/messages/nope").status == 404


def test_search_by_id_name_and_address_escapes_what_it_shows(
    organiser: Client, service: Callable[..., Service], folder: Path
) -> None:
    svc = service(conferences_dir=str(folder))
    svc.ingest(created("evt-q1", "REG-Q1", METTE))
    svc.ingest(created("evt-q2", "REG-Q2", JENS))
    evil = {**person(7), "name": "Eva <script>alert(1)</script> Ørsted"}
    svc.ingest(created("evt-q3", "REG-Q3", evil))
    for query, found, not_found in (
        ("REG-Q2", "REG-Q2", "REG-Q1"),  # an id matches exactly ...
        ("REG-Q", None, "REG-Q1"),  # ... and only exactly
        ("sØrEnSeN", "REG-Q1", "REG-Q2"),  # a part of the name, in any case
        ("ODEGAARD@AARHUS", "REG-Q2", "REG-Q1"),  # a part of the address
    ):
        page = organiser.get(f"/search?q={quote(query)}").body.decode()
        if found:
            assert f'href="{REG}/{found}"' in page, query
        assert f'href="{REG}/{not_found}"' not in page, query
    page = organiser.get("/search?q=%C3%B8rsted").body.decode()
    assert f'href="{REG}/REG-Q3"' in page
    assert "<script>alert" not in page and "Eva &lt;script&gt;alert(1)&lt;/script&gt;" in page
    empty = organiser.get("/search").body.decode()
    assert 'id="q"' in empty and '<label for="q">' in empty and "Resultater" not in empty


def test_search_stops_at_100_results_and_says_so(
    organiser: Client, service: Callable[..., Service], folder: Path
) -> None:
    svc = service(conferences_dir=str(folder))
    for n in range(101):
        svc.ingest(created(f"evt-m{n}", f"REG-M{n}", person(n)))
    page = organiser.get("/search?q=deltager").body.decode()
    assert len(re.findall(rf'href="{REG}/REG-M\d+"', page)) == 100
    assert "Viser de første 100 resultater" in page


def test_every_kind_of_mail_has_a_preview_with_its_invite(organiser: Client) -> None:
    listing = organiser.get(PREVIEWS).body.decode()
    expected = {
        Kind.CONFIRMATION: "Invitation",
        Kind.CANCELLATION: "Aflysning",
        Kind.SUBSTITUTION_COPY: "Denne mail har ingen kalenderinvitation.",
    }
    for kind in Kind:
        assert f'href="{PREVIEWS}/{kind.value}"' in listing
        reply = organiser.get(f"{PREVIEWS}/{kind.value}")
        assert reply.status == 200, kind
        page = text(reply.body)
        assert re.search(r"data-subject>[^<]+<", page)
        method = re.search(r"data-method>([^<]+)<", page)
        assert method, kind
        if kind in expected:
            assert method.group(1) == expected[kind]
        if kind != Kind.SUBSTITUTION_COPY:
            assert "data-summary>Kommunernes Digitaliseringstræf" in page
            assert "Hele dagen" in page  # the shipped conference has no times
        assert f'src="{PREVIEWS}/{kind.value}/mail.html"' in page
    unknown = organiser.get(f"{PREVIEWS}/newsletter")
    assert unknown.status == 404 and "Ukendt mail" in text(unknown.body)


def test_the_invite_shows_the_conference_hours(organiser: Client, folder: Path) -> None:
    announce(folder / f"{CONFERENCE}.toml", times=True)
    page = text(organiser.get(f"{PREVIEWS}/confirmation").body)
    assert "kl.\u00a09.00–16.00" in page


def test_a_test_mail_reaches_the_sink(organiser: Client, sink: Sink) -> None:
    page = organiser.get(f"{PREVIEWS}/reminder")
    action = f"{PREVIEWS}/reminder/test"
    fields = form_for(page.body, action)
    assert fields["to"]  # prefilled with the organiser's address
    reply = organiser.post(action, {**fields, "to": "tester@kommune.example.dk"})
    assert reply.status == 200
    assert "Sendt til tester@kommune.example.dk" in text(reply.body)
    [got] = sink.wait_for(1)
    assert got.recipients == ("tester@kommune.example.dk",)
    sent = message_from_bytes(got.data, policy=policy.default)
    shown = re.search(r"data-subject>([^<]+)<", text(page.body))
    assert shown and str(sent["Subject"]) == shown.group(1)
    assert "tester@kommune.example.dk" in str(sent["To"])


def test_a_test_mail_without_csrf_or_to_a_bad_address_is_not_sent(
    organiser: Client, sink: Sink
) -> None:
    action = f"{PREVIEWS}/confirmation/test"
    fields = form_for(organiser.get(f"{PREVIEWS}/confirmation").body, action)
    for csrf in (None, "wrong"):
        sent = {"to": "tester@kommune.example.dk"}
        if csrf is not None:
            sent["csrf"] = csrf
        assert organiser.post(action, sent).status == 403
    assert not sink.received  # the send happens within the request: none was made
    bad = organiser.post(action, {**fields, "to": "ikke en adresse"})
    assert bad.status == 422 and "ikke en gyldig e-mailadresse" in text(bad.body)
    assert not sink.received
    # The same form with a valid address does send: the refusals above were the CSRF
    # check and the address check, not a broken send.
    assert organiser.post(action, {**fields, "to": "ok@kommune.example.dk"}).status == 200
    [only] = sink.wait_for(1)
    assert only.recipients == ("ok@kommune.example.dk",)
    assert len(sink.received) == 1


def test_a_relay_refusal_is_shown(organiser: Client, sink: Sink) -> None:
    sink.script.rcpt["refused"] = "550 5.1.1 no such user"
    action = f"{PREVIEWS}/confirmation/test"
    fields = form_for(organiser.get(f"{PREVIEWS}/confirmation").body, action)
    reply = organiser.post(action, {**fields, "to": "refused@kommune.example.dk"})
    assert reply.status == 502
    assert "Fejl" in text(reply.body) and "no such user" in text(reply.body)
