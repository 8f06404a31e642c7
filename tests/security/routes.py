"""Every route of every frontend, as rows of the owner-isolation matrix (test_isolation.py).

To cover a new route (a tus or seed-API route, say), add a ``Route`` row: the method, the path with
``{id}`` where the owner's object id goes, the scope it needs (None: any valid credential), and how
to make the object (``target``: "upload" for an upload id, "key" for an API key id, None for routes
without an id) and the request body. ``test_every_route_is_in_the_matrix`` fails while a route of
the app has no row, so no route escapes the matrix."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal


@dataclass(frozen=True)
class Route:
    method: str
    path: str
    scope: str | None
    target: Literal["upload", "key"] | None = "upload"
    json: Any = None
    content: bytes | None = None
    headers: dict[str, str] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return f"{self.method} {self.path}"


ROUTES: list[Route] = [
    # native Files API
    Route("POST", "/v1/files", "files:create", None, json={"filename": "a.txt", "sizeBytes": 10}),
    Route("GET", "/v1/files", "files:read", None),
    Route("GET", "/v1/files/{id}", "files:read"),
    Route("PUT", "/v1/files/{id}/parts/1", "files:create", content=b"0123456789"),
    Route("PUT", "/v1/files/{id}/content", "files:create", content=b"0123456789"),
    Route("POST", "/v1/files/{id}/complete", "files:create", json={}),
    Route("POST", "/v1/files/{id}/cancel", "files:create"),
    Route("DELETE", "/v1/files/{id}", "files:delete"),
    Route("GET", "/v1/files/{id}/content", "files:read"),
    # credentials
    Route("POST", "/v1/auth/token", None, None, json={}),
    Route("POST", "/auth/token", None, None, json={}),
    Route("POST", "/v1/keys", "keys:admin", None, json={"scopes": ["files:read"]}),
    Route("GET", "/v1/keys", "keys:admin", None),
    Route("DELETE", "/v1/keys/{id}", "keys:admin", "key"),
]

# Routes that are public on purpose.
PUBLIC = {"GET /healthz", "GET /openapi.json", "GET /docs", "GET /docs/oauth2-redirect", "GET /redoc"}
