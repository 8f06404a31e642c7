"""``chunkd migrate``, and ``chunkd serve`` on a new data dir, make the database before the server
runs: private (the data dir 0700, the SQLite file 0600, as the server makes them) and current, so the
server does not import Alembic to migrate it."""

from __future__ import annotations

import stat
import subprocess
import sys
from pathlib import Path

from chunkd.backends.repository.sqlalchemy.database import HEAD_REVISION
from chunkd.cli.server import _migrate_embedded
from chunkd.settings import Settings
from tests.support.sqlite import schema_revision

CHUNKD = str(Path(sys.executable).parent / "chunkd")

# Starts the app on a data dir and prints whether Alembic was imported on the way.
SERVER_START = """
import asyncio, sys
from pathlib import Path
from chunkd.app import create_app
from chunkd.settings import Settings

async def main() -> None:
    app = create_app(Settings(data_dir=Path(sys.argv[1]), bootstrap_admin_key=False))
    async with app.router.lifespan_context(app):
        print("alembic" in sys.modules)

asyncio.run(main())
"""


def assert_private(data_dir: Path) -> None:
    assert stat.S_IMODE(data_dir.stat().st_mode) == 0o700
    assert stat.S_IMODE((data_dir / "chunkd.db").stat().st_mode) == 0o600


def imports_alembic_to_start(data_dir: Path) -> bool:
    done = subprocess.run(
        [sys.executable, "-c", SERVER_START, str(data_dir)], capture_output=True, text=True, timeout=240, check=True
    )
    return done.stdout.strip().splitlines()[-1] == "True"


def test_migrate_makes_a_private_current_database(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    subprocess.run([CHUNKD, "migrate", "--data-dir", str(data_dir)], capture_output=True, timeout=240, check=True)
    assert_private(data_dir)
    assert schema_revision(data_dir / "chunkd.db") == HEAD_REVISION


def test_serve_migrates_a_new_data_dir_so_the_server_never_imports_alembic(tmp_path: Path) -> None:
    fresh = tmp_path / "fresh"
    assert imports_alembic_to_start(fresh)  # a server left to migrate a new database itself does

    data_dir = tmp_path / "data"
    _migrate_embedded(Settings(data_dir=data_dir))
    assert_private(data_dir)
    assert schema_revision(data_dir / "chunkd.db") == HEAD_REVISION
    assert not imports_alembic_to_start(data_dir)


def test_serve_leaves_the_database_alone_when_told_not_to_migrate_on_start(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    _migrate_embedded(Settings(data_dir=data_dir, migrate_on_start=False))
    assert not (data_dir / "chunkd.db").exists()


def test_migrate_says_what_it_did_and_refuses_a_newer_schema_in_one_line(tmp_path: Path) -> None:
    """It printed "database is up to date" after migrating from nothing too; a schema made by a newer
    chunkd was a 126-line traceback (the server says it in one line)."""
    import sqlite3

    from typer.testing import CliRunner

    from chunkd.cli import app

    data_dir = tmp_path / "data"
    first = CliRunner().invoke(app, ["migrate", "--data-dir", str(data_dir)])
    assert first.exit_code == 0 and f"database migrated from nothing to schema {HEAD_REVISION}" in first.stdout
    again = CliRunner().invoke(app, ["migrate", "--data-dir", str(data_dir)])
    assert again.exit_code == 0 and f"database is up to date (schema {HEAD_REVISION})" in again.stdout
    with sqlite3.connect(data_dir / "chunkd.db") as db:
        db.execute("UPDATE alembic_version SET version_num = '9999_from_the_future'")
    newer = CliRunner().invoke(app, ["migrate", "--data-dir", str(data_dir)])
    assert newer.exit_code == 1, newer.output
    assert "made by a newer chunkd" in newer.output and "Traceback" not in newer.output
    assert len(newer.output.strip().splitlines()) <= 2  # one line (folded at most once by the terminal width)
