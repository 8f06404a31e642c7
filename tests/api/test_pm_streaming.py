"""Proof that a Fine Uploader chunk is streamed into storage as the multipart body is parsed: bytes
reach the blob store's part file while the request body is still being sent, and nothing is
spooled to a temporary file first."""

from __future__ import annotations

import hashlib
import os
import tempfile
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

from chunkd.service.streaming import BATCH_BYTES, PIPELINE_DEPTH
from tests.api.test_pm_api import BOUNDARY
from tests.conftest import Api
from tests.support.pm_forms import form_tail, whole_file_chunk_head

MiB = 1024 * 1024


def on_disk(root: Path) -> int:
    return sum(p.stat().st_size for p in root.rglob("*.part"))


async def test_chunk_bytes_reach_storage_before_the_body_ends(api: Api, monkeypatch, tmp_path: Path) -> None:
    size, piece = 12 * MiB, 256 * 1024
    data = os.urandom(size)
    file_uuid = str(uuid.uuid4())
    blobs = api.runtime.settings.data_dir / "blobs"
    spool = tmp_path / "spool"
    spool.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(spool))  # anything spooled would land here
    head = whole_file_chunk_head(BOUNDARY, file_uuid, size)
    seen_while_sending: list[int] = []

    async def body() -> AsyncIterator[bytes]:
        yield head
        for start in range(0, size, piece):
            if start >= size - piece:
                # The last piece is still unsent: most of the chunk must already be in storage.
                seen_while_sending.append(on_disk(blobs))
                assert not any(spool.iterdir()), "the request body was spooled to a temporary file"
            yield data[start : start + piece]
        yield form_tail(BOUNDARY)

    response = await api.client.post(
        "/api/v2/pm/upload/",
        content=body(),
        headers={**api.auth(), "Content-Type": f"multipart/form-data; boundary={BOUNDARY}"},
    )
    assert response.status_code == 200, response.text
    # Writes go in batches, a few of them in flight at most, plus the batch being filled.
    in_flight = (PIPELINE_DEPTH + 1) * BATCH_BYTES + piece
    assert seen_while_sending and seen_while_sending[0] >= size - piece - in_flight, seen_while_sending
    done = await api.client.post(
        "/api/v2/pm/upload/?done",
        data={"qquuid": file_uuid, "qqfilename": "big.bin", "qqmd5": hashlib.md5(data).hexdigest()},
        headers=api.auth(),
    )
    assert done.status_code == 200, done.text
