"""`chunkd serve` storing on S3 (a real Ceph RGW): upload and download through the native API, a
kill -9 mid-upload, and `chunkd gc` against the same bucket."""

from __future__ import annotations

import hashlib
import os
import subprocess
from pathlib import Path

import httpx
import pytest

from tests.support.s3 import CephRgw
from tests.support.server import BIN, ChunkdServer

MiB = 1024 * 1024

pytestmark = pytest.mark.e2e


def test_serve_on_s3(tmp_path: Path, ceph_rgw: CephRgw, s3_bucket: str) -> None:
    env = {**ceph_rgw.env(s3_bucket, prefix="e2e/"), "CHUNKD_FSYNC": "true"}
    server = ChunkdServer(tmp_path / "data", env=env).start()
    try:
        key = server.create_key("alice")
        auth = {"Authorization": f"Bearer {key}"}
        data = os.urandom(13 * MiB + 321)
        part = 2 * MiB  # Fine Uploader-sized chunks: coalesced into 5 MiB+ S3 parts
        with httpx.Client(base_url=server.url, headers=auth, timeout=60) as client:
            created = client.post(
                "/v1/files", json={"filename": "../clip.mp4", "sizeBytes": len(data), "partSize": part}
            )
            assert created.status_code == 201, created.text
            file_id = created.json()["id"]
            numbers = list(range(1, -(-len(data) // part) + 1))
            first, rest = numbers[::2], numbers[1::2]
            for n in first:
                put = client.put(f"/v1/files/{file_id}/parts/{n}", content=data[(n - 1) * part : n * part])
                assert put.status_code == 200, put.text
                assert put.json()["etag"] == f'"{hashlib.md5(data[(n - 1) * part : n * part]).hexdigest()}"'
        server.restart()  # kill -9 mid-upload: the upload resumes on the restarted server
        with httpx.Client(base_url=server.url, headers=auth, timeout=60) as client:
            for n in rest:
                put = client.put(f"/v1/files/{file_id}/parts/{n}", content=data[(n - 1) * part : n * part])
                assert put.status_code == 200, put.text
            md5 = hashlib.md5(data).hexdigest()
            done = client.post(f"/v1/files/{file_id}/complete", json={"md5": md5})
            assert done.status_code == 200, done.text
            content = client.get(f"/v1/files/{file_id}/content")
            assert content.status_code == 200 and hashlib.md5(content.content).hexdigest() == md5
            ranged = client.get(f"/v1/files/{file_id}/content", headers={"Range": f"bytes={5 * MiB - 1}-{5 * MiB}"})
            assert ranged.status_code == 206 and ranged.content == data[5 * MiB - 1 : 5 * MiB + 1]
            pending = client.post("/v1/files", json={"filename": "p.bin", "sizeBytes": 6 * MiB, "partSize": MiB})
            pending_id = pending.json()["id"]
            for n in range(1, 6):
                assert client.put(f"/v1/files/{pending_id}/parts/{n}", content=b"z" * MiB).status_code == 200
    finally:
        server.kill()
    s3 = ceph_rgw.client()
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=s3_bucket).get("Contents", [])]
    assert f"e2e/masters/{file_id}/.._clip.mp4" in keys  # the sanitised filename is the real key
    assert len(s3.list_multipart_uploads(Bucket=s3_bucket).get("Uploads", [])) == 1  # the pending one
    # The pending upload's record disappears (as if its database were lost): gc aborts its strays.
    # Only once an empty database is made on purpose: gc in a data dir without one refuses (with a
    # mistyped --data-dir it would have swept every object of the bucket).
    (server.data_dir / "chunkd.db").unlink()
    gc = [str(BIN / "chunkd"), "gc", "--grace", "0", "--data-dir", str(server.data_dir)]
    refused = subprocess.run(gc, env=server.env, capture_output=True, text=True)
    assert refused.returncode == 2 and "has no chunkd database" in refused.stderr, refused.stderr
    assert len(s3.list_multipart_uploads(Bucket=s3_bucket).get("Uploads", [])) == 1
    migrate = [str(BIN / "chunkd"), "migrate", "--data-dir", str(server.data_dir)]
    subprocess.run(migrate, env=server.env, capture_output=True, check=True)
    # The bucket is marked as the lost database's (the server's sweep at start marked it): a new
    # database sweeps it only once the operator removes the mark.
    foreign = subprocess.run(gc, env=server.env, capture_output=True, text=True)
    assert foreign.returncode == 1 and "belongs to another database" in foreign.stderr, foreign.stderr
    assert len(s3.list_multipart_uploads(Bucket=s3_bucket).get("Uploads", [])) == 1
    s3.delete_object(Bucket=s3_bucket, Key="e2e/database-id")
    result = subprocess.run(gc, env=server.env, capture_output=True, text=True, check=True)
    assert "removed" in result.stdout
    assert s3.list_multipart_uploads(Bucket=s3_bucket).get("Uploads", []) == []
    left = [o["Key"] for o in s3.list_objects_v2(Bucket=s3_bucket).get("Contents", [])]
    assert left == ["e2e/database-id"]  # the mark, now the new database's
