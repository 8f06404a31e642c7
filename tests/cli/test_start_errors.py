"""What a newcomer sees when ``chunkd`` cannot start or is run from the wrong place: one line naming
the problem and the option that fixes it, no traceback, and nothing made on the way (no data dir, no
bootstrap key, no "listening on" for a port another program holds)."""

from __future__ import annotations

import socket
from pathlib import Path
from typing import NoReturn

import pytest
from typer.testing import CliRunner

from chunkd.cli import app


@pytest.fixture(autouse=True)
def no_exec(monkeypatch: pytest.MonkeyPatch) -> None:
    """``serve`` ends by becoming the server (``os.execv``): here it stops with status 99 instead."""

    def execv(*args: object) -> NoReturn:
        raise SystemExit(99)

    monkeypatch.setattr("os.execv", execv)


def test_a_port_in_use_is_one_line_and_nothing_is_made(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = CliRunner().invoke(app, ["serve", "--port", str(port), "--data-dir", str(tmp_path / "data")])
    assert done.exit_code == 1, done.output
    assert done.stderr.strip() == (
        f"chunkd: port {port} on 127.0.0.1 is already in use (by another chunkd serve?): stop that, "
        "or choose another port with --port or CHUNKD_PORT"
    )
    assert "listening" not in done.stdout
    assert not (tmp_path / "data").exists()


@pytest.mark.parametrize("command", [["serve", "--port", "0"], ["keys", "list"], ["gc"], ["migrate"]])
def test_a_data_dir_that_is_a_file_is_named_not_a_traceback(tmp_path: Path, command: list[str]) -> None:
    (tmp_path / "taken").write_text("not a directory")
    for data_dir in (tmp_path / "taken", tmp_path / "taken" / "data"):
        done = CliRunner().invoke(app, [*command, "--data-dir", str(data_dir)])
        assert done.exit_code == 2, done.output
        assert done.stderr.strip() == (
            f"chunkd: data_dir (--data-dir, CHUNKD_DATA_DIR): cannot use {data_dir}: "
            f"{tmp_path / 'taken'} is not a directory"
        )
        assert done.exception is None or isinstance(done.exception, SystemExit)


def test_keys_create_says_when_it_made_a_database_of_its_own(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # From another directory than the server's, the key lands in a new database the server never reads.
    monkeypatch.chdir(tmp_path)
    done = CliRunner().invoke(app, ["keys", "create", "--owner", "alice"])
    assert done.exit_code == 0, done.output
    assert done.stdout.strip().splitlines()[-1].startswith("ck_")  # the key is still the last line
    assert "chunkd-data had no database, so a new one was made for this key" in done.stderr
    again = CliRunner().invoke(app, ["keys", "create", "--owner", "bob"])
    assert again.exit_code == 0 and again.stderr == ""


def test_migrate_of_a_database_elsewhere_needs_no_data_dir(tmp_path: Path) -> None:
    # e.g. `chunkd migrate` against PostgreSQL from a read-only container: the data dir is not used.
    (tmp_path / "taken").write_text("not a directory")
    database = tmp_path / "elsewhere.db"
    done = CliRunner().invoke(
        app,
        ["migrate", "--data-dir", str(tmp_path / "taken")],
        env={"CHUNKD_DATABASE_URL": f"sqlite:///{database}"},
    )
    assert done.exit_code == 0, done.output
    assert "database migrated from nothing to schema" in done.stdout and database.exists()


def test_keys_errors_go_to_stderr_so_a_pipe_never_takes_them_for_the_key(tmp_path: Path) -> None:
    # README: KEY=$(chunkd keys create --owner alice --scopes … | tail -n 1)
    done = CliRunner().invoke(
        app, ["keys", "create", "--owner", "alice", "--scopes", "files:write", "--data-dir", str(tmp_path)]
    )
    assert done.exit_code == 2
    assert done.stdout == "" and "error: unknown scope(s): files:write" in done.stderr
    revoked = CliRunner().invoke(app, ["keys", "revoke", "deadbeefdeadbeef", "--data-dir", str(tmp_path)])
    assert revoked.exit_code == 2
    assert revoked.stdout == "" and "no API key with id 'deadbeefdeadbeef'" in revoked.stderr


@pytest.mark.parametrize("command", [["keys", "list"], ["keys", "revoke", "k_none"], ["gc"]])
def test_a_command_on_a_data_dir_without_a_database_says_so_and_makes_none(tmp_path: Path, command: list[str]) -> None:
    # A mistyped --data-dir (or a server on PostgreSQL without CHUNKD_DATABASE_URL here) listed an
    # empty server and exited 0, leaving a new, empty database behind.
    done = CliRunner().invoke(app, [*command, "--data-dir", str(tmp_path / "typo")])
    assert done.exit_code == 2, done.output
    assert done.stderr.startswith(f"chunkd: {tmp_path / 'typo'} has no chunkd database"), done.stderr
    assert not (tmp_path / "typo" / "chunkd.db").exists()
