"""``kill -9`` of the server in the middle of 8 concurrent uploads; restart on the same data dir;
every acknowledged part is intact, the uploads resume from the parts list and complete with the
right MD5; ``chunkd gc`` then removes what the killed requests left behind. Half of the uploads are
*replacing* parts they had already sent when the kill comes: each part is then wholly the old or
wholly the new copy, never a mix. The same for tus PATCHes, and for an IETF draft creation whose
announced (104) offsets must all survive."""

from __future__ import annotations

import hashlib
import random
import socket
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from tests.support.files import FilesClient, part_etag, seeded_bytes
from tests.support.raw_http import ResponseReader
from tests.support.server import BIN, ChunkdServer

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

UPLOADS = 8
PART = 256 * 1024
SIZE = 9 * PART - 1000  # 9 parts, the last one short
KILL_AFTER = 28  # acknowledged parts (of 72) before the kill


@dataclass
class Upload:
    index: int
    data: bytes
    previous: bytes | None = None  # bytes sent before the kill phase, being replaced by ``data``
    file_id: str = ""
    acked: dict[int, str] = field(default_factory=dict)  # part number -> etag of the 200 answer

    @property
    def md5(self) -> str:
        return hashlib.md5(self.data).hexdigest()

    def part(self, number: int) -> bytes:
        return self.data[(number - 1) * PART : number * PART]

    def etag(self, number: int, data: bytes | None = None) -> str:
        start = (number - 1) * PART
        return part_etag((data or self.data)[start : start + PART])


