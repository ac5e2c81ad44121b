"""The organisers' web console: Danish pages rendered on the server, served by `notifier
serve` beside the HTTP API (the API finds `router` by name; see notifier.api.app).

Sign-in is with an organiser token (`/login`), which starts a session in Redis. Every page
needs a session; every state-changing form carries a CSRF token. Modules: web (what pages
share: templates, session, CSRF, errors), auth (login, logout), pages (overview, conference,
batch progress), data (what pages read), reminders, updates (announce a change), registrations,
search, previews (every mail kind, test send), deadletters (replay), suppressions,
static_files.
"""

from fastapi import APIRouter

from notifier.console import (
    auth,
    deadletters,
    pages,
    previews,
    registrations,
    reminders,
    search,
    static_files,
    suppressions,
    updates,
)

__all__ = ["router"]

router = APIRouter(include_in_schema=False)
_PARTS = (auth, pages, reminders, updates, registrations, search, previews, deadletters)
for _part in (*_PARTS, suppressions, static_files):
    router.include_router(_part.router)
