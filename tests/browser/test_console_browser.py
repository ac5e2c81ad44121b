"""The organisers' console in a real headless Chromium, against a real server, Redis, SMTP
sink and Celery worker: log in, a reminder's dry run and then the real batch followed to
done on the page (its script polls the progress), a dead letter replayed once the event it
was waiting for has arrived, and log out. axe-core runs over every page the test sees, and
every page is saved as a screenshot in artifacts/screenshots/ for reviewers."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.remote.webdriver import WebDriver

from devtools.browser import console_errors
from notifier.domain.notice import Kind
from notifier.settings import load_settings
from notifier.store.deadletter import DeadLetters
from notifier.store.outbox import Outbox
from notifier.store.status import status
from notifier.store.suppressions import Suppressions
from tests.api_support import Api, make_token
from tests.browser.conftest import Axe, Shots
from tests.conferences import announce, conference_copy
from tests.conftest import wait_for
from tests.e2e.conftest import Stack, stack
from tests.events import CONFERENCE, JENS, METTE, cancelled, created, person, substituted

pytestmark = pytest.mark.e2e
__all__ = ["stack"]

SEATS = 3


@pytest.fixture
def console(stack: Callable[..., Stack]) -> Iterator[tuple[Stack, Api, str]]:
    s = stack()
    server = Api(load_settings(s.env)).start()
    try:
        yield s, server, make_token(server.settings, "organiser", name="browser")
    finally:
        server.stop()


def url(server: Api, path: str) -> str:
    return f"http://127.0.0.1:{server.port}{path}"


def look(driver: WebDriver, axe: Axe, shots: Shots, name: str) -> None:
    """Every page the test shows: no serious or critical axe violations, no console error
    (a style or script the Content-Security-Policy blocked is one), and a screenshot."""
    shots(name)
    axe()
    assert console_errors(driver) == [], name


def submit(driver: WebDriver, form_action: str) -> None:
    driver.find_element(
        By.CSS_SELECTOR, f'form[action="{form_action}"] button[type=submit]'
    ).click()


def settled(s: Stack, total: int) -> bool:
    counts = status(s.client, failures=False).counts
    return counts["sent"] >= total and counts["queued"] + counts["sending"] == 0


def log_in(driver: WebDriver, server: Api, token: str) -> None:
    driver.get(url(server, "/"))  # no session: the login form
    assert driver.current_url.startswith(url(server, "/login"))
    driver.find_element(By.NAME, "token").send_keys(token + Keys.ENTER)  # the keyboard only
    wait_for(lambda: driver.find_elements(By.CSS_SELECTOR, "form.logout"), 10, "the overview")


def test_organiser_runs_a_reminder_replays_a_dead_letter_and_logs_out(
    console: tuple[Stack, Api, str], browser: WebDriver, axe: Axe, shots: Shots
) -> None:
    s, server, token = console
    s.publish(*(created(f"evt-b{i}", f"REG-B{i}", person(i)) for i in range(SEATS)))
    # A cancellation that arrives before its registration is a dead letter (unknown seat)
    s.publish(cancelled("evt-early-cancel", "REG-LATE"))
    wait_for(lambda: settled(s, SEATS), 30, "the confirmations")
    wait_for(lambda: DeadLetters(s.client).list(), 30, "the dead letter")

    browser.get(url(server, "/login"))
    look(browser, axe, shots, "01-login")
    log_in(browser, server, token)
    look(browser, axe, shots, "02-overview")
    # Keyboard: the first Tab reaches the skip link, which takes focus past the menu
    browser.find_element(By.TAG_NAME, "body").send_keys(Keys.TAB)
    skip = browser.switch_to.active_element
    assert (skip.get_attribute("href") or "").endswith("#indhold") and skip.is_displayed()
    assert "Kommunernes Digitaliseringstræf" in browser.page_source

    browser.get(url(server, f"/conferences/{CONFERENCE}"))
    look(browser, axe, shots, "03-conference")

    # The reminder: the form, the dry run (count and sample), then the real batch
    reminders = f"/conferences/{CONFERENCE}/reminders"
    browser.get(url(server, reminders))
    look(browser, axe, shots, "04-reminder-form")
    field = browser.find_element(By.ID, "batch")
    field.clear()
    field.send_keys("browser-1")
    browser.find_element(By.ID, "allow_past").click()
    submit(browser, reminders)
    count = browser.find_element(By.CSS_SELECTOR, "[data-recipients]").text
    assert count == str(SEATS)
    look(browser, axe, shots, "05-reminder-dry-run")
    sent_before = len(s.sink.received)
    assert sent_before == SEATS  # the dry run sent nothing
    submit(browser, reminders)
    wait_for(lambda: "/batches/browser-1" in browser.current_url, 10, "the batch page")
    # The page's own script follows the batch to done, without a reload
    done = browser.find_element(By.CSS_SELECTOR, '[data-field="status"]')
    wait_for(lambda: done.text == "Færdig", 60, "the page to show the batch done")
    finished = browser.find_element(By.CSS_SELECTOR, '[data-field="finished"]').text
    assert finished == str(SEATS)
    look(browser, axe, shots, "06-batch-done")
    assert len(s.sink.received) == 2 * SEATS

    # The dead letter: its registration arrives, then the organiser replays it
    s.publish(created("evt-late", "REG-LATE", person(9)))
    wait_for(lambda: settled(s, 2 * SEATS + 1), 30, "the late confirmation")
    browser.get(url(server, "/dead-letters"))
    look(browser, axe, shots, "07-dead-letters")
    [letter] = DeadLetters(s.client).list()
    submit(browser, f"/dead-letters/{letter.id}/replay")
    wait_for(lambda: not DeadLetters(s.client).list(), 30, "the replayed letter to apply")
    wait_for(lambda: len(s.sink.received) == 2 * SEATS + 2, 30, "the cancellation mail")
    look(browser, axe, shots, "08-dead-letter-replayed")

    # Log out: the session is gone, pages go back to the login form
    browser.find_element(By.CSS_SELECTOR, "form.logout button").click()
    wait_for(lambda: "/login" in browser.current_url, 10, "the login page")
    browser.get(url(server, "/"))
    assert browser.current_url.startswith(url(server, "/login"))
    assert "REG-B0" not in browser.page_source


def test_every_page_passes_axe_and_is_kept_as_a_screenshot(
    stack: Callable[..., Stack], tmp_path: Path, browser: WebDriver, axe: Axe, shots: Shots
) -> None:
    """Every kind of console page, with data on it (a substitution, a suppression, a dead
    letter, a conference change waiting to be announced), in Chromium: no serious or
    critical axe-core violations, and a screenshot of each."""
    folder = tmp_path / "conferences"
    path = conference_copy(folder)
    s = stack(conferences_dir=str(folder))
    server = Api(load_settings(s.env)).start()
    try:
        Suppressions(s.client).add(person(7)["email"], "complaint", message=None, now=1.0)
        s.publish(created("evt-p1", "REG-P1", METTE), created("evt-p7", "REG-P7", person(7)))
        s.publish(substituted("evt-p2", "REG-P1", METTE, JENS))
        s.publish({"id": "evt-bad", "type": "registration.created", "conference": CONFERENCE})
        wait_for(lambda: settled(s, 4), 30, "the mails")
        wait_for(lambda: DeadLetters(s.client).list(), 30, "the dead letter")
        announce(path, times=True)  # a change for the update page to show
        log_in(browser, server, make_token(server.settings, "organiser"))
        outbox = Outbox(s.client)
        mine = outbox.records(outbox.keys_of_registrations(CONFERENCE, ["REG-P1"]))
        [message] = [r.key for r in mine if r.kind == "confirmation"]
        base = f"/conferences/{CONFERENCE}"
        pages = {
            "10-search": "/search?q=Jens",
            "11-registration": f"{base}/registrations/REG-P1",
            "12-registration-mail": f"{base}/registrations/REG-P1/messages/{message}",
            "13-previews": f"{base}/previews",
            "15-update": f"{base}/updates",
            "16-suppressions": "/suppressions",
            "17-dead-letters": "/dead-letters",
            "18-conference-with-suppressed": base,
            "19-unknown-registration": f"{base}/registrations/REG-NONE",
        }
        pages |= {f"14-preview-{kind.value}": f"{base}/previews/{kind.value}" for kind in Kind}
        for name, page in sorted(pages.items()):
            browser.get(url(server, page))
            assert browser.find_elements(By.CSS_SELECTOR, "form.logout"), name
            look(browser, axe, shots, name)
        browser.get(url(server, f"{base}/updates"))
        assert "→" in browser.find_element(By.TAG_NAME, "main").text
    finally:
        server.stop()
