"""The console's own CSS and JavaScript, served from the package (no CDN, no build step).

Only the files named in ASSETS are served, read once: nothing else under the package can be
fetched by a crafted path.
"""

from __future__ import annotations

from functools import cache

from fastapi import APIRouter, Response

from notifier.console.web import HERE

router = APIRouter(include_in_schema=False)

ASSETS = {
    "console.css": "text/css; charset=utf-8",
    "console.js": "text/javascript; charset=utf-8",
}


@cache
def _asset(name: str) -> bytes:
    return (HERE / "static" / name).read_bytes()


@router.get("/static/{name}")
def asset(name: str) -> Response:
    kind = ASSETS.get(name)
    if kind is None:
        return Response("Not found", status_code=404, media_type="text/plain")
    return Response(_asset(name), media_type=kind, headers={"Cache-Control": "max-age=300"})
