"""Running chunkd's Alembic revisions up to a given one, and comparing a migrated database with
``tables.metadata``, for tests of what a migration does to a database made by an older version."""

from __future__ import annotations

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.migration import MigrationContext
from sqlalchemy import Connection

from chunkd.backends.repository.sqlalchemy.database import MIGRATIONS
from chunkd.backends.repository.sqlalchemy.tables import metadata

__all__ = ["schema_diffs", "upgrade_to"]


def upgrade_to(connection: Connection, revision: str) -> None:
    """Migrate the database behind ``connection`` to ``revision`` (for ``conn.run_sync``)."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["connection"] = connection
    command.upgrade(config, revision)


def schema_diffs(connection: Connection, table: str) -> list[object]:
    """How the database behind ``connection`` differs from ``tables.metadata`` where ``table`` is
    named (types compared too); empty when the migrations made it as the tables describe it."""
    context = MigrationContext.configure(connection, opts={"compare_type": True})
    return [d for d in compare_metadata(context, metadata) if table in repr(d)]
