"""Every ``sh`` and ``python`` example of docs/client.md runs, in order, against a real ``chunkd serve``
(blocks marked ``no-test`` only set the variables this test provides)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.server import BIN, ChunkdServer

pytestmark = pytest.mark.e2e

DOC = Path(__file__).resolve().parents[2] / "docs" / "client.md"
FENCE = re.compile(r"^```(\w+)([^\n]*)\n(.*?)^```", re.DOTALL | re.MULTILINE)


def blocks(language: str) -> list[str]:
    return [body for lang, info, body in FENCE.findall(DOC.read_text()) if lang == language and "no-test" not in info]


def test_the_examples_of_docs_client_md_run(tmp_path: Path, e2e_server: ChunkdServer) -> None:
    shell, python = blocks("sh"), blocks("python")
    # Every scope the page's examples use: files, and upload links (chunkd links …).
    key = e2e_server.create_key("alice", "files:create,files:read,files:delete,links:admin")
    assert len(shell) >= 3 and len(python) >= 4
    env = {k: v for k, v in os.environ.items() if not k.startswith("CHUNKD_")}
    env.update(
        CHUNKD_URL=e2e_server.url,
        CHUNKD_KEY=key,
        XDG_STATE_HOME=str(tmp_path / "state"),
        PATH=f"{BIN}{os.pathsep}{env['PATH']}",
    )
    work = tmp_path / "work"
    work.mkdir()

    ran = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", "\n".join(shell)], cwd=work, env=env, capture_output=True, text=True
    )
    assert ran.returncode == 0, ran.stdout + ran.stderr
    assert "identical" in ran.stdout
    assert "video.mp4 →" in ran.stdout and '"status": "COMPLETED"' in ran.stdout

    ran = subprocess.run([sys.executable, "-c", "\n".join(python)], cwd=work, env=env, capture_output=True, text=True)
    assert ran.returncode == 0, ran.stdout + ran.stderr
    assert "404 not_found" in ran.stdout and "409 missing_parts" in ran.stdout
    assert "CANCELLED" in ran.stdout and "second.txt COMPLETED" in ran.stdout
    assert (work / "video-copy.mp4").read_bytes() == (work / "video.mp4").read_bytes()
