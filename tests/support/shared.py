"""Services shared by every worker of one parallel test run (pytest-xdist), started by whichever
worker needs one first and stopped once by the controller when the whole run ends.

Without xdist (``pytest path/to/test_file.py``) there is one process: the session fixture starts
the service and stops it at its teardown, as before. Under xdist each worker is its own process with
its own session fixtures; a service that is costly to start (a Ceph cluster) is started once in a
directory under the run's temporary root (the parent of every worker's ``basetemp``), under a file
lock, and the other workers find it there. Its stop command is written beside it, and the controller
runs every such command in ``pytest_sessionfinish`` (``stop_all``), after the last worker is done.

Cheap services (PostgreSQL, clamd, ``chunkd serve``) stay per worker: no coordination, no sharing
of state between tests of different workers."""

from __future__ import annotations

import fcntl
import json
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

__all__ = ["SharedDir", "is_worker", "shared_dir", "stop_all"]

STOP_FILE = "stop.json"


def is_worker(config: pytest.Config) -> bool:
    """True in an xdist worker process (the controller and a plain run are not workers)."""
    return hasattr(config, "workerinput")


@dataclass(frozen=True)
class SharedDir:
    """Where one service lives; ``owned``: this process stops it (a plain run), else the controller."""

    path: Path
    owned: bool

    def on_run_end(self, argv: list[str]) -> None:
        """Record the command that stops the service; the controller runs it when the run ends."""
        if not self.owned:
            (self.path / STOP_FILE).write_text(json.dumps(argv))


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    # fcntl rather than the filelock package: Linux only is fine here, and nothing else needs it.
    with open(path, "a+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


@contextmanager
def shared_dir(
    name: str, request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[SharedDir]:
    """The directory of service ``name`` for this run, held exclusively while the ``with`` block
    starts (or finds) the service: one worker starts it, the others wait and then reuse it."""
    if not is_worker(request.config):
        yield SharedDir(tmp_path_factory.mktemp(name), owned=True)
        return
    root = tmp_path_factory.getbasetemp().parent  # the controller's basetemp, shared by all workers
    with _locked(root / f"{name}.lock"):
        directory = root / name
        directory.mkdir(exist_ok=True)
        yield SharedDir(directory, owned=False)


def stop_all(root: Path) -> None:
    """Run the stop command of every shared service started under ``root`` (the controller's
    basetemp), once every worker has finished."""
    for stop in sorted(root.glob(f"*/{STOP_FILE}")):
        subprocess.run(json.loads(stop.read_text()), check=False, timeout=120)
        stop.unlink()
