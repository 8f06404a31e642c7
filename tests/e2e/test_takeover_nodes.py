"""Two ``chunkd serve`` nodes on one PostgreSQL and one data dir, as behind a load balancer: a
client whose request on node A stalled (its connection still open, no more bytes) reconnects to
node B and resumes at once, in every append dialect — tus PATCH, the IETF draft's creation and
PATCH, media Content-Range chunks (the request on B asks A's request to let go through PostgreSQL
NOTIFY; A commits the bytes it received; B answers within 2 s) and pm chunks (parts, which hold
the lock only for their commit, so B never waits for A) — with no byte lost or written twice."""

from __future__ import annotations

import asyncio
import hashlib
import os
from collections.abc import Iterator

import asyncpg  # type: ignore[import-untyped]
import httpx
import pytest

from chunkd.backends.locks.postgres import advisory_key, asyncpg_dsn
from tests.support.cluster import start_cluster
from tests.support.media_files import make_pdf
from tests.support.pm_forms import chunk_head, form_tail
from tests.support.postgres import PostgresServer
from tests.support.raw_http import ResponseReader
from tests.support.server import ChunkdServer
from tests.support.takeover import completed_md5, stall, stalled_draft_patch, stalled_tus_patch

pytestmark = [pytest.mark.e2e]

MiB = 1024 * 1024
# The nodes wait an hour for an upload's lock: a take-over that waited for the lock would outlast the
# client's timeout below, which bounds a failure only (a loaded machine may take seconds to answer).
LOCK_TIMEOUT = "3600"
DEADLINE = 120.0
PM_BOUNDARY = "pmb0undary"


@pytest.fixture(scope="module")
def database(pg_server: PostgresServer) -> str:
    return pg_server.url(pg_server.create_database())


@pytest.fixture(scope="module")
def two_nodes(tmp_path_factory: pytest.TempPathFactory, database: str) -> Iterator[list[ChunkdServer]]:
    servers = start_cluster(
        tmp_path_factory.mktemp("takeover"), database, {"CHUNKD_LOCK_TIMEOUT_SECONDS": LOCK_TIMEOUT}, nodes=2
    )
    try:
        yield servers
    finally:
        for server in servers:
            server.kill()


def wait_until_locked(database: str, upload_id: str) -> None:
    """Until some node holds the upload's advisory lock (its request is streaming): seen held
    three polls in a row, so a request's momentary look at the lock before it starts is not
    mistaken for it."""

    async def probe() -> None:
        conn = await asyncpg.connect(asyncpg_dsn(database))
        try:
            key = advisory_key(upload_id)
            held = 0
            for _ in range(1000):
                if not await conn.fetchval("SELECT pg_try_advisory_lock($1)", key):
                    held += 1
                    if held == 3:
                        return
                else:
                    held = 0
                    await conn.fetchval("SELECT pg_advisory_unlock($1)", key)
                await asyncio.sleep(0.01)
            raise AssertionError("no node took the upload's lock")
        finally:
            await conn.close()

    asyncio.run(probe())


def test_tus_patch_on_node_b_takes_over_a_stalled_patch_on_node_a(two_nodes: list[ChunkdServer], database: str) -> None:
    node_a, node_b = two_nodes
    key = node_a.create_key("alice")
    data = os.urandom(6 * MiB)
    upload_id, octets, stalled = stalled_tus_patch(node_a, key, data, 2 * MiB)
    try:
        wait_until_locked(database, upload_id)
        with httpx.Client(base_url=node_b.url, timeout=DEADLINE) as client:
            # What tus-js-client does on a retry: HEAD (which ends the stale PATCH), then PATCH.
            offset = int(client.head(f"/files/{upload_id}", headers=octets).headers["upload-offset"])
            assert 0 <= offset <= 2 * MiB
            done = client.patch(
                f"/files/{upload_id}", content=data[offset:], headers={**octets, "Upload-Offset": str(offset)}
            )
        assert done.status_code == 204, done.text
        # A's request was ended (its client is long gone; it gets the tus error answer).
        response = stalled.recv(4096)
        assert response.startswith(b"HTTP/1.1 400") or response == b""
    finally:
        stalled.close()
    assert completed_md5(node_a, key, upload_id) == hashlib.md5(data).hexdigest()