def test_kill_9_mid_upload_then_resume(tmp_path: Path) -> None:
    server = ChunkdServer(tmp_path / "data", env={"CHUNKD_FSYNC": "true"})
    server.start()
    try:
        key = server.create_key("alice")
        uploads = [
            Upload(i, seeded_bytes(100 + i, SIZE), seeded_bytes(200 + i, SIZE) if i % 2 else None)
            for i in range(UPLOADS)
        ]
        with FilesClient(server, key) as client:
            for upload in uploads:
                upload.file_id = client.create(SIZE, PART, md5=upload.md5)["id"]
                for number in range(1, 10) if upload.previous else ():
                    start = (number - 1) * PART
                    sent = client.put_part(upload.file_id, number, upload.previous[start : start + PART])
                    assert sent.status_code == 200, sent.text

        acked = threading.Semaphore(0)
        lock = threading.Lock()
        broken: list[int] = []  # uploads whose request the kill cut off

        def send_all(upload: Upload) -> None:
            order = list(range(1, 10))
            random.Random(upload.index).shuffle(order)
            with FilesClient(server, key, timeout=30) as own:
                for number in order:
                    try:
                        response = own.put_part(upload.file_id, number, upload.part(number))
                    except httpx.HTTPError:
                        broken.append(upload.index)  # the server is gone: this part is not acknowledged
                        return
                    assert response.status_code == 200, response.text
                    with lock:
                        upload.acked[number] = response.json()["etag"]
                    acked.release()

        with ThreadPoolExecutor(UPLOADS) as pool:
            futures = [pool.submit(send_all, u) for u in uploads]
            for _ in range(KILL_AFTER):
                assert acked.acquire(timeout=60), "uploads stalled before the kill"
            server.kill()  # SIGKILL to the whole process group, mid-flight
            with lock:
                acked_at_kill = {u.index: dict(u.acked) for u in uploads}
            for future in futures:
                future.result()
        assert sum(map(len, acked_at_kill.values())) >= KILL_AFTER
        assert sum(map(len, acked_at_kill.values())) < UPLOADS * 9, "the kill came too late to test anything"
        assert broken, "no request was in flight at the kill"

        server.start()
        with FilesClient(server, key) as client:
            for upload in uploads:
                state = client.get(upload.file_id)
                assert state["status"] == "PENDING"
                listed = {p["partNumber"]: p for p in state["parts"]}
                # Every acknowledged part survived, with the bytes that were acknowledged.
                for number, etag in acked_at_kill[upload.index].items():
                    assert number in listed, f"upload {upload.index}: acknowledged part {number} lost"
                    assert listed[number]["etag"] == etag == upload.etag(number)
                # Nothing torn: any part the server lists (even one whose answer was lost) is
                # wholly one copy that was sent.
                for number, part in listed.items():
                    copies = {upload.etag(number), upload.etag(number, upload.previous or upload.data)}
                    assert part["etag"] in copies
                    assert part["sizeBytes"] == len(upload.part(number))
                if upload.previous:
                    assert sorted(listed) == list(range(1, 10))  # a replacement never loses a part
                assert state["bytesReceived"] == sum(p["sizeBytes"] for p in listed.values())
                # Resume with whatever does not hold the final bytes yet.
                upload.acked = {n: p["etag"] for n, p in listed.items() if p["etag"] == upload.etag(n)}

        def resume(upload: Upload) -> None:
            with FilesClient(server, key) as own:
                for number in sorted(set(range(1, 10)) - set(upload.acked)):
                    response = own.put_part(upload.file_id, number, upload.part(number))
                    assert response.status_code == 200, response.text
                done = own.complete(upload.file_id, upload.md5)
                assert done.status_code == 200, done.text
                assert own.download_md5(upload.file_id) == (SIZE, upload.md5)

        with ThreadPoolExecutor(UPLOADS) as pool:
            list(pool.map(resume, uploads))

        # The killed requests may have left part files no row points at; gc (beside the running
        # server, which is idle now) removes exactly those.
        time.sleep(0.05)
        gc = subprocess.run(
            [str(BIN / "chunkd"), "gc", "--data-dir", str(server.data_dir), "--grace", "0"],
            env=server.env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert gc.returncode == 0, gc.stdout + gc.stderr
        with FilesClient(server, key) as client:
            for upload in uploads:
                directory = server.data_dir / "blobs" / upload.file_id[:2] / upload.file_id
                assert len(list(directory.iterdir())) == 9
                assert client.download_md5(upload.file_id) == (SIZE, upload.md5)
    finally:
        server.kill()


TUS_UPLOADS = 6
TUS_SIZE = 12 * 128 * 1024 + 777
TUS_CHUNK = 128 * 1024
TUS_KILL_AFTER = 30  # acknowledged PATCHes (of about 78) before the kill


@dataclass
class TusUpload:
    index: int
    data: bytes
    url: str = ""
    acked: int = 0  # the Upload-Offset of the last 204

    @property
    def md5(self) -> str:
        return hashlib.md5(self.data).hexdigest()


def test_kill_9_mid_tus_patches_then_resume(tmp_path: Path) -> None:
    """Sequential PATCHes, some of them starting with creation-with-upload and some streamed in
    pieces, when the server is killed: every acknowledged offset survives, nothing past the bytes
    on disk is reported, and each upload resumes from its HEAD to the right MD5."""
    server = ChunkdServer(tmp_path / "data", env={"CHUNKD_FSYNC": "true"})
    server.start()
    try:
        key = server.create_key("alice")
        tus = {"Authorization": f"Bearer {key}", "Tus-Resumable": "1.0.0"}
        patching = {**tus, "Content-Type": "application/offset+octet-stream"}
        uploads = [TusUpload(i, seeded_bytes(300 + i, TUS_SIZE)) for i in range(TUS_UPLOADS)]
        with httpx.Client(base_url=server.url, timeout=30) as http:
            for upload in uploads:
                first = upload.data[:5000] if upload.index % 2 else b""  # creation-with-upload
                created = http.post("/files/", headers={**patching, "Upload-Length": str(TUS_SIZE)}, content=first)
                assert created.status_code == 201, created.text
                upload.url = created.headers["location"]
                upload.acked = int(created.headers.get("upload-offset", "0"))
                assert upload.acked == len(first)

        acked = threading.Semaphore(0)
        lock = threading.Lock()

        def send_all(upload: TusUpload) -> None:
            with httpx.Client(base_url=server.url, timeout=30) as own:
                while upload.acked < TUS_SIZE:
                    chunk = upload.data[upload.acked : upload.acked + TUS_CHUNK]
                    pieces = [chunk[i : i + 16 * 1024] for i in range(0, len(chunk), 16 * 1024)]
                    try:
                        response = own.patch(
                            upload.url,
                            headers={**patching, "Upload-Offset": str(upload.acked)},
                            content=iter(pieces) if upload.index % 3 == 0 else chunk,
                        )
                    except httpx.HTTPError:
                        return  # the server is gone: this PATCH is not acknowledged
                    assert response.status_code == 204, response.text
                    with lock:
                        upload.acked = int(response.headers["upload-offset"])
                    acked.release()

        with ThreadPoolExecutor(TUS_UPLOADS) as pool:
            futures = [pool.submit(send_all, u) for u in uploads]
            for _ in range(TUS_KILL_AFTER):
                assert acked.acquire(timeout=60), "uploads stalled before the kill"
            server.kill()
            with lock:
                acked_at_kill = {u.index: u.acked for u in uploads}
            for future in futures:
                future.result()
        assert any(offset < TUS_SIZE for offset in acked_at_kill.values()), "the kill came too late"

        server.start()
        with httpx.Client(base_url=server.url, timeout=60) as http:
            for upload in uploads:
                head = http.head(upload.url, headers=tus)
                assert head.status_code == 200, head.status_code
                offset = int(head.headers["upload-offset"])
                assert acked_at_kill[upload.index] <= offset <= TUS_SIZE, (upload.index, offset)
                if offset < TUS_SIZE:
                    rest = http.patch(
                        upload.url, headers={**patching, "Upload-Offset": str(offset)}, content=upload.data[offset:]
                    )
                    assert rest.status_code == 204, rest.text
                # The bytes before the offset were the acknowledged ones: the whole file checks out.
                assert http.get(upload.url, headers=tus).content == upload.data
                file_id = upload.url.rstrip("/").rsplit("/", 1)[1]
                state = http.get(f"/v1/files/{file_id}", headers=tus).json()
                assert (state["status"], state["md5"]) == ("COMPLETED", upload.md5)
    finally:
        server.kill()


def test_kill_9_mid_draft_creation_keeps_every_announced_offset(tmp_path: Path) -> None:
    """An IETF draft creation (interop 8) streaming a whole file when the server is killed, right
    after it announced a durable offset in a 104: on restart the upload's HEAD reports at least that
    offset, and the client's append from there completes the file with the right MD5."""
    mib = 1024 * 1024
    server = ChunkdServer(tmp_path / "data", env={"CHUNKD_FSYNC": "true", "CHUNKD_RESUMABLE_PROGRESS_BYTES": str(mib)})
    server.start()
    try:
        key = server.create_key("alice")
        data = seeded_bytes(800, 5 * mib + 3)
        head = (
            f"POST /files HTTP/1.1\r\nHost: 127.0.0.1:{server.port}\r\nAuthorization: Bearer {key}\r\n"
            f"Upload-Draft-Interop-Version: 8\r\nUpload-Complete: ?1\r\nContent-Length: {len(data)}\r\n\r\n"
        )
        with socket.create_connection(("127.0.0.1", server.port), timeout=30) as sock:
            sock.sendall(head.encode())
            responses = ResponseReader(sock)
            status, created = responses.next_head()
            assert status == 104
            sock.sendall(data[: 2 * mib + 500])
            announced = [int(responses.next_head()[1]["upload-offset"]) for _ in range(2)]
            assert announced == [mib, 2 * mib]
            server.kill()
        server.start()
        draft = {"Authorization": f"Bearer {key}", "Upload-Draft-Interop-Version": "8"}
        with httpx.Client(timeout=60) as http:
            state = http.head(created["location"], headers=draft)
            assert state.status_code == 204
            offset = int(state.headers["upload-offset"])
            assert 2 * mib <= offset <= 2 * mib + 500
            assert (state.headers["upload-complete"], state.headers["upload-length"]) == ("?0", str(len(data)))
            appended = {
                "Upload-Offset": str(offset),
                "Upload-Complete": "?1",
                "Content-Type": "application/partial-upload",
            }
            done = http.patch(created["location"], headers={**draft, **appended}, content=data[offset:])
            assert done.status_code == 200, done.text
            assert done.json()["md5"] == hashlib.md5(data).hexdigest()
    finally:
        server.kill()
