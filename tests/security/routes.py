"""Every route of every frontend, as rows of the owner-isolation matrix (test_isolation.py).

To cover a new route, add a ``Route`` row: the method, the path with ``{id}`` where the owner's
object id goes (a query string may follow), the scope it needs (None: any valid credential; ``also``:
other scopes that suffice as well), how to make the object (``target``, one of ``TARGETS``: made
through that frontend's own API by test_isolation.py) and the request body, in which ``{id}`` is
replaced too (ids carried in a form or JSON body). ``dialect`` names the frontend's error shape,
checked on the 401/403/404 answers. ``test_every_route_is_in_the_matrix`` fails while a route of
the app has no row, so no route escapes the matrix."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any, Literal

from tests.support.media_files import make_png

Target = Literal[
    "upload",  # a native upload, PENDING
    "upload_done",  # a native upload, COMPLETED
    "key",  # an API key id
    "tus",  # a tus upload (POST /files), PENDING
    "tus_done",  # a tus upload, COMPLETED (creation-with-upload)
    "pm",  # a Fine Uploader chunked upload's qquuid, every chunk sent, not done
    "pm_done",  # a whole small file's qquuid, COMPLETED
    "media_upload",  # a media chunk upload's upload_id, every byte sent, not completed
    "media",  # a published Media object's integer id
    "asset",  # a single-PUT asset's fileId, PENDING
    "asset_multi",  # a multipart asset's fileId (parts uploaded with signed URLs)
    "link",  # an upload link's id
    "webhook",  # a webhook endpoint's id
    "webhook_delivery",  # "<endpoint id>|<delivery id>": one id per {id} of the path, in order
]
Dialect = Literal["native", "seed", "tus", "pm", "media", "asset"]

# A real (tiny) PNG, so a media upload can be published.
PNG = make_png(4, 4)
PNG_MD5 = hashlib.md5(PNG).hexdigest()
TEN = b"0123456789"
BOUNDARY = "----chunkdMatrixBoundary"
TUS = {"Tus-Resumable": "1.0.0"}
PATCH_HEADERS = {**TUS, "Content-Type": "application/offset+octet-stream", "Upload-Offset": "0"}
FORM = {"Content-Type": "application/x-www-form-urlencoded"}
MULTIPART = {"Content-Type": f"multipart/form-data; boundary={BOUNDARY}"}


def multipart(fields: list[tuple[str, str]], file_field: str, filename: str, data: bytes) -> bytes:
    """A multipart/form-data body: text fields first, then one file part."""
    out = b""
    for name, value in fields:
        out += f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode()
    out += (
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="{file_field}"; filename="{filename}"\r\n'
        "Content-Type: application/octet-stream\r\n\r\n"
    ).encode()
    return out + data + f"\r\n--{BOUNDARY}--\r\n".encode()


@dataclass(frozen=True)
class Route:
    method: str
    path: str
    scope: str | None
    target: Target | None = "upload"
    json: Any = None
    content: bytes | None = None
    headers: dict[str, str] = field(default_factory=dict)
    dialect: Dialect = "native"
    also: frozenset[str] = frozenset()
    label: str = ""

    @property
    def name(self) -> str:
        """``METHOD /path`` as in the OpenAPI document (query string left out)."""
        return f"{self.method} {self.path.split('?', 1)[0]}"

    @property
    def id(self) -> str:
        return f"{self.name} {self.label}".strip()


ROUTES: list[Route] = [
    # native Files API
    Route("POST", "/v1/files", "files:create", None, json={"filename": "a.txt", "sizeBytes": 10}),
    Route("GET", "/v1/files", "files:read", None),
    Route("GET", "/v1/usage", "files:read", None),
    Route("GET", "/v1/files/{id}", "files:read"),
    Route("PUT", "/v1/files/{id}/parts/1", "files:create", content=TEN),
    Route("PUT", "/v1/files/{id}/content", "files:create", content=TEN),
    Route("POST", "/v1/files/{id}/complete", "files:create", json={}),
    Route("POST", "/v1/files/{id}/cancel", "files:create"),
    Route("DELETE", "/v1/files/{id}", "files:delete"),
    Route("GET", "/v1/files/{id}/content", "files:read", "upload_done"),
    Route("HEAD", "/v1/files/{id}/content", "files:read", "upload_done"),
    Route("POST", "/v1/files/{id}/download-url", "files:read", "upload_done"),
    # credentials
    Route("POST", "/v1/auth/token", None, None, json={}),
    Route("POST", "/auth/token", None, None, json={}, dialect="seed"),
    Route("POST", "/v1/keys", "keys:admin", None, json={"scopes": ["files:read"]}),
    Route("GET", "/v1/keys", "keys:admin", None),
    Route("DELETE", "/v1/keys/{id}", "keys:admin", "key"),
    # webhooks
    Route("POST", "/v1/webhooks", "webhooks:admin", None, json={"url": "http://127.0.0.1:9/hook"}),
    Route("GET", "/v1/webhooks", "webhooks:admin", None),
    Route("GET", "/v1/webhooks/{id}", "webhooks:admin", "webhook"),
    Route("PATCH", "/v1/webhooks/{id}", "webhooks:admin", "webhook", json={"enabled": False}),
    Route("DELETE", "/v1/webhooks/{id}", "webhooks:admin", "webhook"),
    Route("GET", "/v1/webhooks/{id}/deliveries", "webhooks:admin", "webhook"),
    Route("POST", "/v1/webhooks/{id}/secret/rotate", "webhooks:admin", "webhook"),
    Route("POST", "/v1/webhooks/{id}/recover", "webhooks:admin", "webhook", json={"since": "2026-01-01T00:00:00Z"}),
    Route("POST", "/v1/webhooks/{id}/deliveries/{id}/retry", "webhooks:admin", "webhook_delivery"),
    Route("GET", "/metrics", "metrics:read", None),
    # upload links
    Route("POST", "/v1/upload-links", "links:admin", None, json={"maxFiles": 1}),
    Route("GET", "/v1/upload-links", "links:admin", None),
    Route("GET", "/v1/upload-links/{id}", "links:admin", "link"),
    Route("DELETE", "/v1/upload-links/{id}", "links:admin", "link"),
    # tus (/files; not in the OpenAPI document, listed from the app's routes)
    Route("POST", "/files", "files:create", None, headers={**TUS, "Upload-Length": "10"}, dialect="tus"),
    Route("POST", "/files/", "files:create", None, headers={**TUS, "Upload-Length": "10"}, dialect="tus"),
    Route("HEAD", "/files/{id}", "files:create", "tus", headers=TUS, dialect="tus", also=frozenset({"files:read"})),
    Route("PATCH", "/files/{id}", "files:create", "tus", content=TEN, headers=PATCH_HEADERS, dialect="tus"),
    Route(
        "POST",
        "/files/{id}",
        "files:create",
        "tus",
        content=TEN,
        headers={**PATCH_HEADERS, "X-HTTP-Method-Override": "PATCH"},
        dialect="tus",
        label="override PATCH",
    ),
    Route("DELETE", "/files/{id}", "files:create", "tus", headers=TUS, dialect="tus", label="pending"),
    Route("DELETE", "/files/{id}", "files:delete", "tus_done", headers=TUS, dialect="tus", label="completed"),
    Route("GET", "/files/{id}", "files:read", "tus_done", dialect="tus"),
    Route("HEAD", "/files/{id}", "files:read", "tus_done", dialect="tus", label="download (no Tus-Resumable)"),
    # Fine Uploader (private messages)
    Route(
        "POST",
        "/api/v2/pm/upload/",
        "files:create",
        None,
        content=multipart([("qquuid", "matrix-new"), ("qqfilename", "a.txt")], "qqfile", "a.txt", TEN),
        headers=MULTIPART,
        dialect="pm",
        label="whole file",
    ),
    Route(
        "POST",
        "/api/v2/pm/upload/?done",
        "files:create",
        "pm",
        content=b"qquuid={id}&qqfilename=a.txt&qqtotalparts=1",
        headers=FORM,
        dialect="pm",
        label="done",
    ),
    Route("GET", "/api/v2/pm/upload/{id}", "files:read", "pm_done", dialect="pm"),
    Route("HEAD", "/api/v2/pm/upload/{id}", "files:read", "pm_done", dialect="pm"),
    Route("GET", "/api/v2/pm/upload/{id}/info", "files:read", "pm", dialect="pm"),
    Route("DELETE", "/api/v2/pm/upload/{id}", "files:create", "pm", dialect="pm", label="pending"),
    Route("DELETE", "/api/v2/pm/upload/{id}", "files:delete", "pm_done", dialect="pm", label="completed"),
    # media (django-chunked-upload + Media objects)
    Route(
        "POST",
        "/api/v2/media/upload/chunk/",
        "files:create",
        None,
        content=multipart([], "image", "a.png", PNG),
        headers={**MULTIPART, "Content-Range": f"bytes 0-{len(PNG) - 1}/{len(PNG)}"},
        dialect="media",
        label="first chunk",
    ),
    Route(
        "POST",
        "/api/v2/media/upload/chunk/",
        "files:create",
        "media_upload",
        content=multipart([("upload_id", "{id}")], "image", "a.png", b"x"),
        headers={**MULTIPART, "Content-Range": f"bytes {len(PNG)}-{len(PNG)}/{len(PNG) + 1}"},
        dialect="media",
        label="next chunk",
    ),
    Route(
        "POST",
        "/api/v2/media/upload/complete/",
        "files:create",
        "media_upload",
        content=f"upload_id={{id}}&md5={PNG_MD5}".encode(),
        headers=FORM,
        dialect="media",
    ),
    Route("GET", "/api/v2/media/{id}/", "files:read", "media", dialect="media"),
    Route("DELETE", "/api/v2/media/{id}/", "files:delete", "media", dialect="media"),
    Route("GET", "/api/v2/media/{id}/file/", "files:read", "media", dialect="media"),
    Route("HEAD", "/api/v2/media/{id}/file/", "files:read", "media", dialect="media"),
    # assets (credentials instead of the signed URL on the PUTs)
    Route("POST", "/asset", "files:create", None, json={"filename": "a.txt", "filesize": 10}, dialect="asset"),
    Route("PUT", "/asset/{id}/parts/1", "files:create", "asset_multi", content=TEN[:5], dialect="asset"),
    Route("PUT", "/asset/{id}/content", "files:create", "asset", content=TEN, dialect="asset"),
    Route(
        "POST",
        "/asset/complete",
        "files:create",
        "asset_multi",
        json={"fileId": "{id}", "action": "cancel"},
        dialect="asset",
    ),
]

# Routes that are public on purpose.
PUBLIC = {
    "GET /healthz",
    "HEAD /healthz",
    "GET /readyz",
    "HEAD /readyz",
    "GET /openapi.json",
    "GET /docs",
    "GET /docs/oauth2-redirect",
    "GET /redoc",
    # the documentation pages' own scripts and styles (static files shipped in the package)
    "MOUNT /docs/assets",
    # tus capability discovery: no credentials by the protocol
    "OPTIONS /files",
    "OPTIONS /files/",
    "OPTIONS /files/{id}",
    # the browser upload page and its static assets (it signs in through the API)
    "GET /",
    "HEAD /",
    "GET /web/{id}",
    "HEAD /web/{id}",
}
# Routes for an upload link's own token only (any other credential: 403); tests/api/test_upload_links.py.
LINK_ONLY = {"GET /v1/upload-links/current"}
# What an upload link's token may call at all (on uploads made through its own link only).
LINK_ALLOWED = {
    "POST /v1/files",
    "GET /v1/files/{id}",
    "PUT /v1/files/{id}/parts/1",
    "PUT /v1/files/{id}/content",
    "POST /v1/files/{id}/complete",
    "POST /v1/files/{id}/cancel",
    "POST /files",
    "POST /files/",
    "HEAD /files/{id}",
    "PATCH /files/{id}",
    "POST /files/{id}",
    "DELETE /files/{id}",
}
# Handlers that only answer 405 (tus's own dialect) whatever the credentials.
NOT_ALLOWED = {"GET /files", "PUT /files", "PATCH /files", "DELETE /files", "HEAD /files", "PUT /files/{id}"}
