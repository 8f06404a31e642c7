"""Upload links: a URL an owner hands to a partner who has no account, through which the partner
can create and fill uploads that land in the owner's files, within the link's limits.

The link's token is ``cl_<link id>_<secret>`` (the id 128 random bits, the secret 256); only a
SHA-256 of the secret is stored, and it is shown once, in the link's ``url`` when it is created.
As a credential (``Authorization: Bearer``, on the Files API and on the tus endpoint) it becomes a
``Principal`` with the one scope ``files:create`` and ``upload_link`` set, and
``UploadLinks.authorize`` confines it further, on every request:

- only the routes that create and fill uploads (``LINK_ROUTES``): never a list, a download, a
  delete, another frontend, or the keys and links APIs;
- on an upload id, only an upload made through this very link, and reads (``GET /v1/files/{id}``,
  tus ``HEAD``) only while it is unfinished, so a client can resume; anything else is a 404;
- the link is looked up on every request, so a revoked or expired link stops at once, also for
  uploads in progress through it (their next part or PATCH is refused);
- a link made with an API key (or a chunkd token issued for one) names that key, and revoking the
  key revokes the link in the same transaction (``KeyRepository.revoke_key``), as it ends the key's
  tokens and signed URLs. A link made while the key was being revoked (a node trusts a key it
  read up to a second ago) could miss that update, so each request through a link also looks its
  key up (in the key cache) and refuses the link once the key is gone. A link made with an
  identity provider's token names no key.

Limits are counted when an upload is created (``admit``): one file more and its declared size,
in one conditional UPDATE (``UploadLinkRepository.reserve``), so concurrent creates cannot pass
``maxFiles`` or ``maxBytes`` together. An upload through a link must therefore declare its size.
"""

from __future__ import annotations

import hashlib
import hmac
import mimetypes
import re
import secrets
from collections.abc import AsyncIterator, Iterable, Mapping
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from chunkd.auth.keys import key_gone, key_stands
from chunkd.auth.principal import Principal
from chunkd.domain.errors import Forbidden, InvalidInput, NotFound, QuotaExceeded, Unauthenticated
from chunkd.domain.metadata import LINK_METADATA_KEY
from chunkd.domain.names import clean_filename
from chunkd.domain.upload import Status, Upload
from chunkd.ports.keys import ApiKeyRecord
from chunkd.ports.links import UploadLinkRecord, UploadLinkRepository

__all__ = ["LINK_PREFIX", "LINK_SCOPES", "UploadLinks", "link_routes", "mime_allowed"]

LINK_PREFIX = "cl_"
LINK_SCOPES = frozenset({"files:create"})
_TOKEN = re.compile(r"^cl_([0-9a-f]{32})_([A-Za-z0-9_-]{43})$")
_LINK_ID = re.compile(r"^[0-9a-f]{32}$")
_MIME_PATTERN = re.compile(r"^(\*/\*|[a-z0-9][a-z0-9!#$&^_.+-]{0,126}/(\*|[a-z0-9][a-z0-9!#$&^_.+-]{0,126}))$")


def _hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def link_routes(tus_prefix: str) -> frozenset[tuple[str, str]]:
    """(method, route path) pairs a link's token may call; every other route answers 403.
    ``{file_id}`` routes are further confined to uploads made through the link. The method is the
    one a tus ``X-HTTP-Method-Override`` stands for, when a POST carries one."""
    tus = tus_prefix.rstrip("/")
    return frozenset(
        {
            ("POST", "/v1/files"),
            ("GET", "/v1/files/{file_id}"),
            ("PUT", "/v1/files/{file_id}/parts/{part_number}"),
            ("PUT", "/v1/files/{file_id}/content"),
            ("POST", "/v1/files/{file_id}/complete"),
            ("POST", "/v1/files/{file_id}/cancel"),
            ("GET", "/v1/upload-links/current"),
            ("POST", tus),
            ("POST", f"{tus}/"),
            ("HEAD", f"{tus}/{{file_id}}"),
            ("PATCH", f"{tus}/{{file_id}}"),
            ("DELETE", f"{tus}/{{file_id}}"),  # ends an unfinished upload; a finished one needs files:delete
        }
    )


# Reads of an upload allowed to a link: only while it is unfinished (the progress needed to resume).
_READS = frozenset({"GET", "HEAD"})


def mime_allowed(mime_type: str, allowed: Iterable[str] | None) -> bool:
    """Whether ``mime_type`` (parameters ignored) matches one of ``allowed`` (``type/subtype``,
    ``type/*`` or ``*/*``); None allows everything."""
    if allowed is None:
        return True
    essence = mime_type.split(";", 1)[0].strip().lower()
    kind = essence.split("/", 1)[0]
    return any(p in ("*/*", essence) or (p.endswith("/*") and p[:-2] == kind) for p in allowed)


