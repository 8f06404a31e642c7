"""A bad setting stops ``chunkd serve`` with its name and what is wrong, not a traceback."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

CHUNKD = str(Path(sys.executable).parent / "chunkd")


def serve(tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [CHUNKD, "serve", "--data-dir", str(tmp_path / "data"), *args],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=240,
    )


def test_a_malformed_setting_is_named_with_its_variable(tmp_path: Path) -> None:
    done = serve(tmp_path, CHUNKD_PORT="abc")
    assert done.returncode == 2
    assert done.stderr.startswith("chunkd: port (CHUNKD_PORT): Input should be a valid integer")
    assert "Traceback" not in done.stderr + done.stdout
    assert not (tmp_path / "data").exists()  # nothing was made


def test_more_than_one_worker_under_granian_is_refused(tmp_path: Path) -> None:
    done = serve(tmp_path, "--workers", "2", "--server", "granian")
    assert done.returncode == 2
    assert "workers: more than one server process needs server=uvicorn" in done.stderr
