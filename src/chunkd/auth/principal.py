"""Who is calling, and what they may do."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from chunkd.domain.errors import Forbidden

__all__ = ["ALL_SCOPES", "SCOPES", "Principal", "refuse_escalation", "require_scope"]

SCOPES = {
    "files:create": "create uploads, send parts, complete and cancel them",
    "files:read": "get, list and download files",
    "files:delete": "delete files",
    "keys:admin": "manage API keys over the API",
    "links:admin": "create, list and revoke upload links (partners upload into your files through them)",
    "webhooks:admin": "register, list and delete your webhook endpoints; read their delivery log",
    "metrics:read": "read the Prometheus metrics (GET /metrics); grants nothing else",
}
ALL_SCOPES = frozenset(SCOPES)


@dataclass(frozen=True)
class Principal:
    owner: str
    scopes: frozenset[str]
    key_id: str
    via: str = "api_key"  # or "jwt", or "link"
    # Set for an upload link's token: the link id. Such a principal may only create and fill
    # uploads through that link (chunkd.auth.links.UploadLinks.authorize), never read or delete.
    upload_link: str | None = None
    # When the credential stops working (an access token's exp, an API key's expiry; None: never).
    # What it makes (a key) may not outlive it.
    expires_at: datetime | None = None


def require_scope(principal: Principal, scope: str) -> None:
    if scope not in principal.scopes:
        error = Forbidden(f"this credential lacks the {scope} scope", field="scope", scope=scope)
        error.code = "missing_scope"
        raise error


def refuse_escalation(principal: Principal, scopes: frozenset[str], *, granting: str, field: str) -> None:
    """A credential never grants a scope it lacks, whatever it makes (a key, an upload link whose
    token carries scopes): ``granting`` names what would grant them, ``field`` the request's field."""
    beyond = sorted(scopes - principal.scopes)
    if beyond:
        error = Forbidden(
            f"{granting} would grant {' '.join(beyond)}, which this credential lacks", field=field, scope=beyond[0]
        )
        error.code = "missing_scope"
        raise error
