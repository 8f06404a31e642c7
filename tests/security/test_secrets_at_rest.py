"""Secrets at rest: the data dir is the server user's alone (0700), and so are the SQLite database
with its -wal and -shm, the server secret, and the bootstrap admin key, which is written to a
file whose path is logged, never the key itself."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import httpx
import pytest

from chunkd.runtime import open_runtime
from chunkd.settings import Settings
from tests.support.server import ChunkdServer


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.mark.e2e
def test_first_start_keeps_every_secret_private(tmp_path: Path) -> None:
    data = tmp_path / "data"
    server = ChunkdServer(data, env={"CHUNKD_BOOTSTRAP_ADMIN_KEY": "true", "CHUNKD_FSYNC": "false"})
    old_umask = os.umask(0o022)  # the usual umask: files would be 0644 unless made private
    try:
        server.start()
    finally:
        os.umask(old_umask)
    try:
        key_file = data / "bootstrap-admin-key"
        key = key_file.read_text().strip()
        assert key.startswith("ck_")
        log = server.log.read_text()
        assert key not in log and key[20:] not in log, "the admin key went to the log"
        assert str(key_file.resolve()) in log
        # The key works (and writing with it makes sure the WAL exists).
        created = httpx.post(
            f"{server.url}/v1/files",
            json={"filename": "a.txt", "sizeBytes": 1},
            headers={"Authorization": f"Bearer {key}"},
        )
        assert created.status_code == 201, created.text
        assert _mode(data) == 0o700
        for name in ("chunkd.db", "chunkd.db-wal", "chunkd.db-shm", "secret.key", "bootstrap-admin-key"):
            assert _mode(data / name) == 0o600, name
    finally:
        server.kill()


async def test_an_existing_data_dir_is_made_private(tmp_path: Path) -> None:
    data = tmp_path / "old"
    data.mkdir(mode=0o755)
    os.chmod(data, 0o755)
    (data / "secret.key").write_bytes(os.urandom(32))
    (data / "chunkd.db").touch()  # an empty file is a valid, new SQLite database
    for name in ("chunkd.db", "secret.key"):
        os.chmod(data / name, 0o644)
    runtime = await open_runtime(Settings(data_dir=data, bootstrap_admin_key=False, fsync=False))
    try:
        assert _mode(data) == 0o700
        assert _mode(data / "chunkd.db") == 0o600
        assert _mode(data / "secret.key") == 0o600
    finally:
        await runtime.close()
