"""A migration of an SQLite database is one transaction, schema changes included: one that fails
half-way leaves the database exactly at its old revision, and runs whole once the cause is gone.
(Python's sqlite3 committed each ALTER on its own: a column added under the old revision made every
later start fail with "duplicate column name".)"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from alembic import command
from alembic.config import Config
from sqlalchemy.exc import OperationalError

from chunkd.backends.repository.sqlalchemy.database import HEAD_REVISION, MIGRATIONS, create_engine, migrate
from tests.support.sqlite import column_names, schema_revision


async def test_a_migration_failing_half_way_changes_nothing(tmp_path: Path) -> None:
    db = tmp_path / "chunkd.db"
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.set_main_option("sqlalchemy.url", f"sqlite:///{db}")
    engine = create_engine(f"sqlite:///{db}")
    try:
        async with engine.begin() as conn:  # the database as the release before 0008 left it
            await conn.run_sync(lambda sync: _upgrade_to(config, sync, "0007_link_keys"))
        # 0008 adds api_keys.created_by, then creates its index: an index of that name already
        # there fails the second step after the first has run.
        with sqlite3.connect(db) as conn:
            conn.execute("CREATE INDEX ix_api_keys_created_by ON api_keys(name)")
        with pytest.raises(OperationalError, match="already exists"):
            await migrate(engine)
        assert "created_by" not in column_names(db, "api_keys") and schema_revision(db) == "0007_link_keys"

        with sqlite3.connect(db) as conn:
            conn.execute("DROP INDEX ix_api_keys_created_by")
        await migrate(engine)
        assert "created_by" in column_names(db, "api_keys") and schema_revision(db) == HEAD_REVISION
    finally:
        await engine.dispose()


def _upgrade_to(config: Config, connection: object, revision: str) -> None:
    config.attributes["connection"] = connection
    command.upgrade(config, revision)
