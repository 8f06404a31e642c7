"""Upload bytes in an S3-compatible object store (AWS S3, Ceph RGW, MinIO, R2…).

**Keys** (all built by the server; upload ids and blob refs are checked against strict patterns):

* ``<prefix>staging/<upload id>/<number>.<token>`` — one object per engine part, as received;
* ``<prefix>masters/<upload id>/<filename>`` — the finished file (``filename`` is the engine's
  sanitised name, so the asset API's ``masters/<fileId>/<filename>`` is the real key). The S3
  multipart upload that becomes it is created on that key.

**Mapping.** An engine upload is one S3 multipart upload, created lazily (on the first part that can
be turned into an S3 part) and adopted again after a crash (``ListMultipartUploads`` on the key) so no
stray one is made. Its state lives in ``upload.metadata["_s3"]`` (saved by the service with the
upload under its lock): the S3 ``UploadId`` and how far parts were turned into S3 parts.

Every part is first *staged* as its own object. Why not stream big parts straight into the multipart
upload: S3 cannot read back a part of an unfinished multipart upload, and the engine must be able to
re-read any part to carry the whole-file MD5 over parts that arrived out of order, or again after a
re-sent part with different bytes rewinds the hash frontier. Staged objects are kept until the upload
completes (transiently twice the storage) and deleted in batches then.

* PARTS mode: fixed groups of ``k = ceil(5 MiB / part_size)`` consecutive engine parts make S3 part
  ``group + 1`` (so ≤ 10,000 S3 parts, as the engine allows ≤ 10,000 parts). A group is built as soon
  as all its parts are there, in any order: with ``k = 1`` (parts ≥ 5 MiB) by ``UploadPartCopy`` from
  the staged object — a server-side copy, nothing goes through chunkd; with ``k > 1`` by re-uploading
  the concatenated small staged objects (≤ ~5 MiB + one part). A bitmap of built groups is the state;
  a replacing part with different bytes clears its group's bit *before* its commit is saved, so a
  crash never leaves a stale S3 part trusted.
* APPEND mode (tus PATCHes, Content-Range chunks of any size): a cursor (byte offset) walks the
  appended bytes; a piece ≥ the target size is copied server-side (``UploadPartCopy`` with a range),
  smaller runs are concatenated up to the target and re-uploaded. The target is 5 MiB, doubling every
  900 S3 parts (and at least ``size / 9000`` when the size is known), so 10,000 parts reach > 5 TiB.
  At completion a tail that is one staged object is copied server-side too (the last part may be small).
* Concatenation (tus): each finished source object is copied inside the store (``CopyObject``) into
  one staged part of the new upload (``UploadCopier``), which then completes like appended bytes: a
  source of ≥ 5 MiB (or the last one) becomes an S3 part by ``UploadPartCopy``, smaller ones are
  concatenated through chunkd (S3's minimum part size). chunkd reads the new file's bytes once to
  compute its whole-file MD5 (MD5 states do not combine), except the first source's, whose state it
  kept; it uploads none of them.

Every step is idempotent: S3 parts are rebuilt from staged objects under the same numbers, and the
state saved with the engine's commit says which ones are trustworthy. ``complete`` builds what is left
(normally only the small tail), checks every S3 part against ``ListParts`` (for 1:1 parts the ETag
must equal the engine's part MD5), then ``CompleteMultipartUpload`` — the whole file is never
re-uploaded or re-read. The staged parts are deleted only once the COMPLETED record is saved
(``release_completed``), so a PENDING upload can always be built again from them: when its recorded
multipart upload is gone (completed by an attempt whose record was lost, or aborted by a lifecycle
rule), a new one is built rather than trusting an object already at the key. Cancel, expiry and
delete abort the multipart upload(s) under the upload's key and delete staged objects; ``sweep``
(``chunkd gc``) does the same for uploads the database no longer knows.

The store is split by concept: ``s3_client`` (boto3 client, configuration, key layout, bucket
calls), ``s3_multipart`` (staging writes and building S3 parts), and this module (the ``BlobStore``
itself: reads, completion, deletes, ``sweep``, download redirects, and copying finished uploads).
"""

from __future__ import annotations

import functools
import os
import secrets
import time
from collections.abc import AsyncIterator, Collection
from datetime import UTC
from typing import Any
from urllib.parse import quote

from chunkd.backends.blobs.s3_client import (
    MAX_S3_PART,
    MIN_S3_PART,
    PATIENT_READ_TIMEOUT,
    STATE,
    fault_reason,
    make_client,
)
from chunkd.backends.blobs.s3_multipart import S3Multipart, S3Writer
from chunkd.domain.errors import StorageError
from chunkd.domain.upload import Mode, Part, Upload

