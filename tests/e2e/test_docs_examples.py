"""Every example in README.md and docs/ is run against a live ``chunkd serve``: the shell blocks in one
bash per document (variables a block sets carry on to the next, as in a terminal), the Python blocks
with the test's interpreter. Only the port is substituted (``127.0.0.1:8080`` → the test server's);
``$KEY`` is an API key with every scope unless a block makes its own, ``.venv/bin/chunkd`` and
``chunkd`` are the installed command, pointed at the server's data directory. ``curl`` fails on an
HTTP error status, so an example that gets a 4xx fails here as it would for a reader.

Blocks marked ``<!-- docs-test: skip reason -->`` are listed with their reason, never silently left
out (``tests/support/docblocks.py``)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from chunkd.auth.principal import SCOPES
from tests.support.docblocks import Block, blocks_of, documents
from tests.support.server import ChunkdServer

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
ALL_SCOPES = ",".join(sorted(SCOPES))
# A reader pastes into an interactive shell; here a failing command must fail the block. curl
# answers an HTTP error with exit status 0 unless asked, so it is asked.
PRELUDE = """set -euo pipefail
set -a
curl() { command curl --fail-with-body --silent --show-error "$@"; }
"""


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ChunkdServer]:
    base = tmp_path_factory.mktemp("docs-server")
    with ChunkdServer(base / "data", env={"CHUNKD_FSYNC": "false"}) as running:
        yield running


def _substitute(code: str, port: int) -> str:
    for address in ("127.0.0.1:8080", "localhost:8080"):
        code = code.replace(address, f"127.0.0.1:{port}")
    return code


def _workspace(tmp: Path, server: ChunkdServer, key: str) -> tuple[Path, dict[str, str]]:
    """A directory to run a document's examples in, with ``.venv/bin`` as after ``make serve``."""
    work = tmp / "work"
    (work / ".venv").mkdir(parents=True)
    (work / ".venv" / "bin").symlink_to(BIN)
    env = {
        **os.environ,
        "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        "CHUNKD_DATA_DIR": str(server.data_dir),
        "CHUNKD_URL": server.url,
        "CHUNKD_KEY": key,
        "KEY": key,
        "XDG_STATE_HOME": str(work / ".state"),  # the client's resume records, private to this run
        "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(ROOT), os.environ.get("PYTHONPATH", "")]),
    }
    return work, env


def _run_shell(
    block: Block, code: str, work: Path, env: dict[str, str], state: Path
) -> subprocess.CompletedProcess[str]:
    script = work / f".block-{block.line}.sh"
    restore = f"source {state}\n" if state.exists() else ""
    # Variables the block sets are saved for the next block (set -a exports every assignment).
    script.write_text(f"{PRELUDE}{restore}{code}\nexport -p > {state}\n")
    return subprocess.run(
        ["bash", str(script)], cwd=work, env=env, capture_output=True, text=True, timeout=180, check=False
    )


# The Python blocks of a document run in one interpreter, one after the other in one namespace (as in
# a REPL session), so a block may use what an earlier one defined; each is reported on its own.
PYTHON_SESSION = """
import json, sys, traceback
namespace = {"__name__": "__main__"}
for number, code in enumerate(json.load(open(sys.argv[1]))):
    print(f"@@block {number}", flush=True)
    try:
        exec(compile(code, f"<block {number}>", "exec"), namespace)
    except BaseException:
        traceback.print_exc()
        print(f"@@failed {number}", flush=True)
        sys.exit(1)
"""


class PythonSession:
    """The Python blocks of one document, run together on first use."""

    def __init__(self, blocks: list[str], work: Path, env: dict[str, str]) -> None:
        self.blocks, self.work, self.env = blocks, work, env
        self.failed: int | None = None
        self.output = ""
        self.started = False

    def result(self, index: int) -> tuple[bool, str]:
        if not self.started:
            self.started = True
            source = self.work / ".python-blocks.json"
            source.write_text(json.dumps(self.blocks))
            done = subprocess.run(
                [sys.executable, "-c", PYTHON_SESSION, str(source)],
                cwd=self.work,
                env=self.env,
                capture_output=True,
                text=True,
                timeout=600,
                check=False,
            )
            self.output = done.stdout[-3000:] + "\n--- stderr ---\n" + done.stderr[-3000:]
            failed = [int(n) for n in re.findall(r"^@@failed (\d+)$", done.stdout, re.M)]
            self.failed = failed[0] if failed else (None if done.returncode == 0 else 0)
        return (self.failed is None or index < self.failed), self.output


def _run_document(path: Path, server: ChunkdServer, key: str, tmp: Path) -> tuple[list[str], list[str], list[str]]:
    """(ran, skipped, failed) descriptions for one document's blocks."""
    ran: list[str] = []
    skipped: list[str] = []
    failed: list[str] = []
    work, env = _workspace(tmp, server, key)
    state = work / ".shell-state"
    blocks = blocks_of(path)
    python_blocks = [b for b in blocks if b.language == "python" and b.skip is None]
    python = PythonSession([_substitute(b.code, server.port) for b in python_blocks], work, env)
    for block in blocks:
        if block.skip is not None:
            skipped.append(f"{block.where} ({block.language}): {block.skip}")
            continue
        code = _substitute(block.code, server.port)
        if block.language == "sh":
            done = _run_shell(block, code, work, env, state)
            ok, output = done.returncode == 0, f"{done.stdout[-3000:]}\n--- stderr ---\n{done.stderr[-3000:]}"
        else:
            ok, output = python.result(python_blocks.index(block))
        if ok:
            ran.append(f"{block.where} ({block.language})")
        else:
            failed.append(f"{block.where} ({block.language}) failed\n--- code ---\n{code}\n--- output ---\n{output}")
            break  # later blocks of the document build on this one
    return ran, skipped, failed


@pytest.mark.e2e
@pytest.mark.parametrize("document", documents(ROOT), ids=lambda path: str(path.relative_to(ROOT)))
def test_every_docs_example_runs(
    server: ChunkdServer, document: Path, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """One document at a time, so that the test workers share them (all of them in one test took
    90 s on one worker while the others were idle)."""
    key = server.create_key("alice", ALL_SCOPES)
    ran, skipped, failed = _run_document(document, server, key, tmp_path / "doc")
    summary = "\n".join(
        [f"docs examples of {document.name}: {len(ran)} ran, {len(skipped)} skipped, {len(failed)} failed"]
        + [f"  ran      {item}" for item in ran]
        + [f"  skipped  {item}" for item in skipped]
    )
    request.node.add_report_section("call", "docs examples", summary)
    print(summary)
    assert not failed, summary + "\n\n" + "\n\n".join(failed)


def test_docs_blocks_are_found_and_skips_give_reasons() -> None:
    """The extraction itself: README's examples are found, every skip has a reason."""
    blocks = [block for path in documents(ROOT) for block in blocks_of(path)]
    assert any(block.path.name == "README.md" and block.skip is None for block in blocks)
    assert all(block.skip for block in blocks if block.skip is not None)
