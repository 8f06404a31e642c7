"""Concatenation (tus): a new COMPLETED upload made of finished uploads of the same owner, linking
their stored parts where the store can."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from chunkd.domain.checksum import ResumableMD5
from chunkd.domain.errors import (
    InvalidInput,
    InvalidState,
)
from chunkd.domain.events import Event, EventType
from chunkd.domain.upload import Mode, Part, Status, Upload
from chunkd.service.crc import crc64_hex, crc64nvme
from chunkd.service.lifecycle import Lifecycle
from chunkd.service.streaming import StreamedPart

__all__ = ["Concatenation"]

log = logging.getLogger("chunkd.service")


class Concatenation(Lifecycle):
    """Joining finished uploads into a new one."""

    async def concatenate(
        self,
        owner: str,
        source_ids: Sequence[str],
        *,
        filename: str,
        mime_type: str | None = None,
        frontend: str = "native",
        metadata: dict[str, Any] | None = None,
    ) -> Upload:
        """A new COMPLETED upload whose bytes are the given COMPLETED uploads of the same owner, one
        after another (tus concatenation). Each source part becomes a part of the new upload: linked
        where the blob store has the ``PartLinker`` capability (no byte copied), otherwise copied
        through the store. The sources are left as they were."""
        if not source_ids:
            raise InvalidInput("name at least one upload to concatenate", field="sources")
        sources = [await self.get(owner, source_id) for source_id in source_ids]
        for source in sources:
            if source.status is not Status.COMPLETED:
                raise InvalidState(
                    f"upload {source.id} is {source.status.value}; only completed uploads can be concatenated",
                    field="sources",
                )
        size = sum(source.size_bytes or 0 for source in sources)
        upload = await self.create(
            owner,
            filename=filename,
            size_bytes=size,
            mime_type=mime_type,
            mode=Mode.APPEND,
            frontend=frontend,
            metadata=metadata,
            strict_part_size=False,
        )
        try:
            async with self.locks.hold(upload.id, timeout=self.config.lock_timeout):
                parts: dict[int, Part] = {}
                # MD5 states cannot be combined, so the final's whole-file MD5 is computed here once,
                # over the linked parts' bytes read back from storage (normally the page cache):
                # linking saves the copy, not the read. When copying, the copy is hashed as it passes.
                whole = ResumableMD5()
                offset = 0
                for source in sources:
                    # The source's lock keeps it from being deleted while its parts are linked.
                    async with self.locks.hold(source.id, timeout=self.config.lock_timeout):
                        current = await self.get(owner, source.id)
                        if current.status is not Status.COMPLETED:
                            raise InvalidState(f"upload {source.id} is {current.status.value}", field="sources")
                        for part in current.sorted_parts():
                            number = len(parts) + 1
                            placed = await self._place_copy(current, part, upload, number, offset, whole)
                            ref, crc = placed
                            parts[number] = Part(
                                number=number,
                                offset=offset,
                                size=part.size,
                                md5=part.md5,
                                blob_ref=ref,
                                created_at=self.clock(),
                                hash_state=whole.state(),
                                crc64=crc,
                            )
                            offset += part.size
                upload.parts = parts
                upload.bytes_received = offset
                upload.parts_received = len(parts)
                upload.hash_offset = offset
                upload.hash_state = whole.state()
                upload.updated_at = self.clock()
                await self.repo.save(upload, tuple(parts.values()))
            return await self.complete(owner, upload.id)
        except BaseException:
            await self.blobs.delete(upload)
            await self.repo.delete_upload(
                upload.id, [Event.for_upload(EventType.UPLOAD_DELETED, upload, self.clock(), parts=())]
            )
            raise

    async def _place_copy(
        self, source: Upload, part: Part, target: Upload, number: int, offset: int, whole: ResumableMD5
    ) -> tuple[str, str]:
        """Put ``source``'s ``part`` into ``target`` as part ``number``; feed its bytes to ``whole``.
        Returns the new part's blob ref and CRC."""
        linker = self.caps.linker
        if linker is not None:
            ref = await linker.link_part(source, part, target, number, offset)
            crc = 0
            async for chunk in self.blobs.read_part(target, replace(part, blob_ref=ref)):
                await asyncio.to_thread(whole.update, chunk)
                if not part.crc64:
                    crc = crc64nvme(chunk, crc)
            return ref, part.crc64 or crc64_hex(crc)
        writer = await self.blobs.open_writer(target, number, offset)
        streamed = StreamedPart(writer, whole, None)
        try:
            async for chunk in self.blobs.read_part(source, part):
                await streamed.feed([chunk])
            return await writer.commit(), streamed.crc_hex
        except BaseException:
            await writer.abort()
            raise
