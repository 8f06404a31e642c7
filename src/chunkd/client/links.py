"""Upload links (``/v1/upload-links``): an owner's URL through which a partner without an account
uploads into the owner's files, within limits. The calls need the scope ``links:admin`` (and
``files:create``, which a link grants). Written once as flows (see :mod:`chunkd.client._effects`),
performed by both clients."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from urllib.parse import quote

import httpx

from chunkd.client._effects import Flow
from chunkd.client.models import UploadLink

__all__ = ["create_link_flow", "links_flow", "revoke_link_flow"]

Send = Callable[..., Flow[httpx.Response]]
PATH = "/v1/upload-links"


def create_link_flow(
    send: Send,
    *,
    expires_in: int | None,
    max_files: int | None,
    max_bytes: int | None,
    allowed_mime_types: Sequence[str] | None,
    note: str | None,
) -> Flow[UploadLink]:
    body = {
        "expiresIn": expires_in,
        "maxFiles": max_files,
        "maxBytes": max_bytes,
        "allowedMimeTypes": list(allowed_mime_types) if allowed_mime_types is not None else None,
        "note": note,
    }
    # Sent again only when no answer came: a link made by a lost try holds a token nobody was
    # shown, so it admits no one (and `links ls` shows it, to revoke).
    response = yield from send("POST", PATH, json={k: v for k, v in body.items() if v is not None})
    return UploadLink.from_json(response.json())


def links_flow(send: Send, limit: int) -> Flow[list[UploadLink]]:
    response = yield from send("GET", PATH, params={"limit": limit})
    return [UploadLink.from_json(link) for link in response.json()["data"]]


def revoke_link_flow(send: Send, link_id: str) -> Flow[UploadLink]:
    response = yield from send("DELETE", f"{PATH}/{quote(link_id, safe='')}")
    return UploadLink.from_json(response.json())
