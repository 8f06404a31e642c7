"""For end-to-end tests: a Files API client over real HTTP and cheap, deterministic test data."""

from __future__ import annotations

import base64
import hashlib
import os
import random
from pathlib import Path
from typing import Any

import httpx

from tests.support.server import ChunkdServer

__all__ = ["FilesClient", "MiB", "random_file", "read_slice", "seeded_bytes"]

MiB = 1024 * 1024


class FilesClient:
    """The native Files API over one ``httpx.Client`` (make one per thread)."""

    def __init__(self, server: ChunkdServer, key: str, *, timeout: float = 60.0) -> None:
        self.http = httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {key}"}, timeout=timeout)

    def __enter__(self) -> FilesClient:
        return self

    def __exit__(self, *_: object) -> None:
        self.http.close()

    def create(self, size: int, part_size: int, **extra: Any) -> dict[str, Any]:
        body = {"filename": "data.bin", "sizeBytes": size, "partSize": part_size, **extra}
        response = self.http.post("/v1/files", json=body)
        assert response.status_code == 201, response.text
        return response.json()  # type: ignore[no-any-return]

    def put_part(self, file_id: str, number: int, data: Any, *, content_md5: bytes | None = None) -> httpx.Response:
        headers = {"Content-MD5": base64.b64encode(content_md5).decode()} if content_md5 is not None else {}
        return self.http.put(f"/v1/files/{file_id}/parts/{number}", content=data, headers=headers)

    def get(self, file_id: str) -> dict[str, Any]:
        response = self.http.get(f"/v1/files/{file_id}")
        assert response.status_code == 200, response.text
        return response.json()  # type: ignore[no-any-return]

    def complete(self, file_id: str, md5: str | None = None) -> httpx.Response:
        return self.http.post(f"/v1/files/{file_id}/complete", json={"md5": md5} if md5 else {})

    def download_md5(self, file_id: str) -> tuple[int, str]:
        """Stream the content and hash it (never holding it whole)."""
        digest = hashlib.md5()
        size = 0
        with self.http.stream("GET", f"/v1/files/{file_id}/content") as response:
            assert response.status_code == 200, response.read()
            for chunk in response.iter_bytes(MiB):
                digest.update(chunk)
                size += len(chunk)
        return size, digest.hexdigest()


def seeded_bytes(seed: int, size: int) -> bytes:
    """Deterministic bytes (reproducible failures), about as cheap as os.urandom."""
    return random.Random(seed).randbytes(size)


def random_file(path: Path, size: int, chunk: int = 8 * MiB) -> str:
    """Write ``size`` random bytes to ``path`` a chunk at a time; returns their MD5."""
    digest = hashlib.md5()
    with open(path, "wb") as handle:
        for start in range(0, size, chunk):
            data = os.urandom(min(chunk, size - start))
            digest.update(data)
            handle.write(data)
    return digest.hexdigest()


def read_slice(path: Path, start: int, length: int) -> bytes:
    with open(path, "rb") as handle:
        handle.seek(start)
        return handle.read(length)


def part_etag(data: bytes) -> str:
    """The ETag the Files API gives a part sent without Content-MD5: its CRC-64/NVME, quoted."""
    from chunkd.service.crc import crc64_hex, crc64nvme

    return f'"{crc64_hex(crc64nvme(data))}"'
