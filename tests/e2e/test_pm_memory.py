"""A real ``chunkd serve`` keeps its memory flat while a large Fine Uploader chunk streams through
the multipart parser into storage (the file part is never held in memory)."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.api.test_pm_api import BOUNDARY
from tests.support.pm_forms import form_tail, whole_file_chunk_head
from tests.support.server import ChunkdServer

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

MiB = 1024 * 1024


def peak_rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM in /proc status")


def test_large_chunk_does_not_grow_server_memory(live_server: ChunkdServer) -> None:
    assert live_server.process is not None
    key = live_server.create_key("alice")
    size = 64 * MiB
    piece = os.urandom(MiB)
    file_uuid = str(uuid.uuid4())

    def body() -> Iterator[bytes]:
        yield whole_file_chunk_head(BOUNDARY, file_uuid, size)
        for _ in range(size // MiB):
            yield piece
        yield form_tail(BOUNDARY)

    headers = {"Authorization": f"Bearer {key}", "Content-Type": f"multipart/form-data; boundary={BOUNDARY}"}
    with httpx.Client(base_url=live_server.url, headers=headers, timeout=120) as client:
        # Warm up (imports, database, first request) before taking the baseline.
        warm = client.post("/api/v2/pm/upload/", content=b"".join(_small_form()))
        assert warm.status_code == 200, warm.text
        before = peak_rss(live_server.process.pid)
        response = client.post("/api/v2/pm/upload/", content=body())
        assert response.status_code == 200, response.text
        grown = peak_rss(live_server.process.pid) - before
    print(f"peak RSS growth: {grown / MiB:.1f} MiB")
    assert grown < 24 * MiB, f"server peak RSS grew by {grown / MiB:.1f} MiB for a {size // MiB} MiB chunk"


def _small_form() -> Iterator[bytes]:
    yield (
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="qqfile"; filename="warm.txt"\r\n'
        f"Content-Type: text/plain\r\n\r\nwarm\r\n--{BOUNDARY}--\r\n"
    ).encode()