# The largest object one CopyObject copies (S3's limit); past it a copy is a multipart copy.
COPY_OBJECT_LIMIT = MAX_S3_PART

__all__ = ["COPY_OBJECT_LIMIT", "MAX_S3_PART", "MIN_S3_PART", "STATE", "S3BlobStore", "from_settings", "make_client"]

# Under the store's prefix, beside masters/ and staging/ (the only folders a sweep lists): the id of
# the database whose records name these objects.
DATABASE_MARK = "database-id"


class S3BlobStore(S3Multipart):
    """BlobStore, PartSettler, CompletionCleaner, UploadCopier and DownloadRedirector over an S3
    bucket; see the module docstring."""

    # ---- BlobStore ------------------------------------------------------------------------------
    async def open_writer(self, upload: Upload, number: int, offset: int) -> S3Writer:
        return S3Writer(self, upload.id, number)

    async def read_part(self, upload: Upload, part: Part) -> AsyncIterator[bytes]:
        if part.size == 0:
            return
        async for chunk in self._get_stream(self.staging_key(upload.id, part.blob_ref)):
            yield chunk

    async def read(self, upload: Upload, start: int, end: int) -> AsyncIterator[bytes]:
        if end <= start:
            return
        async for chunk in self._get_stream(self.final_key(upload), f"bytes={start}-{end - 1}"):
            yield chunk

    async def complete(self, upload: Upload) -> None:
        """Build the S3 parts still missing (normally just the tail), check them all, and complete
        the multipart upload; then drop the staged objects."""
        size = upload.size_bytes or 0
        key = self.final_key(upload)
        if size == 0:
            # S3 has no empty multipart upload: an empty file is one empty PUT.
            await self.call("put_object", Key=key, Body=b"", ContentType=upload.mime_type)
        else:
            mp_id, etags = await self.on_live_multipart(upload, lambda: self._build_all(upload))
            try:
                await self.call(
                    "complete_multipart_upload",
                    Key=key,
                    UploadId=mp_id,
                    MultipartUpload={"Parts": [{"PartNumber": n, "ETag": f'"{t}"'} for n, t in enumerate(etags, 1)]},
                )
            except Exception:
                # This very completion, its first answer lost: the client's retry finds the
                # multipart upload gone (RGW answers 500, AWS NoSuchUpload). Only that upload
                # being gone settles it: an object of the right size may be a stale one that an
                # earlier completion left (see ``on_live_multipart``).
                if await self.is_open(upload, mp_id) or not await self._exists(key, size):
                    raise
        if not await self._exists(key, size):
            raise OSError(f"the completed object {key!r} does not have {size} bytes")
        # Where the file is, saved with the COMPLETED record (a later rename changes the filename,
        # not the key; it may not be recorded yet if a crash came between completion and record).
        # The staged parts stay until that record is saved (``release_completed``): if it is not
        # (the lock or the database lost), the upload stays PENDING on those parts. Deleting them
        # here lost acknowledged appends for good: the client resumed, and the next completion
        # found its parts gone.
        self._state(upload)["key"] = key

    async def release_completed(self, upload: Upload) -> None:
        """CompletionCleaner: the COMPLETED record is saved; abort what multipart uploads are left
        and delete the staged parts (the file is complete without them)."""
        await self._cleanup(upload, keep_final=True)

    async def _build_all(self, upload: Upload) -> tuple[str, list[str]]:
        """The upload's multipart upload and the ETags of all its S3 parts, built where missing."""
        mp_id = await self._multipart(upload)
        build = self._complete_append if upload.mode is Mode.APPEND else self._complete_parts
        return mp_id, await build(upload, mp_id)

    async def _complete_parts(self, upload: Upload, mp_id: str) -> list[str]:
        state = self._state(upload)
        bits = self._bits(state)
        listed = await self._list_parts(self.final_key(upload), mp_id)
        k = self.group_size(upload)
        groups = -(-(upload.part_count or 0) // k)
        etags: list[str] = []
        for group in range(groups):
            parts = [upload.parts[n] for n in self._group_numbers(upload, group)]
            have = listed.get(group + 1)
            good = (
                self._bit(bits, group)
                and have is not None
                and have[1] == sum(p.size for p in parts)
                and (k > 1 or have[0] == parts[0].md5)
            )
            etags.append(have[0] if good and have else await self._build_group(upload, mp_id, group, parts))
        return etags

    async def _complete_append(self, upload: Upload, mp_id: str) -> list[str]:
        await self._advance_append(upload, None, final=True)
        count = int(self._state(upload)["next"]) - 1
        listed = await self._list_parts(self.final_key(upload), mp_id)
        if any(n not in listed for n in range(1, count + 1)) or sum(listed[n][1] for n in range(1, count + 1)) != (
            upload.size_bytes or 0
        ):
            raise OSError(f"the S3 parts of upload {upload.id} do not add up to its size")
        return [listed[n][0] for n in range(1, count + 1)]

    async def _exists(self, key: str, size: int) -> bool:
        """Whether ``key`` holds ``size`` bytes. Only the store saying there is no such object is a
        no: a store that cannot answer (503, unreachable) is a ``StorageError``, not a missing file
        (which made a completion that had succeeded fail with a 500)."""
        head = await self.call_if_found("head_object", Key=key)
        return head is not None and int(head["ContentLength"]) == size

    async def _cleanup(self, upload: Upload, *, keep_final: bool) -> None:
        """Abort the upload's multipart upload(s) and delete its staged (and final) objects."""
        keep = self.final_key(upload) if keep_final else None
        # Under staging/ too: a multipart copy of a big concatenation source that a crash cut short.
        for folder in (self.master_prefix(upload.id), self.staging_prefix(upload.id)):
            for mp in await self._multipart_uploads(folder):
                await self._abort(mp["Key"], mp["UploadId"])
        doomed = [k for k, _ in await self._list_keys(self.staging_prefix(upload.id))]
        if not keep_final:
            doomed += [k for k, _ in await self._list_keys(self.master_prefix(upload.id))]
        await self._delete_keys(k for k in doomed if k != keep)

    async def discard(self, upload: Upload, blob_refs: list[str]) -> None:
        await self._delete_keys(self.staging_key(upload.id, ref) for ref in blob_refs)

    async def delete(self, upload: Upload) -> None:
        await self._cleanup(upload, keep_final=False)

    async def database_mark(self) -> str | None:
        # Under the prefix, beside masters/ and staging/ (the only folders a sweep lists).
        got = await self.call_if_found("get_object", Key=self.prefix + DATABASE_MARK)
        if got is None:
            return None
        body: bytes = await self._run(got["Body"].read)
        return body.decode("ascii", "replace").strip() or None

    async def mark_database(self, database_id: str) -> None:
        await self.call("put_object", Key=self.prefix + DATABASE_MARK, Body=(database_id + "\n").encode())

    async def sweep(
        self,
        live: dict[str, set[str]],
        *,
        grace_seconds: float,
        completed: Collection[str] = frozenset(),
        spared: Collection[str] = frozenset(),
    ) -> int:
        """Abort multipart uploads and delete objects no live upload references, and the staged
        parts of ``completed`` uploads whose file S3 has assembled (older than ``grace_seconds``).
        ``live`` maps each upload id that still holds bytes to its blob refs. An assembled file
        alone does not make an upload's staged parts spent: a completion whose record was lost
        leaves the upload PENDING on them (it is resumed and completed again)."""
        cutoff = time.time() - grace_seconds
        removed = 0

        def upload_id_of(key: str, folder: str) -> tuple[str, str]:
            rest = key[len(self.prefix + folder) :]
            upload_id, _, name = rest.partition("/")
            return upload_id, name

        assembling: set[str] = set()  # uploads with a multipart upload still open
        for mp in await self._multipart_uploads(self.prefix + "masters/"):
            upload_id, _ = upload_id_of(mp["Key"], "masters/")
            initiated = mp["Initiated"].replace(tzinfo=mp["Initiated"].tzinfo or UTC).timestamp()
            if upload_id not in live and initiated < cutoff:
                await self._abort(mp["Key"], mp["UploadId"])
                removed += 1
            else:
                assembling.add(upload_id)
        doomed: list[str] = []
        finished: set[str] = set()  # COMPLETED uploads whose file S3 has assembled
        for key, modified in await self._list_keys(self.prefix + "masters/"):
            upload_id, _ = upload_id_of(key, "masters/")
            if upload_id not in live and modified.timestamp() < cutoff:
                doomed.append(key)
            elif upload_id not in assembling and upload_id in completed:
                finished.add(upload_id)
        for mp in await self._multipart_uploads(self.prefix + "staging/"):
            # A multipart copy into a staged part (``copy_upload``) left open by a crash; one of a
            # pending upload may still be running, and is aborted when that upload ends.
            upload_id, _ = upload_id_of(mp["Key"], "staging/")
            initiated = mp["Initiated"].replace(tzinfo=mp["Initiated"].tzinfo or UTC).timestamp()
            if (upload_id not in live or upload_id in finished) and initiated < cutoff:
                await self._abort(mp["Key"], mp["UploadId"])
                removed += 1
        for key, modified in await self._list_keys(self.prefix + "staging/"):
            upload_id, ref = upload_id_of(key, "staging/")
            refs = live.get(upload_id)
            # Once S3 holds the finished file of a COMPLETED upload its staged parts are spent,
            # though its part rows still name them: ``release_completed`` deletes them, unless
            # that failed.
            spent = (refs is None or ref not in refs or upload_id in finished) and upload_id not in spared
            if spent and modified.timestamp() < cutoff:
                doomed.append(key)
        return removed + await self._delete_keys(doomed)

    # ---- UploadCopier --------------------------------------------------------------------------
    async def copy_upload(self, source: Upload, target: Upload, number: int, offset: int) -> str:
        """``source``'s finished object, copied inside the store into a staged part of ``target``:
        ``CopyObject``, or past ``COPY_OBJECT_LIMIT`` a multipart copy in ranges of that size. When
        the target completes, a staged copy of at least the S3 part target (5 MiB) becomes an S3 part
        of its multipart upload by ``UploadPartCopy``, again inside the store; smaller ones are
        concatenated through chunkd like any small part (S3 refuses parts under 5 MiB but the last)."""
        size = source.size_bytes or 0
        ref = f"{number}.{secrets.token_urlsafe(12)}"
        key = self.staging_key(target.id, ref)
        copy_source = {"Bucket": self.bucket, "Key": self.final_key(source)}
        try:
            if size <= COPY_OBJECT_LIMIT:
                await self.call("copy_object", Key=key, CopySource=copy_source)
                return ref
            mp_id = str((await self.call("create_multipart_upload", Key=key))["UploadId"])
            try:
                etags = []
                for s3_no, lo in enumerate(range(0, size, COPY_OBJECT_LIMIT), 1):
                    hi = min(lo + COPY_OBJECT_LIMIT, size)
                    response = await self.call(
                        "upload_part_copy",
                        Key=key,
                        UploadId=mp_id,
                        PartNumber=s3_no,
                        CopySource=copy_source,
                        CopySourceRange=f"bytes={lo}-{hi - 1}",
                    )
                    etags.append({"PartNumber": s3_no, "ETag": response["CopyPartResult"]["ETag"]})
                await self.call("complete_multipart_upload", Key=key, UploadId=mp_id, MultipartUpload={"Parts": etags})
            except BaseException:
                await self._abort(key, mp_id)
                raise
        except Exception as exc:  # botocore: the object store refused or is unreachable
            raise StorageError(f"the object store did not copy upload {source.id}: {fault_reason(exc)}") from exc
        return ref

    # ---- DownloadRedirector -------------------------------------------------------------------
    async def download_url(self, upload: Upload, *, filename: str, disposition: str) -> str | None:
        if not self.presigned_downloads:
            return None
        ascii_name = filename.encode("ascii", "replace").decode().replace('"', "_").replace("?", "_")
        params = {
            "Bucket": self.bucket,
            "Key": self.final_key(upload),
            "ResponseContentDisposition": (
                f"{disposition}; filename=\"{ascii_name}\"; filename*=UTF-8''{quote(filename)}"
            ),
            "ResponseContentType": upload.mime_type,
        }
        url = await self._run(
            functools.partial(
                self.client.generate_presigned_url, "get_object", Params=params, ExpiresIn=self.presign_seconds
            )
        )
        return str(url)

    # complete() checks the ETag of every S3 part copied 1:1 from a staged part against that part's
    # MD5, so the engine computes each part's own MD5 for this store (not only on a client's request).
    wants_part_md5 = True

    async def ensure_room(self) -> None:
        return None

    async def ping(self) -> None:
        """HeadBucket (readiness): raises when the bucket cannot be reached with our credentials."""
        await self.call("head_bucket")

    async def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)


