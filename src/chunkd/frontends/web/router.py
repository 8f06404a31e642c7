"""Serves the browser upload page at ``/`` and its static assets under ``/web/``.

The assets ship inside the package (``static/``), so a wheel carries them and the page never
loads anything from another origin. Only the files named in ``ASSETS`` are served (no path from
the request ever reaches the filesystem). Every response carries a strict Content-Security-Policy:
scripts, styles and requests only from this origin, no inline script, no framing, no forms
posting elsewhere. An upload link's token travels in the URL fragment (``/#link=…``), which
browsers never send to a server, so it appears in no access log or Referer; the page then keeps it
for the tab (sessionStorage) and takes it out of the address bar and the tab's history."""

from __future__ import annotations

from functools import cache
from importlib.resources import files
from typing import Annotated

from fastapi import APIRouter, Path
from starlette.responses import Response

__all__ = ["CSP", "router"]

# connect-src 'self': the page talks to this server only (a download is a signed URL the browser follows).
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self' data:; "
    "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
ASSETS = {
    "app.js": "text/javascript; charset=utf-8",
    "md5.js": "text/javascript; charset=utf-8",
    "uploader.js": "text/javascript; charset=utf-8",
    "style.css": "text/css; charset=utf-8",
}
HEADERS = {
    "Content-Security-Policy": CSP,
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cross-Origin-Opener-Policy": "same-origin",
    # Each asset's type is as the table above says, never as a browser would guess it (downloads too).
    "X-Content-Type-Options": "nosniff",
    # Revalidated on every load, so an upgraded server never runs a stale script.
    "Cache-Control": "no-cache",
}


@cache
def _read(name: str) -> bytes:
    return (files("chunkd.frontends.web") / "static" / name).read_bytes()


router = APIRouter(include_in_schema=False)


@router.api_route("/", methods=["GET", "HEAD"])  # HEAD: what uptime checks and link previews send
async def index() -> Response:
    """The upload page (sign in with an API key, or open an upload link's URL)."""
    return Response(_read("index.html"), media_type="text/html; charset=utf-8", headers=HEADERS)


@router.api_route("/web/{name}", methods=["GET", "HEAD"])
async def asset(name: Annotated[str, Path(max_length=64)]) -> Response:
    media_type = ASSETS.get(name)
    if media_type is None:
        return Response("not found\n", status_code=404, media_type="text/plain", headers=HEADERS)
    return Response(_read(name), media_type=media_type, headers=HEADERS)
