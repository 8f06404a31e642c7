"""Media use cases: publish a chunk-uploaded file as an image or a PDF under an integer id, get it,
delete it. The upload itself (chunks, hashes, storage, expiry) is the upload engine's; this adds the
content check that runs inside ``complete`` and the media record."""

from __future__ import annotations

import asyncio
from contextlib import suppress
from dataclasses import dataclass

from chunkd.domain.errors import InvalidInput, NotFound, TooLarge
from chunkd.domain.events import Event, EventType
from chunkd.domain.media import MediaRecord, MediaType
from chunkd.domain.upload import Status, Upload
from chunkd.ports.media import MediaRepository
from chunkd.service.content import Inspection, inspect_image, inspect_pdf, spool
from chunkd.service.uploads import UploadService

__all__ = ["MEDIA_FRONTEND", "MediaLimits", "MediaService", "default_type"]

MEDIA_FRONTEND = "media"
IMAGE_EXTENSIONS = frozenset({".png", ".jpg", ".jpeg", ".jpe", ".gif", ".webp", ".bmp", ".tif", ".tiff"})


@dataclass(frozen=True)
class MediaLimits:
    image_bytes: int
    document_bytes: int
    chunk_bytes: int
    image_pixels: int

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
    def __init__(self, uploads: UploadService, repo: MediaRepository, limits: MediaLimits) -> None:
        self.uploads = uploads
        self.repo = repo
        self.limits = limits

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
        """Inspect a PENDING upload's received bytes, or a COMPLETED upload's file."""
        chunks = self.uploads.read(upload) if upload.status is Status.COMPLETED else self.uploads.read_received(upload)
        handle = await spool(chunks)
        try:
            if media_type is MediaType.DOC:
                return await asyncio.to_thread(inspect_pdf, handle)
            return await asyncio.to_thread(inspect_image, handle, max_pixels=self.limits.image_pixels)
        finally:
            handle.close()

    async def publish(self, owner: str, upload_id: str, *, md5: str, media_type: MediaType | None) -> MediaRecord:
        """Complete a media upload (MD5 and content checked inside the engine's ``complete``, so a
        failure leaves it PENDING) and give it an integer id. Repeating it returns the same record."""
        upload = await self.uploads.get(owner, upload_id, with_parts=False)
        if upload.frontend != MEDIA_FRONTEND:
            raise NotFound(f"no media upload with id {upload_id!r}", field="upload_id")
        if upload.status is Status.COMPLETED:
            existing = await self.repo.by_upload(upload.id)
            if existing is not None:
                if md5 != upload.md5:
                    raise InvalidInput("md5 does not match the uploaded file", field="md5")
                return existing
        chosen = media_type or default_type(upload.filename, _hint(upload))
        self.check_size(chosen, upload.size_bytes or upload.bytes_received, field="upload_id")

        async def check(pending: Upload) -> None:
            found = await self._inspect(pending, chosen)
            pending.mime_type = found.mime_type  # served as what it really is, whatever its name said
            pending.metadata["media"] = {"type": chosen.value, "width": found.width, "height": found.height}

        done = await self.uploads.complete(owner, upload_id, md5=md5, check=check)
        info = done.metadata.get("media") or {}
        if "type" not in info:  # completed before this record existed (a crash in between): inspect again
            found = await self._inspect_completed(done, chosen)
            info = {"type": chosen.value, "width": found.width, "height": found.height}
        final = MediaType(info["type"])
        return await self.repo.add(
            upload_id=done.id,
            owner=owner,
            type=final,
            width=info.get("width"),
            height=info.get("height"),
            order=0,
            added_at=done.completed_at or self.uploads.clock(),
            event=Event.for_upload(EventType.MEDIA_PUBLISHED, done, self.uploads.clock()),
        )

    async def _inspect_completed(self, upload: Upload, media_type: MediaType) -> Inspection:
        full = await self.uploads.get(upload.owner, upload.id)
        return await self._inspect(full, media_type)

    async def get(self, owner: str, media_id: int) -> MediaRecord:
        record = await self.repo.get(media_id, owner)
        if record is None:
            raise NotFound(f"no media with id {media_id}", field="id")
        return record

    async def delete(self, owner: str, media_id: int) -> None:
        """Delete the media and its file."""
        record = await self.get(owner, media_id)
        with suppress(NotFound):  # the file went first (deleted through /v1/files)
            await self.uploads.delete(owner, record.upload_id)
        await self.repo.delete(record.id)


def _hint(upload: Upload) -> MediaType | None:
    field = upload.metadata.get("field")
    return MediaType.DOC if field == "document" else MediaType.IMAGE if field == "image" else None