def test_draft_patch_on_node_b_takes_over_without_a_head(two_nodes: list[ChunkdServer], database: str) -> None:
    """An IETF-draft client that appends on B without asking for the offset first: B's PATCH
    itself ends A's stalled one; if A had committed bytes, B answers 409 with the offset to resume
    from at once."""
    node_a, node_b = two_nodes
    key = node_a.create_key("alice")
    data = os.urandom(5 * MiB)
    upload_id, append, stalled = stalled_draft_patch(node_a, key, data, MiB // 2)
    try:
        wait_until_locked(database, upload_id)
        with httpx.Client(base_url=node_b.url, timeout=DEADLINE) as client:
            done = client.patch(f"/files/{upload_id}", content=data, headers={**append, "Upload-Offset": "0"})
            if done.status_code == 409:  # A committed what it had received: resume from there
                offset = int(done.headers["upload-offset"])
                assert 0 < offset <= MiB // 2
                done = client.patch(
                    f"/files/{upload_id}", content=data[offset:], headers={**append, "Upload-Offset": str(offset)}
                )
        assert done.status_code == 200, done.text
        assert done.json()["md5"] == hashlib.md5(data).hexdigest()
    finally:
        stalled.close()
    assert completed_md5(node_b, key, upload_id) == hashlib.md5(data).hexdigest()


def test_draft_creation_stalled_on_node_a_resumed_on_node_b(two_nodes: list[ChunkdServer], database: str) -> None:
    """What URLSession does: the creation request's 104 gave the upload's URL, then its connection
    went silent mid-body on node A; the client asks node B for the offset (ending A's request)
    and appends the rest there."""
    node_a, node_b = two_nodes
    key = node_a.create_key("alice")
    data = os.urandom(4 * MiB)
    headers = {"Authorization": f"Bearer {key}", "Upload-Draft-Interop-Version": "8", "Upload-Complete": "?1"}
    stalled = stall(node_a, "/files", headers, len(data), b"", "POST")
    try:
        status, interim = ResponseReader(stalled).next_head()
        assert status == 104
        location = interim["location"]
        upload_id = location.rsplit("/", 1)[1]
        stalled.sendall(data[: MiB + 5])
        wait_until_locked(database, upload_id)
        draft = {"Authorization": f"Bearer {key}", "Upload-Draft-Interop-Version": "8"}
        with httpx.Client(base_url=node_b.url, timeout=DEADLINE) as client:
            state = client.head(f"/files/{upload_id}", headers=draft)
            assert state.status_code == 204 and state.headers["upload-complete"] == "?0"
            offset = int(state.headers["upload-offset"])
            assert 0 <= offset <= MiB + 5
            done = client.patch(
                f"/files/{upload_id}",
                content=data[offset:],
                headers={
                    **draft,
                    "Upload-Offset": str(offset),
                    "Upload-Complete": "?1",
                    "Content-Type": "application/partial-upload",
                },
            )
        assert done.status_code == 200, done.text
    finally:
        stalled.close()
    assert completed_md5(node_a, key, upload_id) == hashlib.md5(data).hexdigest()


def test_media_chunk_on_node_b_takes_over_a_stalled_chunk_on_node_a(
    two_nodes: list[ChunkdServer], database: str
) -> None:
    """The media API's Content-Range chunks: a chunk retried on B ends the same chunk stalled on A."""
    node_a, node_b = two_nodes
    key = node_a.create_key("alice")
    pdf = make_pdf(padding=300_000)
    first, second = pdf[:200_000], pdf[200_000:]
    total = len(pdf)
    auth = {"Authorization": f"Bearer {key}"}
    one = httpx.post(
        f"{node_a.url}/api/v2/media/upload/chunk/",
        headers={**auth, "Content-Range": f"bytes 0-{len(first) - 1}/{total}"},
        files={"document": ("doc.pdf", first, "application/pdf")},
    )
    assert one.status_code == 201, one.text
    upload_id = one.json()["upload_id"]
    boundary = "b0undary"
    head = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="upload_id"\r\n\r\n{upload_id}\r\n'
        f'--{boundary}\r\nContent-Disposition: form-data; name="document"; filename="doc.pdf"\r\n'
        "Content-Type: application/pdf\r\n\r\n"
    ).encode()
    body = head + second + f"\r\n--{boundary}--\r\n".encode()
    headers = {
        **auth,
        "Content-Type": f"multipart/form-data; boundary={boundary}",
        "Content-Range": f"bytes {len(first)}-{total - 1}/{total}",
    }
    stalled = stall(node_a, "/api/v2/media/upload/chunk/", headers, len(body), body[: len(head) + 50_000], "POST")
    try:
        wait_until_locked(database, upload_id)
        retry = httpx.post(f"{node_b.url}/api/v2/media/upload/chunk/", content=body, headers=headers, timeout=DEADLINE)
        assert retry.status_code == 201, retry.text
        assert retry.json()["offset"] == total
    finally:
        stalled.close()
    md5 = hashlib.md5(pdf).hexdigest()
    done = httpx.post(
        f"{node_b.url}/api/v2/media/upload/complete/", headers=auth, data={"upload_id": upload_id, "md5": md5}
    )
    assert done.status_code == 201, done.text
    assert completed_md5(node_a, key, upload_id) == md5


