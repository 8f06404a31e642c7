"""Media use cases: publish a chunk-uploaded file as an image or a PDF under an integer id, get it,
delete it. The upload itself (chunks, hashes, storage, expiry) is the upload engine's; this adds the
content check that runs inside ``complete`` and the media record."""

from __future__ import annotations

import asyncio
import os
from contextlib import suppress
from dataclasses import dataclass

from chunkd.domain.errors import ContentRefused, InvalidInput, NotFound, SizeMismatch, TooLarge
from chunkd.domain.events import Event, EventType
from chunkd.domain.media import MediaRecord, MediaType
from chunkd.domain.metadata import INSPECTION_REFUSED
from chunkd.domain.upload import Status, Upload
from chunkd.ports.media import MediaRepository
from chunkd.service.content import Inspection, spool_to_file
from chunkd.service.inspection import InspectionPool, Kind
from chunkd.service.uploads import UploadService

__all__ = ["MEDIA_FRONTEND", "SERVED_TYPES", "MediaLimits", "MediaService", "default_type", "served_type"]

MEDIA_FRONTEND = "media"
IMAGE_EXTENSIONS = frozenset({".png", ".jpg", ".jpeg", ".jpe", ".gif", ".webp", ".bmp", ".tif", ".tiff"})
# The only types a media file is ever served as: what inspection can find (content.IMAGE_FORMATS
# and PDF). None of them is a type a browser runs as a document of the API's origin.
SERVED_TYPES = frozenset(
    {"image/png", "image/jpeg", "image/gif", "image/webp", "image/bmp", "image/tiff", "application/pdf"}
)


@dataclass(frozen=True)
class MediaLimits:
    image_bytes: int
    document_bytes: int
    chunk_bytes: int

    def for_type(self, media_type: MediaType) -> int:
        return self.document_bytes if media_type is MediaType.DOC else self.image_bytes


def default_type(filename: str, hint: MediaType | None = None) -> MediaType:
    """``doc`` for ``.pdf``, ``image`` for image extensions; otherwise ``hint`` (the form field
    the chunks came in), else ``image``."""
    ext = "." + filename.rsplit(".", 1)[-1].lower() if "." in filename else ""
    if ext == ".pdf":
        return MediaType.DOC
    if ext in IMAGE_EXTENSIONS:
        return MediaType.IMAGE
    return hint or MediaType.IMAGE


