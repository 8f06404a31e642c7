"""``chunkd keys list`` shows whole ids, piped or on a narrow terminal, and ``keys revoke`` takes what
it shows (or the whole key)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

CHUNKD = str(Path(sys.executable).parent / "chunkd")


def run(data_dir: Path, *args: str) -> str:
    """What the command printed to its standard output, a pipe (not a terminal). Run in this
    process: a ``chunkd`` process costs a second of CPU importing the app, at each call (these tests
    made 20); a real process on a real terminal is ``on_a_terminal``'s."""
    from typer.testing import CliRunner

    from chunkd.cli import app

    done = CliRunner().invoke(app, [*args, "--data-dir", str(data_dir)])
    assert done.exit_code == 0, (done.output, done.exception)
    return done.stdout


def on_a_terminal(data_dir: Path, *args: str, columns: int) -> str:
    """Run with stdout on a pseudo-terminal of ``columns`` columns."""
    primary, secondary = os.openpty()
    env = {**os.environ, "COLUMNS": str(columns), "TERM": "dumb"}
    try:
        process = subprocess.Popen([CHUNKD, *args, "--data-dir", str(data_dir)], stdout=secondary, env=env)
        os.close(secondary)
        output = b""
        while True:
            try:
                chunk = os.read(primary, 65536)
            except OSError:  # EIO: the child closed the terminal
                break
            if not chunk:
                break
            output += chunk
        assert process.wait(timeout=240) == 0
    finally:
        os.close(primary)
    return re.sub(r"\x1b\[[0-9;]*m", "", output.decode())


def test_piped_list_prints_whole_ids_that_revoke_accepts(tmp_path: Path) -> None:
    key = run(tmp_path, "keys", "create", "--owner", "alice", "--name", "a\tlabel").strip().splitlines()[-1]
    run(tmp_path, "keys", "create", "--owner", "a-rather-long-owner-name-for-a-narrow-pipe")
    lines = run(tmp_path, "keys", "list").splitlines()
    rows = [line.split("\t") for line in lines]
    # The 7th: the key that made it (none here); the 8th: when it expires (never here).
    assert len(rows) == 2 and all(len(row) == 8 for row in rows)
    ids = [row[0] for row in rows]
    assert all(re.fullmatch(r"[0-9a-f]{16}", key_id) for key_id in ids)
    assert key.startswith(f"ck_{ids[0]}_") or key.startswith(f"ck_{ids[1]}_")
    run(tmp_path, "keys", "revoke", ids[1])
    listed = json.loads(run(tmp_path, "keys", "list", "--json"))
    assert {row["id"] for row in listed} == set(ids)
    assert set(listed[0]) == {"id", "owner", "scopes", "createdAt", "revokedAt", "name", "createdBy", "expiresAt"}
    assert [row["revokedAt"] is not None for row in listed] == [False, True]
    # The whole key works as well as its id.
    run(tmp_path, "keys", "revoke", key)
    assert all(row["revokedAt"] for row in json.loads(run(tmp_path, "keys", "list", "--json")))


def test_narrow_terminal_never_cuts_the_id(tmp_path: Path) -> None:
    run(tmp_path, "keys", "create", "--owner", "someone-with-a-long-name", "--name", "a long descriptive label")
    key_id = json.loads(run(tmp_path, "keys", "list", "--json"))[0]["id"]
    table = on_a_terminal(tmp_path, "keys", "list", columns=60)
    assert key_id in table, table


def test_names_are_shown_verbatim_on_a_terminal(tmp_path: Path) -> None:
    # A key's name can be chosen through the API (POST /v1/keys): never read as the table's markup.
    run(tmp_path, "keys", "create", "--owner", "bob", "--name", "[i]k")
    table = on_a_terminal(tmp_path, "keys", "list", columns=200)
    assert "[i]k" in table, table


def test_revoke_cascade_names_every_key_it_revoked(tmp_path: Path) -> None:
    """It printed only the key named, though the keys that key had made went with it."""
    import asyncio

    from typer.testing import CliRunner

    from chunkd.cli import app
    from chunkd.cli.common import with_runtime
    from chunkd.settings import Settings

    settings = Settings(data_dir=tmp_path / "data", bootstrap_admin_key=False)

    async def make(runtime: Any) -> tuple[str, str, str, str]:
        parent, _ = await runtime.keys.create("alice", "keys:admin,files:create")
        child, _ = await runtime.keys.create("alice", "files:create", created_by=parent.id)
        grandchild, _ = await runtime.keys.create("alice", "files:create", created_by=child.id)
        bystander, _ = await runtime.keys.create("alice", "files:create")
        return parent.id, child.id, grandchild.id, bystander.id

    parent, child, grandchild, bystander = asyncio.run(with_runtime(settings, make, may_create=True))
    done = CliRunner().invoke(app, ["keys", "revoke", parent, "--cascade", "--data-dir", str(settings.data_dir)])
    assert done.exit_code == 0, done.output
    assert done.output.splitlines()[0] == f"revoked {parent}"
    assert {child, grandchild} == {line.split()[1] for line in done.output.splitlines()[1:]}
    assert bystander not in done.output


def test_an_operator_can_make_a_key_that_expires(tmp_path: Path) -> None:
    """Keys could not expire; a key made over the API may now, and the operator sees when."""
    run(tmp_path, "keys", "create", "--owner", "alice", "--expires-in", "3600")
    run(tmp_path, "keys", "create", "--owner", "alice")
    listed = json.loads(run(tmp_path, "keys", "list", "--json"))
    assert listed[0]["expiresAt"] is not None and listed[1]["expiresAt"] is None
    assert run(tmp_path, "keys", "list").splitlines()[0].split("\t")[7] == listed[0]["expiresAt"]