def from_settings(settings: object) -> S3BlobStore:
    from chunkd.settings import Settings

    assert isinstance(settings, Settings)
    if not settings.s3_bucket:
        raise ValueError("CHUNKD_S3_BUCKET is required with CHUNKD_STORAGE=s3")

    import boto3  # type: ignore[import-untyped]

    session = boto3.session.Session()  # one for both clients: they share its service model

    def client(read_timeout: float | None = None) -> Any:
        return make_client(
            endpoint=settings.s3_endpoint,
            region=settings.s3_region,
            access_key=settings.s3_access_key,
            secret_key=settings.s3_secret_key,
            max_connections=settings.s3_max_connections,
            timeout=settings.s3_timeout_seconds,
            attempts=settings.s3_attempts,
            read_timeout=read_timeout,
            session=session,
        )

    spool = settings.data_dir / "s3-spool"
    return S3BlobStore(
        client(),
        settings.s3_bucket,
        patient_client=client(max(settings.s3_timeout_seconds, PATIENT_READ_TIMEOUT)),
        prefix=settings.s3_prefix,
        presigned_downloads=settings.s3_presigned_downloads,
        presign_seconds=settings.s3_presign_seconds,
        max_workers=settings.s3_max_connections,
        spool_dir=spool if os.name == "posix" else None,
    )