def pm_chunk(file_uuid: str, index: int, chunk: bytes, chunk_size: int, total: int, parts: int) -> tuple[bytes, bytes]:
    """A Fine Uploader chunk request body as (the part up to qqfile's first byte, the rest)."""
    head = chunk_head(
        PM_BOUNDARY,
        file_uuid,
        index=index,
        chunk_size=chunk_size,
        this_size=len(chunk),
        total_parts=parts,
        total_size=total,
        filename="pm.bin",
    )
    return head, chunk + form_tail(PM_BOUNDARY)


def wait_for_log(server: ChunkdServer, needle: str, timeout: float = 60.0) -> None:
    """Until ``server``'s log has a line containing ``needle`` (its access log line is written when
    a request ends, also when the client went away)."""
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if needle in server.log.read_text(errors="replace"):
            return
        time.sleep(0.05)
    raise AssertionError(f"{needle!r} never appeared in {server.log}")


def test_pm_chunk_on_node_b_while_the_same_chunk_stalls_on_node_a(two_nodes: list[ChunkdServer]) -> None:
    """pm chunks are parts: a chunk holds the upload's lock only for its short commit, so a retry on
    node B is answered at once while node A still waits for the stalled copy's bytes, and A's
    copy, broken off later, neither blocks B nor damages the part B stored."""
    node_a, node_b = two_nodes
    key = node_a.create_key("alice")
    chunk_size = MiB
    data = os.urandom(2 * MiB + 300_000)
    chunks = [data[i : i + chunk_size] for i in range(0, len(data), chunk_size)]
    file_uuid = "6f1c2a70-8f0e-4d5a-9a53-6f3c1d2b9e11"
    auth = {"Authorization": f"Bearer {key}"}
    url = "/api/v2/pm/upload/"

    def post(server: ChunkdServer, index: int) -> httpx.Response:
        head, rest = pm_chunk(file_uuid, index, chunks[index], chunk_size, len(data), len(chunks))
        headers = {**auth, "Content-Type": f"multipart/form-data; boundary={PM_BOUNDARY}"}
        return httpx.post(f"{server.url}{url}", content=head + rest, headers=headers, timeout=DEADLINE)

    assert post(node_b, 0).status_code == 200
    head, rest = pm_chunk(file_uuid, 1, chunks[1], chunk_size, len(data), len(chunks))
    headers = {**auth, "Content-Type": f"multipart/form-data; boundary={PM_BOUNDARY}"}
    stalled = stall(node_a, url, headers, len(head) + len(rest), head + rest[:300_000], "POST")
    try:
        retry = post(node_b, 1)  # answered, not left waiting for A's lock (an hour), despite A's copy
        assert retry.status_code == 200, retry.text
        assert post(node_b, 2).status_code == 200
    finally:
        stalled.close()
    # A's copy of chunk 1 breaks off now, after B stored it.
    wait_for_log(node_a, "route=/api/v2/pm/upload")
    done = httpx.post(
        f"{node_b.url}{url}?done",
        headers=auth,
        data={"qquuid": file_uuid, "qqfilename": "pm.bin", "qqtotalfilesize": str(len(data)), "qqtotalparts": "3"},
    )
    assert done.status_code == 200, done.text
    md5 = hashlib.md5(data).hexdigest()
    file_url = done.json()["file_url"]
    download = httpx.get(file_url if file_url.startswith("http") else f"{node_a.url}{file_url}", headers=auth)
    assert download.status_code == 200
    assert hashlib.md5(download.content).hexdigest() == md5
