"""A 300 MB asset in 100 MiB parts against a real ``chunkd serve``: created with the API key, the
parts PUT in parallel to their signed URLs without credentials, completed through /asset/complete
with the seed's headers, then downloaded and checked. Data comes from a temporary file and every
digest is computed incrementally, so the test holds at most a few MiB in memory."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from tests.support.server import ChunkdServer

MiB = 1024 * 1024
PART = 100 * MiB  # the API's default part size
SIZE = 300_000_000  # "300 MB": two full parts and a shorter last one
BLOCK = MiB


def _write_source(path: Path) -> tuple[str, list[str]]:
    """Random bytes into ``path``; returns the file's MD5 and each part's."""
    whole = hashlib.md5()
    parts: list[str] = []
    with path.open("wb") as handle:
        for start in range(0, SIZE, PART):
            part = hashlib.md5()
            left = min(PART, SIZE - start)
            while left:
                block = os.urandom(min(BLOCK, left))
                handle.write(block)
                whole.update(block)
                part.update(block)
                left -= len(block)
            parts.append(part.hexdigest())
    return whole.hexdigest(), parts


def _read(path: Path, start: int, length: int) -> Iterator[bytes]:
    with path.open("rb") as handle:
        handle.seek(start)
        while length:
            block = handle.read(min(BLOCK, length))
            assert block
            length -= len(block)
            yield block


def _peak_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


@pytest.mark.slow
@pytest.mark.e2e
@pytest.mark.timeout(600)
def test_300mb_asset_in_100mb_parts(live_server: ChunkdServer, tmp_path: Path) -> None:
    key = live_server.create_key("studio")
    source = tmp_path / "master.mov"
    md5, part_md5s = _write_source(source)
    headers = {"X-API-Key": key, "Authorization": f"Bearer {key}", "AccessToken": key}
    with httpx.Client(base_url=live_server.url, timeout=300) as client:
        created = client.post("/asset", json={"filename": "master.mov", "filesize": SIZE}, headers=headers)
        assert created.status_code == 201, created.text
        asset = created.json()
        assert asset["partSize"] == PART and [p["partNumber"] for p in asset["parts"]] == [1, 2, 3]

        def put(part: dict[str, object]) -> dict[str, object]:
            number = int(str(part["partNumber"]))
            start = (number - 1) * PART
            length = min(PART, SIZE - start)
            with httpx.Client(timeout=300) as anonymous:  # a partner without the API key
                response = anonymous.put(
                    str(part["uploadUrl"]),
                    content=_read(source, start, length),
                    headers={"Content-Length": str(length)},
                )
            assert response.status_code == 200, response.text
            return {"partNumber": number, "etag": response.headers["etag"]}

        with ThreadPoolExecutor(3) as pool:
            parts = list(pool.map(put, asset["parts"]))
        assert [p["etag"] for p in parts] == [f'"{d}"' for d in part_md5s]

        body = {
            "fileId": asset["fileId"],
            "filename": "master.mov",
            "filesize": SIZE,
            "action": "complete",
            "originalFileId": None,
            "uploadId": asset["uploadId"],
            "parts": parts,
        }
        done = client.post("/asset/complete", json=body, headers={**headers, "Content-Type": "application/json"})
        assert done.status_code == 200, done.text
        assert done.json()["status"] == "success"
        assert done.json()["s3Key"] == f"masters/{asset['fileId']}/master.mov"

        native = client.get(f"/v1/files/{asset['fileId']}", headers=headers).json()
        assert native["status"] == "COMPLETED" and native["md5"] == md5 and native["sizeBytes"] == SIZE
        got = hashlib.md5()
        size = 0
        with client.stream("GET", f"/v1/files/{asset['fileId']}/content", headers=headers) as download:
            assert download.status_code == 200
            for block in download.iter_bytes(BLOCK):
                got.update(block)
                size += len(block)
        assert size == SIZE and got.hexdigest() == md5

    assert live_server.process is not None
    peak = _peak_rss_mib(live_server.process.pid)
    print(f"server peak RSS after a 300 MB asset: {peak:.0f} MiB")
    assert peak < 250, f"the server held {peak:.0f} MiB: bodies are not streamed"
