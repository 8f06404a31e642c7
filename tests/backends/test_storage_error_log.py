"""Out of file descriptors, a store's requests answer 503 (a StorageError, as any disk fault) and the
log says what to raise, once a minute rather than once per failed request."""

from __future__ import annotations

import errno
import logging
import os

import pytest

from chunkd.backends.blobs import errors
from chunkd.domain.errors import StorageError, StorageFull


def test_running_out_of_file_descriptors_is_logged_once_a_minute(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    now = [1000.0]
    monkeypatch.setattr(errors.time, "monotonic", lambda: now[0])
    monkeypatch.setattr(errors, "_warned_at", float("-inf"))
    exhausted = OSError(errno.EMFILE, os.strerror(errno.EMFILE))
    with caplog.at_level(logging.WARNING, logger="chunkd.storage"):
        for _ in range(3):
            error = errors.storage_error(exhausted, "opening a part")
            assert type(error) is StorageError and "Too many open files" in error.message
        now[0] += 61
        errors.storage_error(OSError(errno.ENFILE, os.strerror(errno.ENFILE)), "opening a part")
        # Other faults say nothing here: their requests' 503s name them.
        assert isinstance(errors.storage_error(OSError(errno.ENOSPC, "full"), "writing"), StorageFull)
        errors.storage_error(OSError(errno.EIO, "I/O error"), "writing")
    warnings = [r.getMessage() for r in caplog.records if r.name == "chunkd.storage"]
    assert len(warnings) == 2 and all("ulimit -n" in w for w in warnings)
    assert warnings[0].startswith("Too many open files") and warnings[1].startswith("Too many open files in system")
