"""``chunkd gc`` sweeps the local store beside a running server: an upload's directory removed
while the sweep looks at it (a cancel, a delete, an expiry) is no reason to stop (it used to end
the whole gc with FileNotFoundError, leaving every other orphan in place)."""

from __future__ import annotations

import os
import shutil
import time
from datetime import UTC, datetime
from pathlib import Path

from chunkd.backends.blobs.local import LocalBlobStore
from tests.support.uploads import make_upload

NOW = datetime(2026, 1, 1, tzinfo=UTC)


class CancelledWhileSwept(dict[str, set[str]]):
    """The live blobs, whose lookup of ``gone`` removes its directory first, as a cancel running
    beside the sweep does right after the sweep listed it."""

    def __init__(self, gone: Path) -> None:
        super().__init__()
        self.gone = gone

    def get(self, key: str, default: set[str] | None = None) -> set[str] | None:  # type: ignore[override]
        if key == self.gone.name:
            shutil.rmtree(self.gone)
        return super().get(key, default)


async def test_a_directory_removed_during_the_sweep_does_not_stop_it(tmp_path: Path) -> None:
    store = LocalBlobStore(tmp_path / "blobs", fsync=False)
    old = time.time() - 7200
    directories = []
    for _ in range(6):
        upload = make_upload(10, 10, filename="a.bin", created=NOW, expires_at=NOW)
        directory = store.root / upload.id[:2] / upload.id
        directory.mkdir(parents=True, exist_ok=True)
        orphan = directory / "1.orphanorphan.part"
        orphan.write_bytes(b"x" * 10)
        os.utime(orphan, (old, old))
        os.utime(directory, (old, old))  # a crash leftover: the directory is as old as its file
        directories.append(directory)
    cancelled = directories[0]
    removed = await store.sweep(CancelledWhileSwept(cancelled), grace_seconds=3600)
    assert removed == len(directories) - 1  # every other orphan still went
    assert not any(d.exists() for d in directories)
