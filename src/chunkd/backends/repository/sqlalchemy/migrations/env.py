"""Alembic environment: always run programmatically with a connection handed in by
``chunkd.backends.repository.sqlalchemy.migrate`` (no alembic.ini needed)."""

from __future__ import annotations

from alembic import context

from chunkd.backends.repository.sqlalchemy.tables import metadata

connection = context.config.attributes["connection"]
context.configure(
    connection=connection,
    target_metadata=metadata,
    render_as_batch=connection.dialect.name == "sqlite",
)
with context.begin_transaction():
    context.run_migrations()
