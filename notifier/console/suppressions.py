"""Suppressions (/suppressions): the addresses that get no more mail, why and since when,
with "Fjern" to lift one and a form to add one, as `notifier suppressions remove|add` do.

The address travels only in the POST body; the notice after the redirect is a flag in the
URL (`?done=removed`), so no address ever lands in a URL, a log line or the history.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from email_validator import EmailNotValidError, validate_email
from fastapi import APIRouter, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse

from notifier.console.labels import danish_reason
from notifier.console.web import ConsoleRoute, SignedIn, Viewer, now, posted, redirect, render
from notifier.store.suppressions import ORGANISER, Suppression, Suppressions

router = APIRouter(route_class=ConsoleRoute, include_in_schema=False)

MAX_REASON = 200
NOTICES = {
    "removed": ("ok", "Spærringen er fjernet: adressen får mails igen."),
    "not-found": ("error", "Adressen var ikke spærret (måske allerede fjernet)."),
    "added": ("ok", "Adressen er spærret: den får ikke flere mails."),
    "already": ("ok", "Adressen var allerede spærret; årsagen er opdateret."),
}


@dataclass(frozen=True)
class Row:
    entry: Suppression
    reason: str  # in Danish where the store's wording is known


def _page(request: Request, who: Viewer, **extra: Any) -> Response:
    entries = Suppressions(who.ctx.client).list()
    rows = [Row(s, danish_reason(s.reason)) for s in reversed(entries)]  # newest first
    values: dict[str, Any] = {
        "title": "Spærrede adresser",
        "rows": rows,
        "notice": NOTICES.get(extra.pop("done", "")),
        "error": "",
        "address": "",
        "reason": "",
    }
    status = extra.pop("status", 200)
    return render(request, "suppressions.html", values | extra, session=who.session, status=status)


@router.get("/suppressions", response_class=HTMLResponse)
def suppressions(request: Request, who: SignedIn, done: str = "") -> Response:
    return _page(request, who, done=done)


@router.post("/suppressions/remove", response_class=HTMLResponse)
async def remove(request: Request, who: SignedIn) -> Response:
    fields = await posted(request, who)
    # Not validated as an address: an entry the list holds must be removable as listed.
    removed = await run_in_threadpool(
        Suppressions(who.ctx.client).remove, fields.get("address", "")
    )
    return redirect(f"/suppressions?done={'removed' if removed else 'not-found'}")


@router.post("/suppressions/add", response_class=HTMLResponse)
async def add(request: Request, who: SignedIn) -> Response:
    fields = await posted(request, who)
    typed, note = fields.get("address", "").strip(), " ".join(fields.get("reason", "").split())
    try:
        address = validate_email(typed, check_deliverability=False).normalized
    except EmailNotValidError:
        error = "Det er ikke en gyldig mailadresse. Skriv den som navn@domæne.dk."
        values = {"error": error, "address": typed, "reason": note, "status": 422}
        return await run_in_threadpool(_page, request, who, **values)
    reason = f"{ORGANISER}: {note[:MAX_REASON]}" if note else ORGANISER

    def store() -> bool:
        return Suppressions(who.ctx.client).add(address, reason, message=None, now=now())

    fresh = await run_in_threadpool(store)
    return redirect(f"/suppressions?done={'added' if fresh else 'already'}")
