"""A migrated SQLite database made once and copied per test: a file copy costs far less than
running every Alembic revision again (each a committed, fsynced transaction)."""

from __future__ import annotations

import asyncio
import atexit
import functools
import os
import shutil
import sqlite3
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from chunkd.backends.repository.sqlalchemy.database import create_engine, migrate

__all__ = ["column_names", "copy_sqlite", "migrated_sqlite", "process_template", "schema_revision", "table_names"]

DB_NAME = "chunkd.db"  # the file Settings uses in its data dir when no database URL is given


def migrated_sqlite(path: Path) -> Path:
    """Create ``path`` at the latest migration. The engine is disposed before returning, so the
    WAL is checkpointed into the main file and the file alone is the whole database."""

    async def upgrade() -> None:
        engine = create_engine(f"sqlite:///{path}")
        try:
            await migrate(engine)
        finally:
            await engine.dispose()

    # A thread of its own: the first test to ask may be running an event loop already.
    with ThreadPoolExecutor(1) as pool:
        pool.submit(asyncio.run, upgrade()).result()
    return path


@functools.cache
def process_template() -> Path:
    """One migrated database for this test process, removed when it exits: for code that is not a
    fixture (a server started on a new data dir, see tests/support/server.py)."""
    directory = Path(tempfile.mkdtemp(prefix="chunkd-template-"))
    atexit.register(shutil.rmtree, directory, ignore_errors=True)
    return migrated_sqlite(directory / DB_NAME)


def copy_sqlite(template: Path, data_dir: Path, name: str = DB_NAME) -> Path:
    """``template`` copied into ``data_dir`` (made private, as the server makes it) as ``name``."""
    data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    target = data_dir / name
    shutil.copyfile(template, target)
    os.chmod(target, 0o600)
    return target


def schema_revision(database: Path) -> str:
    """The Alembic revision an SQLite file is at."""
    with sqlite3.connect(database) as conn:
        return str(conn.execute("SELECT version_num FROM alembic_version").fetchone()[0])


def table_names(database: Path) -> set[str]:
    with sqlite3.connect(database) as conn:
        return {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}


def column_names(database: Path, table: str) -> set[str]:
    with sqlite3.connect(database) as conn:
        return {row[1] for row in conn.execute(f"PRAGMA table_info({table})")}
