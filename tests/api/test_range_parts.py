"""A Range request loads only the parts its bytes lie in: every part of a 10,000-part file cost
~97 ms of CPU per 100-byte range. The bytes served must be exactly the file's, whatever the range,
the kind of upload (numbered parts, or tus appends of any size) or the representation digest asked
for."""

from __future__ import annotations

import base64
import hashlib
import os
from collections.abc import Iterable
from typing import Any

import pytest

from tests.conftest import Api
from tests.support.tus import append_in_slices

PART = 1000
PARTS = 300


@pytest.fixture
def db_url() -> None:
    """The loading is the engine's (both databases run its contract tests): SQLite is enough."""
    return None


def spy_parts_loaded(api: Api) -> list[int]:
    """Counts the parts each repository load returns (all loads, in order)."""
    repo = api.runtime.uploads.repo
    real = repo.get
    loaded: list[int] = []

    async def get(upload_id: str, owner: str | None = None, **kw: Any) -> Any:
        found = await real(upload_id, owner, **kw)
        loaded.append(len(found.parts) if found is not None else -1)
        return found

    repo.get = get  # type: ignore[method-assign]
    return loaded


async def parts_upload(api: Api, data: bytes) -> str:
    auth = api.auth()
    made = await api.client.post(
        "/v1/files", json={"filename": "p.bin", "sizeBytes": len(data), "partSize": PART}, headers=auth
    )
    file_id = made.json()["id"]
    for n in range(1, -(-len(data) // PART) + 1):
        put = await api.client.put(
            f"/v1/files/{file_id}/parts/{n}", content=data[(n - 1) * PART : n * PART], headers=auth
        )
        assert put.status_code == 200, put.text
    assert (await api.client.post(f"/v1/files/{file_id}/complete", json={}, headers=auth)).status_code == 200
    return file_id


def ranges(size: int) -> Iterable[tuple[str, int, int]]:
    """(Range header, first byte, end) pairs: single bytes, part edges, spans, suffixes, open ends."""
    middle = size // 2
    for start, end in [(0, 1), (999, 1001), (1000, 2000), (middle, middle + 100), (size - 1, size), (0, size)]:
        yield f"bytes={start}-{end - 1}", start, end
    yield "bytes=-1500", size - 1500, size
    yield f"bytes={size - 10}-", size - 10, size


async def test_a_range_of_a_file_of_many_parts_loads_only_its_parts(api: Api) -> None:
    data = os.urandom(PART * PARTS - 123)
    file_id = await parts_upload(api, data)
    loaded = spy_parts_loaded(api)
    for header, start, end in ranges(len(data)):
        loaded.clear()
        got = await api.client.get(f"/v1/files/{file_id}/content", headers={**api.auth(), "Range": header})
        assert got.status_code == 206, header
        assert got.content == data[start:end], header
        spanned = (end - 1) // PART - start // PART + 1
        assert loaded[-1] == (PARTS if spanned == PARTS else spanned), (header, loaded)
    # Without a range, and with a digest of the whole file asked for, every part (as before).
    loaded.clear()
    whole = await api.client.get(f"/v1/files/{file_id}/content", headers=api.auth())
    assert whole.content == data and loaded == [PARTS]
    loaded.clear()
    digest = await api.client.get(
        f"/v1/files/{file_id}/content", headers={**api.auth(), "Range": "bytes=5-9", "Want-Repr-Digest": "sha-256=10"}
    )
    assert digest.content == data[5:10] and loaded == [PARTS]
    whole_sha = base64.b64encode(hashlib.sha256(data).digest()).decode()
    assert f"sha-256=:{whole_sha}:" in digest.headers["repr-digest"]  # of the whole file: every part read


async def test_ranges_of_a_tus_upload_of_uneven_appends_are_right(api: Api) -> None:
    """Appended parts have no fixed size to place a range by: every part is loaded with the upload,
    and the range is still right."""
    data = os.urandom(50_000)
    tus = {**api.auth(), "Tus-Resumable": "1.0.0"}
    made = await api.client.post("/files", headers={**tus, "Upload-Length": str(len(data))})
    path = "/files/" + made.headers["location"].rsplit("/", 1)[1]
    await append_in_slices(api.client, path, data, (1, 7_000, 333, 20_000, 22_666), tus)
    for header, start, end in ranges(len(data)):
        got = await api.client.get(path, headers={**tus, "Range": header})
        assert got.content == data[start:end], header


async def test_a_range_of_a_file_of_few_parts_is_one_load(api: Api) -> None:
    data = os.urandom(3 * PART - 1)
    file_id = await parts_upload(api, data)
    loaded = spy_parts_loaded(api)
    got = await api.client.get(f"/v1/files/{file_id}/content", headers={**api.auth(), "Range": "bytes=1500-1599"})
    assert got.content == data[1500:1600] and loaded == [3]  # the upload with every part, no second query
