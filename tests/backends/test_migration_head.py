"""Start-up skips Alembic for a database already at ``HEAD_REVISION``: that constant must be
Alembic's head, and a database behind it is still migrated."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from alembic.config import Config
from alembic.script import ScriptDirectory

from chunkd.backends.repository.sqlalchemy.database import (
    HEAD_REVISION,
    KNOWN_REVISIONS,
    MIGRATIONS,
    SchemaMismatch,
    check_schema,
    create_engine,
    migrate,
)
from tests.support.sqlite import column_names, schema_revision, table_names


def test_head_revision_is_alembics_head() -> None:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    scripts = ScriptDirectory.from_config(config)
    assert scripts.get_current_head() == HEAD_REVISION
    # The revisions known without Alembic (from the files' names) are Alembic's own.
    assert {script.revision for script in scripts.walk_revisions()} == KNOWN_REVISIONS


async def test_a_node_that_does_not_migrate_refuses_an_older_schema_and_runs_on_a_newer(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    database = tmp_path / "m.db"
    engine = create_engine(f"sqlite:///{database}")
    try:
        with pytest.raises(SchemaMismatch, match=r"schema is not there.*run `chunkd migrate`"):
            await check_schema(engine)  # a new, empty database
        await migrate(engine)
        await check_schema(engine)
        with sqlite3.connect(database) as conn:
            conn.execute("UPDATE alembic_version SET version_num = '0007_link_keys'")
        with pytest.raises(SchemaMismatch, match="at 0007_link_keys; this chunkd needs " + HEAD_REVISION):
            await check_schema(engine)
        # A newer version's schema: run on it (an old node during a rolling upgrade), saying so;
        # migrating it is refused in one sentence, not Alembic's "Can't locate revision" traceback.
        with sqlite3.connect(database) as conn:
            conn.execute("UPDATE alembic_version SET version_num = '9999_from_the_future'")
        await check_schema(engine)
        assert "newer chunkd" in caplog.text and "rolling upgrade" in caplog.text
        with pytest.raises(SchemaMismatch, match=r"made by a newer chunkd.*CHUNKD_MIGRATE_ON_START=false"):
            await migrate(engine)
        assert schema_revision(database) == "9999_from_the_future"
    finally:
        await engine.dispose()


WEBHOOK_TABLES = {"events", "webhook_endpoints", "webhook_deliveries"}  # what 0005_webhooks creates
LINK_KEY = "key_id"  # the column 0007_link_keys adds to upload_links
KEY_MAKER = "created_by"  # the column 0008_key_makers adds to api_keys
KEY_EXPIRY = "expires_at"  # the column 0012_key_expiry adds to api_keys


async def test_a_database_behind_head_is_migrated(tmp_path: Path) -> None:
    database = tmp_path / "m.db"
    engine = create_engine(f"sqlite:///{database}")
    try:
        await migrate(engine)
        await engine.dispose()
        assert schema_revision(database) == HEAD_REVISION and table_names(database) >= WEBHOOK_TABLES
        assert LINK_KEY in column_names(database, "upload_links") and KEY_MAKER in column_names(database, "api_keys")
        # Undo the four newest migrations by hand: the next start-up must see it is behind and apply them.
        with sqlite3.connect(database) as conn:
            conn.execute(f"ALTER TABLE api_keys DROP COLUMN {KEY_EXPIRY}")
            conn.execute("DROP TABLE database_identity")
            conn.execute("DROP INDEX ix_api_keys_created_by")
            conn.execute(f"ALTER TABLE api_keys DROP COLUMN {KEY_MAKER}")
            conn.execute("DROP INDEX ix_upload_links_key")
            conn.execute(f"ALTER TABLE upload_links DROP COLUMN {LINK_KEY}")
            for table in ("webhook_deliveries", "webhook_endpoints", "events"):
                conn.execute(f"DROP TABLE {table}")
            conn.execute("UPDATE alembic_version SET version_num = '0004_upload_links'")
        await migrate(engine)
        await engine.dispose()
        assert schema_revision(database) == HEAD_REVISION and table_names(database) >= WEBHOOK_TABLES
        assert LINK_KEY in column_names(database, "upload_links") and KEY_MAKER in column_names(database, "api_keys")
        assert KEY_EXPIRY in column_names(database, "api_keys")
        await migrate(engine)  # at head: nothing to do, nothing changes
        assert schema_revision(database) == HEAD_REVISION
    finally:
        await engine.dispose()