class MediaService:
    def __init__(
        self, uploads: UploadService, repo: MediaRepository, limits: MediaLimits, inspector: InspectionPool
    ) -> None:
        self.uploads = uploads
        self.repo = repo
        self.limits = limits
        self.inspector = inspector

    def check_size(self, media_type: MediaType, size: int, *, field: str = "Content-Range") -> None:
        limit = self.limits.for_type(media_type)
        if size > limit:
            kind = "a document" if media_type is MediaType.DOC else "an image"
            raise TooLarge(
                f"the file has {size} bytes; {kind} may have at most {limit}",
                field=field,
                limit=f"media_max_{'document' if media_type is MediaType.DOC else 'image'}_bytes",
                maxSizeBytes=limit,
            )

    async def _inspect(self, upload: Upload, media_type: MediaType) -> Inspection:
        """Inspect a PENDING upload's received bytes, or a COMPLETED upload's file, in the
        inspection sandbox. A refusal (``ContentRefused``) is recorded in the upload's metadata
        under the kind of inspection; the caller saves it, and the same bytes are then refused
        again at once (``_refused_before``) instead of being parsed again."""
        kind: Kind = "pdf" if media_type is MediaType.DOC else "image"
        self._refused_before(upload, kind)
        chunks = self.uploads.read(upload) if upload.status is Status.COMPLETED else self.uploads.read_received(upload)
        path = await spool_to_file(chunks)
        try:
            return await self.inspector.inspect(kind, path, owner=upload.owner)
        except ContentRefused as refused:
            upload.metadata.setdefault(INSPECTION_REFUSED, {})[kind] = refused.message
            raise
        finally:
            await asyncio.to_thread(os.unlink, path)

    @staticmethod
    def _refused_before(upload: Upload, kind: Kind) -> None:
        earlier = (upload.metadata.get(INSPECTION_REFUSED) or {}).get(kind)
        if isinstance(earlier, str):
            raise ContentRefused(earlier, field="type")

    async def upload(self, owner: str, upload_id: str) -> Upload:
        """The owner's media upload ``upload_id`` (without its parts); a missing one, another
        owner's and an upload of another API are all ``NotFound``, named as ``upload_id``."""
        try:
            upload = await self.uploads.get(owner, upload_id, with_parts=False)
        except NotFound:
            upload = None
        if upload is None or upload.frontend != MEDIA_FRONTEND:
            raise NotFound(f"no media upload with id {upload_id!r}", field="upload_id")
        return upload

    async def publish(self, owner: str, upload_id: str, *, md5: str, media_type: MediaType | None) -> MediaRecord:
        """Complete a media upload (MD5 and content checked inside the engine's ``complete``, so a
        failure leaves it PENDING) and give it an integer id. Repeating it returns the same record.
        The file is served as the type its content was inspected to be, whatever its name says."""
        upload = await self.upload(owner, upload_id)
        if upload.status is Status.COMPLETED:
            existing = await self.repo.by_upload(upload.id)
            if existing is not None:
                if md5 != upload.md5:
                    raise InvalidInput("md5 does not match the uploaded file", field="md5")
                if media_type is not None and media_type is not existing.type:
                    # Answering the record as it is would say "created" for a type not asked for.
                    raise InvalidInput(
                        f"upload_id {upload_id} was completed as media {existing.id} of type {existing.type.value};"
                        f" its type cannot become {media_type.value}",
                        field="type",
                    )
                return existing
        chosen = media_type or default_type(upload.filename, _hint(upload))
        self.check_size(chosen, upload.size_bytes or upload.bytes_received, field="upload_id")
        self._refused_before(upload, "pdf" if chosen is MediaType.DOC else "image")  # at once, before any work

        async def check(pending: Upload) -> None:
            _record_inspection(pending, chosen, await self._inspect(pending, chosen))

        try:
            done = await self.uploads.complete(owner, upload_id, md5=md5, check=check)
        except SizeMismatch as exc:
            if exc.field != "sizeBytes":
                raise
            # The engine says it in the Files API's words; this API has no sizeBytes.
            received = exc.details.get("bytesReceived", upload.bytes_received)
            raise SizeMismatch(
                f"upload_id {upload_id} has received {received} of {upload.size_bytes} bytes: send the remaining"
                " chunks before completing it",
                field="upload_id",
            ) from None
        info = done.metadata.get("media") or {}
        if "type" not in info or "mime_type" not in info:
            # Completed without the media check (through /v1/files, or a crash before the record
            # was made): inspect it now, under its lock, and keep what it is.
            done = await self._inspect_completed(owner, done.id, chosen)
            info = done.metadata["media"]
        final = MediaType(info["type"])
        return await self.repo.add(
            upload_id=done.id,
            owner=owner,
            type=final,
            width=info.get("width"),
            height=info.get("height"),
            order=0,
            added_at=done.completed_at or self.uploads.clock(),
            mime_type=info["mime_type"],
            event=Event.for_upload(EventType.MEDIA_PUBLISHED, done, self.uploads.clock()),
        )

    async def _inspect_completed(self, owner: str, upload_id: str, media_type: MediaType) -> Upload:
        async with self.uploads.locks.hold(upload_id, timeout=self.uploads.config.lock_timeout):
            upload = await self.uploads.get(owner, upload_id)
            try:
                _record_inspection(upload, media_type, await self._inspect(upload, media_type))
            except ContentRefused:
                await self.uploads.repo.save(upload)  # the refusal, so it is not parsed again
                raise
            await self.uploads.repo.save(upload)
        return upload

    def close(self) -> None:
        """Stop the inspection workers."""
        self.inspector.close()

    async def get(self, owner: str, media_id: int) -> MediaRecord:
        record = await self.repo.get(media_id, owner)
        if record is None:
            raise NotFound(f"no media with id {media_id}", field="id")
        return record

    async def get_signed(self, upload: Upload, media_id: int) -> MediaRecord:
        """The media a signed file URL names, once ``upload`` was found and verified for that URL
        (``UploadService.get_signed``): scoped to the upload's owner, and only the record published
        from that very upload (a ``NotFound`` otherwise, as for a missing one)."""
        record = await self.repo.get(media_id, upload.owner)
        if record is None or record.upload_id != upload.id:
            raise NotFound(f"no media with id {media_id}", field="id")
        return record

    async def delete(self, owner: str, media_id: int) -> None:
        """Delete the media and its file."""
        record = await self.get(owner, media_id)
        with suppress(NotFound):  # the file went first (deleted through /v1/files)
            await self.uploads.delete(owner, record.upload_id)
        await self.repo.delete(record.id)


def served_type(record: MediaRecord, upload_type: str | None = None) -> str:
    """The type a media file is served as: the inspected one. A record published before that was
    kept falls back to its upload's type when that is one of ``SERVED_TYPES`` (the media check
    has always set it from the content), else PDF for a document and opaque bytes otherwise."""
    for candidate in (record.mime_type, upload_type):
        if candidate is not None and candidate in SERVED_TYPES:
            return candidate
    return "application/pdf" if record.type is MediaType.DOC else "application/octet-stream"


def _record_inspection(upload: Upload, media_type: MediaType, found: Inspection) -> None:
    upload.mime_type = found.mime_type  # served as what it really is, whatever its name said
    upload.metadata["media"] = {
        "type": media_type.value,
        "width": found.width,
        "height": found.height,
        "mime_type": found.mime_type,
    }


def _hint(upload: Upload) -> MediaType | None:
    field = upload.metadata.get("field")
    return MediaType.DOC if field == "document" else MediaType.IMAGE if field == "image" else None
