"""Search for a seat across every conference: by registration id (exact) or by a part of
the attendee's name or address (case-insensitive), at most LIMIT results.

It reads every conference's seats (the same pages a reminder batch reads): fine for the
sizes the console serves (some thousand seats), and nothing is kept between searches.
"""

from __future__ import annotations

from dataclasses import dataclass

from fastapi import APIRouter, Request, Response
from fastapi.responses import HTMLResponse

from notifier.announce import seats_of
from notifier.api.context import ApiContext
from notifier.console.web import ConsoleRoute, SignedIn, render
from notifier.domain.conference import Conference
from notifier.domain.plan import Seat

router = APIRouter(route_class=ConsoleRoute, include_in_schema=False)

LIMIT = 100
MAX_QUERY = 200
SEAT_STATUS = {"active": "Aktiv", "cancelled": "Afmeldt"}


@dataclass(frozen=True)
class Hit:
    conference: Conference
    seat: Seat


def matches(seat: Seat, query: str, folded: str) -> bool:
    """The registration id exactly, or a part of the name or address in any case."""
    if seat.registration == query:
        return True
    person = seat.attendee
    return folded in person.name.casefold() or folded in person.email.casefold()


def find(ctx: ApiContext, query: str) -> tuple[list[Hit], bool]:
    """Up to LIMIT hits, exact id matches first, and whether there were more."""
    folded = query.casefold()
    hits: list[Hit] = []
    for slug in ctx.conferences.slugs():
        conf = ctx.conferences.get(slug)
        hits += [Hit(conf, s) for s in seats_of(ctx.client, conf) if matches(s, query, folded)]
    hits.sort(key=lambda h: h.seat.registration != query)  # stable: exact ids on top
    return hits[:LIMIT], len(hits) > LIMIT


@router.get("/search", response_class=HTMLResponse)
def search(request: Request, who: SignedIn, q: str = "") -> Response:
    query = q.strip()[:MAX_QUERY]
    hits, more = find(who.ctx, query) if query else ([], False)
    values = {
        "title": f"Søg: {query}" if query else "Søg",
        "query": query,
        "hits": hits,
        "more": more,
        "limit": LIMIT,
        "seat_status": SEAT_STATUS,
    }
    return render(request, "search.html", values, session=who.session)
