"""The S3 store's writes: a part spooled and staged as its own object (``S3Writer``), and the S3
parts of an upload's multipart upload built from staged objects — by ``UploadPartCopy`` (inside the
store) where a piece is big enough, by re-uploading concatenated small pieces otherwise — in PARTS
mode (fixed groups) and APPEND mode (a cursor); the ``PartSettler`` capability. See
``chunkd.backends.blobs.s3`` for the whole design.
"""

from __future__ import annotations

import asyncio
import base64
import secrets
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

from chunkd.backends.blobs.errors import storage_error
from chunkd.backends.blobs.s3_client import MAX_S3_PART, MIN_S3_PART, S3Bucket, Spool, b64md5, etag, fault_reason
from chunkd.domain.errors import StorageError, TooLarge
from chunkd.domain.upload import Mode, Part, Upload
from chunkd.ports.blobs import PartLoader

__all__ = ["S3Multipart", "S3Writer"]

T = TypeVar("T")


class S3Writer:
    """Spools one part, then stores it as a staged object on ``commit``."""

    def __init__(self, store: S3Bucket, upload_id: str, number: int) -> None:
        self._store = store
        self._ref = f"{number}.{secrets.token_urlsafe(12)}"
        self._key = store.staging_key(upload_id, self._ref)
        self._spool: Spool | None = None

    async def write(self, chunks: Sequence[bytes]) -> None:
        try:
            if self._spool is None:
                self._spool = Spool(self._store.spool_dir)
            if self._spool.size + sum(map(len, chunks)) > MAX_S3_PART:
                raise TooLarge("one request may carry at most 5 GiB on S3 storage", field="body")
            await asyncio.to_thread(self._spool.write, chunks)
        except OSError as exc:  # the local spool's volume
            raise storage_error(exc, "spooling a part") from exc

    async def commit(self) -> str:
        try:
            spool = self._spool or Spool(self._store.spool_dir)
        except OSError as exc:
            raise storage_error(exc, "spooling a part") from exc
        try:
            await self._store.call(
                "put_object",
                Key=self._key,
                Body=spool.rewind(),
                ContentLength=spool.size,
                ContentMD5=b64md5(spool.md5.digest()),
            )
        except OSError as exc:
            raise storage_error(exc, "storing a part") from exc
        except Exception as exc:  # botocore: the object store refused or is unreachable
            raise StorageError(f"the object store did not take the part: {fault_reason(exc)}") from exc
        finally:
            spool.close()
            self._spool = None
        return self._ref

    async def abort(self) -> None:
        if self._spool is not None:
            self._spool.close()
            self._spool = None


