"""Running chunkd's Alembic revisions up to a given one, for tests of what a migration does to a
database made by an older version."""

from __future__ import annotations

from alembic import command
from alembic.config import Config
from sqlalchemy import Connection

from chunkd.backends.repository.sqlalchemy.database import MIGRATIONS

__all__ = ["upgrade_to"]


def upgrade_to(connection: Connection, revision: str) -> None:
    """Migrate the database behind ``connection`` to ``revision`` (for ``conn.run_sync``)."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["connection"] = connection
    command.upgrade(config, revision)
