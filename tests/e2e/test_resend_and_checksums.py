"""Re-sent parts and wrong checksums against a real server."""

from __future__ import annotations

import hashlib

import pytest

from tests.support.files import FilesClient, part_etag, seeded_bytes
from tests.support.server import ChunkdServer

pytestmark = pytest.mark.e2e

PART = 256 * 1024
SIZE = 3 * PART + 5


def piece(data: bytes, number: int) -> bytes:
    return data[(number - 1) * PART : number * PART]


def test_resent_part(e2e_server: ChunkdServer, e2e_key: str) -> None:
    data = bytearray(seeded_bytes(40, SIZE))
    with FilesClient(e2e_server, e2e_key) as client:
        file_id = client.create(SIZE, PART)["id"]
        for number in (1, 2, 3, 4):
            assert client.put_part(file_id, number, piece(bytes(data), number)).status_code == 200
        # The same bytes again: the same etag, nothing else changes.
        first = client.put_part(file_id, 2, piece(bytes(data), 2))
        again = client.put_part(file_id, 2, piece(bytes(data), 2))
        assert first.status_code == again.status_code == 200
        assert (
            first.json()
            == again.json()
            == {
                "partNumber": 2,
                "sizeBytes": PART,
                "etag": part_etag(piece(bytes(data), 2)),
            }
        )
        state = client.get(file_id)
        assert state["bytesReceived"] == SIZE and len(state["parts"]) == 4
        # Different bytes replace the part; the file is built from the latest copy.
        data[PART : 2 * PART] = seeded_bytes(41, PART)
        replaced = client.put_part(file_id, 2, piece(bytes(data), 2))
        assert replaced.status_code == 200
        assert replaced.json()["etag"] == part_etag(piece(bytes(data), 2))
        # The last (short) part re-sent too.
        data[3 * PART :] = b"ABCDE"
        assert client.put_part(file_id, 4, b"ABCDE").status_code == 200
        state = client.get(file_id)
        assert state["bytesReceived"] == SIZE and len(state["parts"]) == 4
        md5 = hashlib.md5(data).hexdigest()
        done = client.complete(file_id, md5)
        assert done.status_code == 200, done.text
        assert client.download_md5(file_id) == (SIZE, md5)
        # Only the latest copy of each part is kept on disk.
        directory = e2e_server.data_dir / "blobs" / file_id[:2] / file_id
        assert len(list(directory.iterdir())) == 4
        # After completion, parts are refused.
        late = client.put_part(file_id, 2, piece(bytes(data), 2))
        assert late.status_code == 409 and late.json()["error"]["code"] == "invalid_state"


def test_wrong_md5_stays_pending_then_completes(e2e_server: ChunkdServer, e2e_key: str) -> None:
    data = seeded_bytes(50, SIZE)
    md5 = hashlib.md5(data).hexdigest()
    with FilesClient(e2e_server, e2e_key) as client:
        file_id = client.create(SIZE, PART)["id"]
        for number in (4, 3, 2, 1):
            assert client.put_part(file_id, number, piece(data, number)).status_code == 200
        wrong = client.complete(file_id, hashlib.md5(b"not it").hexdigest())
        assert wrong.status_code == 400
        error = wrong.json()["error"]
        assert error["code"] == "checksum_mismatch" and error["field"] == "md5"
        state = client.get(file_id)
        assert state["status"] == "PENDING" and state["expiresAt"] is not None
        assert client.http.get(f"/v1/files/{file_id}/content").status_code == 409
        right = client.complete(file_id, md5)
        assert right.status_code == 200, right.text
        assert right.json()["status"] == "COMPLETED"
        assert client.download_md5(file_id) == (SIZE, md5)
        # Once COMPLETED, a wrong md5 is still refused, and the file stays as it is.
        assert client.complete(file_id, "0" * 32).status_code == 400
        assert client.get(file_id)["status"] == "COMPLETED"


def test_wrong_md5_declared_at_creation(e2e_server: ChunkdServer, e2e_key: str) -> None:
    data = seeded_bytes(51, PART)
    with FilesClient(e2e_server, e2e_key) as client:
        file_id = client.create(PART, PART, md5="f" * 32)["id"]
        assert client.put_part(file_id, 1, data).status_code == 200
        refused = client.complete(file_id)
        assert refused.status_code == 400 and refused.json()["error"]["code"] == "checksum_mismatch"
        assert client.get(file_id)["status"] == "PENDING"


def test_wrong_content_md5_part_is_not_stored(e2e_server: ChunkdServer, e2e_key: str) -> None:
    data = seeded_bytes(52, SIZE)
    with FilesClient(e2e_server, e2e_key) as client:
        file_id = client.create(SIZE, PART)["id"]
        bad = client.put_part(file_id, 1, piece(data, 1), content_md5=hashlib.md5(b"other").digest())
        assert bad.status_code == 400
        assert bad.json()["error"]["code"] == "checksum_mismatch"
        assert bad.json()["error"]["field"] == "Content-MD5"
        state = client.get(file_id)
        assert state["parts"] == [] and state["bytesReceived"] == 0
        directory = e2e_server.data_dir / "blobs" / file_id[:2] / file_id
        assert not directory.exists() or list(directory.iterdir()) == []
        good = client.put_part(file_id, 1, piece(data, 1), content_md5=hashlib.md5(piece(data, 1)).digest())
        assert good.status_code == 200
        assert [p["partNumber"] for p in client.get(file_id)["parts"]] == [1]
