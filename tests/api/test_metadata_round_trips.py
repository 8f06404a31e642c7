"""The metadata cost of the hot paths, counted through the upload repository port: one read and
one write for a tus PATCH (also the one that completes the upload) and for a complete; one write
for a create; a tus creation-with-upload is a create and an append (two writes, no read: the append
continues the upload the same request just created); a part
is two reads (one before its body streams, one under the lock) and one write."""

from __future__ import annotations

import base64
import contextvars
import hashlib
import os
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import pytest

from chunkd.frontends.tus.creation import ONE_WRITE_BODY
from tests.conftest import Api

READS = {"get", "find_by_client_ref", "list_uploads", "list_expirable", "usage", "all_ids", "live_blobs"}
WRITES = {"create", "save", "touch", "expire", "delete_upload"}
TUS = {"Tus-Resumable": "1.0.0"}

# Set only in the counting block's own context: the app's background tasks (the orphan sweep, the
# expiry loop) were started before it with a copy of the context that lacks it, so their calls to
# the same repository are not the request's and are not counted.
COUNTING: contextvars.ContextVar[bool] = contextvars.ContextVar("counting", default=False)


@dataclass
class Counted:
    """The repository calls made while the block ran."""

    reads: list[str] = field(default_factory=list)
    writes: list[str] = field(default_factory=list)


class CountingRepository:
    """The service's repository, counting its calls by kind."""

    def __init__(self, real: Any, counted: Counted) -> None:
        self.real = real
        self.counted = counted

    def __getattr__(self, name: str) -> Any:
        method = getattr(self.real, name)
        kind = self.counted.reads if name in READS else self.counted.writes if name in WRITES else None
        if kind is None:
            return method

        def call(*args: Any, **kwargs: Any) -> Any:
            if COUNTING.get():
                kind.append(name)
            return method(*args, **kwargs)

        return call


@pytest.fixture
def counting(api: Api, monkeypatch: pytest.MonkeyPatch) -> Callable[[], Any]:
    @asynccontextmanager
    async def count() -> AsyncIterator[Counted]:
        counted = Counted()
        with monkeypatch.context() as patched:
            patched.setattr(api.runtime.uploads, "repo", CountingRepository(api.runtime.uploads.repo, counted))
            token = COUNTING.set(True)
            try:
                yield counted
            finally:
                COUNTING.reset(token)

    return count


async def test_a_tus_patch_is_one_read_and_one_write(api: Api, counting: Callable[[], Any]) -> None:
    data = os.urandom(3000)
    made = await api.client.post("/files", headers={**api.auth(), **TUS, "Upload-Length": "3000"})
    path = made.headers["location"]
    for offset in (0, 1000, 2000):  # the last one completes the upload in the same write
        async with counting() as counted:
            sent = await api.client.patch(
                path,
                content=data[offset : offset + 1000],
                headers={
                    **api.auth(),
                    **TUS,
                    "Upload-Offset": str(offset),
                    "Content-Type": "application/offset+octet-stream",
                },
            )
        assert sent.status_code == 204, sent.text
        assert (counted.reads, counted.writes) == (["get"], ["save"])


@pytest.mark.parametrize(
    ("size", "writes"),
    [
        # A short body: the upload is stored with its bytes, in one write.
        (1000, ["create"]),
        # A long one: stored first, while the body streams in, then the bytes' write.
        (ONE_WRITE_BODY + 1, ["create", "save"]),
    ],
)
async def test_tus_creation_with_upload_writes_once_or_twice_and_never_reads(
    api: Api, counting: Callable[[], Any], size: int, writes: list[str]
) -> None:
    metadata = "filename " + base64.b64encode(b"a.bin").decode()
    async with counting() as counted:
        made = await api.client.post(
            "/files",
            content=os.urandom(size),
            headers={
                **api.auth(),
                **TUS,
                "Upload-Length": str(size),
                "Upload-Metadata": metadata,
                "Content-Type": "application/offset+octet-stream",
            },
        )
    assert made.status_code == 201 and made.headers["upload-offset"] == str(size)
    assert (counted.reads, counted.writes) == ([], writes)
    # And the upload is complete, with the file's MD5, as when it was loaded again.
    head = await api.client.head(made.headers["location"].replace("http://testserver", ""), headers=api.auth() | TUS)
    assert head.headers["upload-offset"] == str(size) and head.headers["upload-length"] == str(size)


async def test_native_create_part_and_complete(api: Api, counting: Callable[[], Any]) -> None:
    data = os.urandom(1000)
    async with counting() as counted:
        made = await api.client.post("/v1/files", json={"filename": "a.bin", "sizeBytes": 1000}, headers=api.auth())
    assert made.status_code == 201 and (counted.reads, counted.writes) == ([], ["create"])
    file_id = made.json()["id"]
    async with counting() as counted:
        put = await api.client.put(f"/v1/files/{file_id}/parts/1", content=data, headers=api.auth())
    assert put.status_code in (200, 204), put.text
    # A part is checked against the upload before its body streams (without the lock, so parts of
    # one upload stream in parallel) and is recorded under the lock against a fresh load.
    assert (counted.reads, counted.writes) == (["get", "get"], ["save"])
    async with counting() as counted:
        done = await api.client.post(
            f"/v1/files/{file_id}/complete", json={"md5": hashlib.md5(data).hexdigest()}, headers=api.auth()
        )
    assert done.status_code == 200 and done.json()["status"] == "COMPLETED"
    assert (counted.reads, counted.writes) == (["get"], ["save"])