class UploadLoader(Protocol):
    async def get(self, owner: str, upload_id: str, *, with_parts: bool = True) -> Upload: ...


class KeyLookup(Protocol):
    async def get_key(self, key_id: str) -> ApiKeyRecord | None: ...


class UploadLinks:
    """Creates, verifies and enforces upload links."""

    def __init__(
        self,
        repo: UploadLinkRepository,
        *,
        keys: KeyLookup | None = None,
        default_ttl_seconds: int,
        max_ttl_seconds: int,
        tus_prefix: str = "/files",
    ) -> None:
        self.repo = repo
        self.keys = keys  # the key cache: what a link's key answers is at most a second old
        self.default_ttl = default_ttl_seconds
        self.max_ttl = max_ttl_seconds
        self.routes = link_routes(tus_prefix)

    # ---- management (scope links:admin, checked by the router) -----------------------------
    async def create(
        self,
        owner: str,
        *,
        expires_in: int | None = None,
        max_bytes: int | None = None,
        max_files: int | None = None,
        allowed_mime_types: Iterable[str] | None = None,
        note: str | None = None,
        key_id: str | None = None,
    ) -> tuple[UploadLinkRecord, str]:
        """A new link, bound to the API key ``key_id`` when given (revoking that key revokes the
        link); returns its record and its token (shown once, never stored)."""
        ttl = self.default_ttl if expires_in is None else expires_in
        if not 1 <= ttl <= self.max_ttl:
            raise InvalidInput(f"expiresIn must be between 1 and {self.max_ttl} seconds", field="expiresIn")
        types: tuple[str, ...] | None = None
        if allowed_mime_types is not None:
            types = tuple(dict.fromkeys(t.strip().lower() for t in allowed_mime_types))
            for index, value in enumerate(types):
                if not _MIME_PATTERN.fullmatch(value):
                    message = f"allowedMimeTypes[{index}] is not a media type (type/subtype, type/* or */*)"
                    raise InvalidInput(message, field=f"allowedMimeTypes.{index}")
            if not types:
                raise InvalidInput(
                    "allowedMimeTypes must not be empty (leave it out to allow any)", field="allowedMimeTypes"
                )
        if note is not None and any((ord(c) < 32 and c not in "\n\t") or ord(c) == 127 for c in note):
            raise InvalidInput("note must not contain control characters", field="note")
        now = datetime.now(UTC)
        secret = secrets.token_urlsafe(32)
        record = UploadLinkRecord(
            id=secrets.token_hex(16),
            owner=owner,
            secret_hash=_hash(secret),
            created_at=now,
            expires_at=now + timedelta(seconds=ttl),
            max_bytes=max_bytes,
            max_files=max_files,
            allowed_mime_types=types,
            note=note,
            key_id=key_id,
        )
        await self.repo.add_link(record)
        return record, f"{LINK_PREFIX}{record.id}_{secret}"

    async def list(self, owner: str, limit: int = 100) -> list[UploadLinkRecord]:
        return await self.repo.list_links(owner, limit)

    async def get(self, owner: str, link_id: str, *, revoked: bool = True) -> UploadLinkRecord:
        """The owner's link; with ``revoked=False`` a revoked one is gone (404), as a deleted
        resource is (it stays in ``list``, with ``revokedAt``, for the record)."""
        record = await self.repo.get_link(link_id, owner) if _LINK_ID.fullmatch(link_id) else None
        if record is None:
            raise NotFound(f"no upload link with id {link_id!r}", field="id")
        if not revoked and record.revoked_at is not None:
            raise NotFound(f"upload link {link_id} was revoked at {record.revoked_at.isoformat()}", field="id")
        return record

    async def revoke(self, owner: str, link_id: str) -> UploadLinkRecord:
        """Revoke at once: the link's token is refused from its next request on."""
        if not _LINK_ID.fullmatch(link_id) or not await self.repo.revoke_link(link_id, owner, datetime.now(UTC)):
            raise NotFound(f"no upload link with id {link_id!r}", field="id")
        return await self.get(owner, link_id)

    # ---- the token as a credential ---------------------------------------------------------
    async def verify(self, token: str) -> Principal:
        match = _TOKEN.fullmatch(token)
        if match is None:
            raise Unauthenticated("malformed upload link token")
        record = await self.repo.get_link(match.group(1))
        expected = record.secret_hash if record else _hash("")
        # Compared even for an unknown id, so timing does not tell which ids exist.
        if not hmac.compare_digest(expected, _hash(match.group(2))) or record is None:
            raise Unauthenticated("invalid upload link")
        self._check_live(record, datetime.now(UTC))
        if record.key_id is not None and self.keys is not None:
            key = await self.keys.get_key(record.key_id)
            if not key_stands(key, record.owner):
                error = Unauthenticated(f"the API key this upload link was made with {key_gone(key)}", field="link")
                error.code = "link_revoked"
                raise error
        return Principal(
            owner=record.owner, scopes=LINK_SCOPES, key_id=f"link:{record.id}", via="link", upload_link=record.id
        )

    @staticmethod
    def _check_live(record: UploadLinkRecord, now: datetime) -> None:
        if record.revoked_at is not None:
            error = Unauthenticated("this upload link has been revoked", field="link")
            error.code = "link_revoked"
            raise error
        if record.expires_at <= now:
            error = Unauthenticated(f"this upload link expired at {record.expires_at.isoformat()}", field="link")
            error.code = "link_expired"
            raise error

    async def current(self, who: Principal) -> UploadLinkRecord:
        """The link a link token belongs to (what the upload page shows its visitor)."""
        if who.upload_link is None:
            raise Forbidden("only an upload link's token has a current link", field="Authorization")
        return await self.get(who.owner, who.upload_link)

    async def authorize(
        self, who: Principal, method: str, route_path: str | None, path_params: Mapping[str, Any], uploads: UploadLoader
    ) -> None:
        """Refuse anything a link's token may not do (see the module docstring)."""
        link = who.upload_link
        if link is None:
            return
        if route_path is None or (method.upper(), route_path) not in self.routes:
            raise Forbidden("an upload link can only create and fill uploads", field="Authorization")
        file_id = path_params.get("file_id")
        if file_id is None:
            return
        upload = await uploads.get(who.owner, str(file_id), with_parts=False)
        finished = upload.status is not Status.PENDING and method.upper() in _READS
        if upload.metadata.get(LINK_METADATA_KEY) != link or finished:
            raise NotFound(f"no upload with id {file_id!r}", field="id")

    async def admit(
        self, who: Principal, *, filename: str, size_bytes: int | None, mime_type: str | None, size_field: str
    ) -> tuple[dict[str, Any], str | None]:
        """Before creating an upload: for a link's token, check the media type and count the file
        against the link's limits (atomically). Returns the metadata to tag the upload with and the
        media type to create it with (the one checked). Nothing for other credentials."""
        link = who.upload_link
        if link is None:
            return {}, mime_type
        if size_bytes is None:
            raise InvalidInput("an upload through a link must declare its size", field=size_field)
        record = await self.get(who.owner, link)
        effective = (mime_type or "").strip() or (
            mimetypes.guess_type(clean_filename(filename))[0] or "application/octet-stream"
        )
        if not mime_allowed(effective, record.allowed_mime_types):
            allowed = ", ".join(record.allowed_mime_types or ())
            error = Forbidden(
                f"this upload link accepts only {allowed}; the file is {effective}",
                field="mimeType",
                allowedMimeTypes=list(record.allowed_mime_types or ()),
            )
            error.code = "link_mime_type"
            raise error
        now = datetime.now(UTC)
        if not await self.repo.reserve(link, size_bytes, now):
            raise self._refusal(await self.get(who.owner, link), size_bytes, now, size_field)
        return {LINK_METADATA_KEY: link}, effective

    @asynccontextmanager
    async def admitted(
        self, who: Principal, *, filename: str, size_bytes: int | None, mime_type: str | None, size_field: str
    ) -> AsyncIterator[tuple[dict[str, Any], str | None]]:
        """``admit`` for the block that creates the upload, and ``release`` if that block fails
        (an upload that was not created counts against no link)."""
        admission = await self.admit(
            who, filename=filename, size_bytes=size_bytes, mime_type=mime_type, size_field=size_field
        )
        try:
            yield admission
        except BaseException:
            await self.release(who, size_bytes)
            raise

    async def release(self, who: Principal, size_bytes: int | None) -> None:
        """Give back what ``admit`` counted when the upload was then not created."""
        if who.upload_link is not None and size_bytes is not None:
            await self.repo.release(who.upload_link, size_bytes)

    def _refusal(self, record: UploadLinkRecord, size: int, now: datetime, size_field: str) -> Exception:
        """Why ``reserve`` refused, re-read after the fact (the first limit that holds)."""
        try:
            self._check_live(record, now)
        except Unauthenticated as error:
            return error
        if record.max_files is not None and record.files_uploaded >= record.max_files:
            return QuotaExceeded(
                f"this upload link accepts at most {record.max_files} files, and all have been sent",
                limit="link_max_files",
                maxFiles=record.max_files,
            )
        left = max(0, (record.max_bytes or 0) - record.bytes_uploaded)
        return QuotaExceeded(
            f"this upload link accepts at most {record.max_bytes} bytes in all; "
            f"{left} are left and the file has {size}",
            field=size_field,
            limit="link_max_bytes",
            maxBytes=record.max_bytes,
            bytesLeft=left,
        )