class S3Multipart(S3Bucket):
    """Building an upload's S3 parts from its staged parts."""

    # ---- building S3 parts ------------------------------------------------------------------------
    async def _copy_part(self, upload: Upload, mp_id: str, s3_no: int, part: Part, lo: int, hi: int) -> str:
        """S3 part ``s3_no`` := bytes [lo, hi) of a staged part, copied inside the store."""
        response = await self.call(
            "upload_part_copy",
            Key=self.final_key(upload),
            UploadId=mp_id,
            PartNumber=s3_no,
            CopySource={"Bucket": self.bucket, "Key": self.staging_key(upload.id, part.blob_ref)},
            CopySourceRange=f"bytes={lo}-{hi - 1}",
        )
        return etag(response["CopyPartResult"]["ETag"])

    async def _concat_part(self, upload: Upload, mp_id: str, s3_no: int, pieces: list[tuple[Part, int, int]]) -> str:
        """S3 part ``s3_no`` := the given ranges of staged parts, re-uploaded through a spool."""
        spool = Spool(self.spool_dir)
        try:
            for part, lo, hi in pieces:
                whole = lo == 0 and hi == part.size
                range_ = None if whole else f"bytes={lo}-{hi - 1}"
                async for chunk in self._get_stream(self.staging_key(upload.id, part.blob_ref), range_):
                    await asyncio.to_thread(spool.write, [chunk])
            expected = sum(hi - lo for _, lo, hi in pieces)
            if spool.size != expected:
                raise OSError(f"staged parts of upload {upload.id} are shorter than recorded")
            response = await self.call(
                "upload_part",
                Key=self.final_key(upload),
                UploadId=mp_id,
                PartNumber=s3_no,
                Body=spool.rewind(),
                ContentLength=spool.size,
                ContentMD5=b64md5(spool.md5.digest()),
            )
        finally:
            spool.close()
        return etag(response["ETag"])

    # PARTS mode: fixed groups of k engine parts per S3 part.
    @staticmethod
    def group_size(upload: Upload) -> int:
        return max(1, -(-MIN_S3_PART // upload.part_size))

    def _group_numbers(self, upload: Upload, group: int) -> list[int]:
        k = self.group_size(upload)
        count = upload.part_count or 0
        return list(range(group * k + 1, min((group + 1) * k, count) + 1))

    @staticmethod
    def _bits(state: dict[str, Any]) -> bytearray:
        return bytearray(base64.b64decode(state.get("built", "")))

    @staticmethod
    def _bit(bits: bytearray, group: int) -> bool:
        return group // 8 < len(bits) and bool(bits[group // 8] & (1 << (group % 8)))

    @staticmethod
    def _set_bit(state: dict[str, Any], group: int, value: bool) -> None:
        bits = bytearray(base64.b64decode(state.get("built", "")))
        if len(bits) <= group // 8:
            bits.extend(b"\0" * (group // 8 + 1 - len(bits)))
        if value:
            bits[group // 8] |= 1 << (group % 8)
        else:
            bits[group // 8] &= ~(1 << (group % 8)) & 0xFF
        state["built"] = base64.b64encode(bytes(bits)).decode()

    async def _build_group(self, upload: Upload, mp_id: str, group: int, parts: list[Part]) -> str:
        if len(parts) == 1 and self.group_size(upload) == 1:
            return await self._copy_part(upload, mp_id, group + 1, parts[0], 0, parts[0].size)
        return await self._concat_part(upload, mp_id, group + 1, [(p, 0, p.size) for p in parts])

    # APPEND mode: a cursor over the appended bytes.
    @staticmethod
    def append_target(upload: Upload, s3_no: int) -> int:
        """Size of S3 part ``s3_no`` (deterministic, so a rebuilt part has the same bounds)."""
        target = MIN_S3_PART << min((s3_no - 1) // 900, 10)
        if upload.size_bytes is not None:
            target = max(target, -(-upload.size_bytes // 9000))
        return min(target, MAX_S3_PART)

    async def _advance_append(self, upload: Upload, load_parts: PartLoader | None, *, final: bool) -> bool:
        state = self._state(upload)
        cursor = int(state.get("cursor", 0))
        cursor_part = int(state.get("cursorPart", 1))
        s3_no = int(state.get("next", 1))
        end = upload.bytes_received
        if end - cursor < self.append_target(upload, s3_no) and not (final and end > cursor):
            return False
        numbers = range(cursor_part, upload.parts_received + 1)
        parts = {n: upload.parts[n] for n in numbers if n in upload.parts}
        if len(parts) < len(numbers) and load_parts is not None:
            parts.update(await load_parts([n for n in numbers if n not in parts]))
        mp_id = await self._multipart(upload)
        changed = False
        while end > cursor:
            target = self.append_target(upload, s3_no)
            if end - cursor < target and not final:
                break
            while parts[cursor_part].end <= cursor:
                cursor_part += 1
            piece = parts[cursor_part]
            # A piece big enough for an S3 part, or the rest of the file in one staged object (the
            # last S3 part may be small): copied inside the store.
            if piece.end - cursor >= target or (final and piece.end == end):
                take = min(piece.end - cursor, MAX_S3_PART)
                await self._copy_part(upload, mp_id, s3_no, piece, cursor - piece.offset, cursor - piece.offset + take)
            else:
                take = min(end - cursor, target)
                pieces: list[tuple[Part, int, int]] = []
                at, number = cursor, cursor_part
                while at < cursor + take:
                    p = parts[number]
                    hi = min(p.end, cursor + take)
                    pieces.append((p, at - p.offset, hi - p.offset))
                    at, number = hi, number + 1
                await self._concat_part(upload, mp_id, s3_no, pieces)
            cursor += take
            s3_no += 1
            changed = True
        state.update(cursor=cursor, cursorPart=cursor_part, next=s3_no)
        return changed

    # ---- PartSettler ----------------------------------------------------------------------------
    def invalidate(self, upload: Upload, part: Part, replaced: Part | None) -> None:
        if upload.mode is not Mode.PARTS or replaced is None:
            return
        if replaced.md5 == part.md5 and replaced.size == part.size:
            return  # the same bytes again: the S3 part built from the old copy still holds
        state = self._state(upload)
        group = (part.number - 1) // self.group_size(upload)
        if self._bit(self._bits(state), group):
            self._set_bit(state, group, False)

    async def settle(self, upload: Upload, part: Part, load_parts: PartLoader) -> bool:
        return await self.on_live_multipart(upload, lambda: self._settle(upload, part, load_parts))

    async def _settle(self, upload: Upload, part: Part, load_parts: PartLoader) -> bool:
        if upload.mode is Mode.APPEND:
            return await self._advance_append(upload, load_parts, final=False)
        state = self._state(upload)
        group = (part.number - 1) // self.group_size(upload)
        if self._bit(self._bits(state), group):
            return False
        numbers = self._group_numbers(upload, group)
        have = {n: upload.parts[n] for n in numbers if n in upload.parts}
        if len(have) < len(numbers):
            have.update(await load_parts([n for n in numbers if n not in have]))
        if len(have) < len(numbers):
            return False  # the group is not complete yet
        mp_id = await self._multipart(upload)
        await self._build_group(upload, mp_id, group, [have[n] for n in numbers])
        self._set_bit(state, group, True)
        return True

    # ---- a multipart upload that is gone ---------------------------------------------------------
    async def on_live_multipart(self, upload: Upload, work: Callable[[], Awaitable[T]]) -> T:
        """Run ``work`` (which builds S3 parts in the upload's multipart upload); if the recorded
        multipart upload is gone, forget it and everything built in it, and run ``work`` once more
        in a new one.

        It is gone when an earlier completion finished it but its COMPLETED record was lost (a
        crash, the lock or the database lost), or when a bucket lifecycle rule aborted it. The
        staged parts are all still there (they are freed only once that record is saved), so the
        file is built again from them. The object such a completion left at the key is never
        trusted: a part re-sent with other bytes, or a resumed append, may have changed the file
        since, and the object's size would not show it."""
        try:
            return await work()
        except StorageError as exc:
            # RGW answers NoSuchKey, not NoSuchUpload, to ListParts on a finished upload; a missing
            # staged object is a NoSuchKey too, so only the store's own listing says it is gone.
            mp_id = self._state(upload).get("uploadId")
            if not isinstance(mp_id, str) or not _missing(exc.__cause__) or await self.is_open(upload, mp_id):
                raise
        self._forget_multipart(upload)
        return await work()

    async def is_open(self, upload: Upload, mp_id: str) -> bool:
        """Whether multipart upload ``mp_id`` of the upload's key is still open."""
        key = self.final_key(upload)
        return any(u["Key"] == key and u["UploadId"] == mp_id for u in await self._multipart_uploads(key))

    def _forget_multipart(self, upload: Upload) -> None:
        state = self._state(upload)
        for field in ("uploadId", "built", "cursor", "cursorPart", "next"):
            state.pop(field, None)


def _missing(exc: BaseException | None) -> bool:
    """Whether a botocore error says something does not exist (the multipart upload or a key)."""
    response = getattr(exc, "response", None)
    return isinstance(response, dict) and response.get("Error", {}).get("Code") in {"NoSuchUpload", "NoSuchKey"}
