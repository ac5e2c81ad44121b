"""The organisers' console on a real server and Redis: login, sessions, CSRF, the security
headers, and the reminder flow up to the published event (the browser test drives the same
pages in Chromium, with a worker)."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import pytest
import redis

from notifier.service import Service
from notifier.store.tokens import Tokens
from tests.api_support import Api, Reply, api, make_token
from tests.console_support import Client, folder, form_for, organiser, server
from tests.events import CONFERENCE, METTE, created
from tests.integration.test_api_events import queued

pytestmark = pytest.mark.integration
__all__ = ["api", "folder", "organiser", "server"]

PAGES = ("/", f"/conferences/{CONFERENCE}", f"/conferences/{CONFERENCE}/reminders")


def assert_secure_headers(reply: Reply) -> None:
    csp = reply.headers["content-security-policy"]
    assert "frame-ancestors 'none'" in csp
    script = re.search(r"script-src ([^;]*)", csp)
    assert script and "'unsafe-inline'" not in script.group(1)
    assert reply.headers["x-content-type-options"] == "nosniff"
    assert reply.headers["referrer-policy"] == "same-origin"


def test_login_form_has_a_token_field_and_the_session_cookie_is_strict(server: Api) -> None:
    c = Client(server)
    page = c.get("/login")
    assert page.status == 200 and b'lang="da"' in page.body
    assert "token" in form_for(page.body, "/login")
    done = c.login(make_token(server.settings, "organiser"))
    assert (done.status, done.headers["location"]) == (303, "/")
    [cookie] = [h for h in done.cookies if h.startswith("notifier_session=")]
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie.replace("Strict", "strict")
    assert "Secure" not in cookie  # plain HTTP here; Secure over HTTPS (behind the proxy)
    assert c.get("/").status == 200


def test_without_a_session_no_page_shows_data(server: Api, redis_client: redis.Redis) -> None:
    Client(server)  # nobody logged in
    for path in PAGES:
        reply = Client(server).get(path)
        assert reply.status == 303 and reply.headers["location"].startswith("/login")
        assert CONFERENCE.encode() not in reply.body
    progress = Client(server).get(f"/conferences/{CONFERENCE}/batches/reminder/progress")
    assert progress.status == 303


def test_an_ingest_token_and_a_wrong_one_are_refused(server: Api) -> None:
    for token in (make_token(server.settings, "ingest"), "ntf_wrong", ""):
        c = Client(server)
        reply = c.login(token)
        assert reply.status == 401 and "notifier_session" not in c.cookies
        assert "arrangør-nøgle".encode() in reply.body


def test_failed_logins_are_rate_limited(server: Api) -> None:
    c = Client(server)
    for _ in range(10):
        assert c.login("ntf_guess").status == 401
    good = make_token(server.settings, "organiser")
    limited = c.login(good)  # even the right token, until the window ends
    assert limited.status == 429 and int(limited.headers["retry-after"]) > 0
    assert "notifier_session" not in c.cookies


def test_every_response_carries_the_security_headers(organiser: Client, server: Api) -> None:
    for path in (*PAGES, "/login", "/static/console.css", "/static/console.js", "/nope"):
        assert_secure_headers(organiser.get(path))
    assert_secure_headers(server.call("GET", "/v1/health"))


def test_a_post_without_the_csrf_token_is_refused_and_changes_nothing(
    organiser: Client, redis_client: redis.Redis
) -> None:
    before = queued(redis_client)
    fields = {"step": "send", "batch": "csrf-test", "allow_past": "1"}
    path = f"/conferences/{CONFERENCE}/reminders"
    for csrf in (None, "wrong"):
        sent = fields if csrf is None else {**fields, "csrf": csrf}
        reply = organiser.post(path, sent)
        assert reply.status == 403
    assert queued(redis_client) == before
    assert organiser.post("/logout", {}).status == 403
    assert organiser.get("/").status == 200  # still logged in


def test_logout_ends_the_session(organiser: Client) -> None:
    session = organiser.cookies["notifier_session"]
    page = organiser.get("/")
    csrf = form_for(page.body, "/logout")["csrf"]
    assert organiser.post("/logout", {"csrf": csrf}).status == 303
    assert "notifier_session" not in organiser.cookies
    organiser.cookies["notifier_session"] = session  # an old cookie opens nothing
    assert organiser.get("/").status == 303


def test_a_revoked_token_ends_its_sessions(server: Api, redis_client: redis.Redis) -> None:
    c = Client(server)
    c.login(make_token(server.settings, "organiser", name="kl-event"))
    assert c.get("/").status == 200
    Tokens(redis_client).revoke("kl-event", 1.0)
    assert c.get("/").status == 303


def test_reminder_dry_run_then_send_publishes_one_event(
    organiser: Client, service: Callable[..., Service], redis_client: redis.Redis, folder: Path
) -> None:
    svc = service(conferences_dir=str(folder))
    for i in range(3):
        svc.ingest(created(f"evt-c{i}", f"REG-C{i}"))
    path = f"/conferences/{CONFERENCE}/reminders"
    fields = form_for(organiser.get(path).body, path)
    refused = organiser.post(path, {**fields, "batch": "uge-16"})  # 2024: past
    assert refused.status == 409 and "overstået".encode() in refused.body
    before = len(queued(redis_client))
    dry = organiser.post(path, {**fields, "batch": "uge-16", "allow_past": "1"})
    assert dry.status == 200
    assert re.search(rb"data-recipients>3<", dry.body)
    assert len(queued(redis_client)) == before  # a dry run sends nothing
    confirm = form_for(dry.body, path)
    assert confirm["step"] == "send"
    for _ in range(2):  # posting the confirmation twice publishes once
        sent = organiser.post(path, confirm)
        assert (sent.status, sent.headers["location"]) == (
            303,
            f"/conferences/{CONFERENCE}/batches/uge-16",
        )
    events = queued(redis_client)[before:]
    assert [e["id"] for e in events] == [f"remind:{CONFERENCE}:uge-16"]
    assert organiser.get(sent.headers["location"]).status == 200


def test_overview_and_conference_pages_show_counts_and_events(
    organiser: Client, service: Callable[..., Service], folder: Path
) -> None:
    svc = service(conferences_dir=str(folder))
    svc.deliver(svc.ingest(created("evt-o1", "REG-O1")))
    svc.ingest({"id": "evt-bad", "type": "registration.created", "conference": CONFERENCE})
    overview = organiser.get("/").body.decode()
    assert "Aktive pladser" in overview and "Kommunernes Digitaliseringstræf" in overview
    page = organiser.get(f"/conferences/{CONFERENCE}").body.decode()
    assert "evt-o1" in page and "REG-O1" in page and "evt-bad" in page
    assert "Afvist (dead letter)" in page
    assert METTE["email"] not in page  # the conference page lists ids, not addresses


def test_login_returns_to_the_page_asked_for_but_never_to_another_site(server: Api) -> None:
    token = make_token(server.settings, "organiser")
    for asked, lands in (
        (f"/conferences/{CONFERENCE}", f"/conferences/{CONFERENCE}"),
        ("//evil.example/x", "/"),
        ("https://evil.example/", "/"),
        ("/\\evil.example", "/"),
    ):
        c = Client(server)
        fields = form_for(c.get(f"/login?next={asked}").body, "/login")
        assert fields["next"] == lands
        reply = c.post("/login", {**fields, "token": token, "next": asked})
        assert reply.headers["location"] == lands


def test_the_login_form_needs_its_own_csrf_token(server: Api) -> None:
    c = Client(server)
    fields = form_for(c.get("/login").body, "/login")
    token = make_token(server.settings, "organiser")
    refused = c.post("/login", {**fields, "token": token, "csrf": "forged"})
    assert refused.status == 403 and "notifier_session" not in c.cookies


def test_behind_a_tls_proxy_the_session_cookie_is_secure(server: Api) -> None:
    """uvicorn takes X-Forwarded-Proto from a proxy on loopback: the request was HTTPS."""
    c = Client(server)
    c.extra["X-Forwarded-Proto"] = "https"
    done = c.login(make_token(server.settings, "organiser"))
    assert done.status == 303
    [cookie] = [h for h in done.cookies if h.startswith("notifier_session=")]
    assert "Secure" in cookie and "HttpOnly" in cookie
