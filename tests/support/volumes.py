"""A small file system of its own for a test that fills it: a tmpfs, mounted under the test's
directory and unmounted afterwards. Needs root; the test is skipped where it cannot mount."""

from __future__ import annotations

import contextlib
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

__all__ = ["tmpfs"]


@contextlib.contextmanager
def tmpfs(under: Path, size: str) -> Iterator[Path]:
    """A tmpfs of ``size`` (mount's notation: ``8M``) at ``under/volume``."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    mount = under / "volume"
    mount.mkdir()
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(mount)], capture_output=True)
    if result.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {result.stderr.decode().strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)
