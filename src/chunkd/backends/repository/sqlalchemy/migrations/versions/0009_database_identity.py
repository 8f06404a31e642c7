"""A database knows its own id, so that a blob store can name the database it belongs to: an
orphan sweep against a store by a database that is not its own (lost and made anew, restored
later, a wrong CHUNKD_DATABASE_URL or --data-dir) would take every stored blob for an orphan.

Revision ID: 0009_database_identity
Revises: 0008_key_makers
"""

from __future__ import annotations

import secrets

import sqlalchemy as sa
from alembic import op

revision = "0009_database_identity"
down_revision = "0008_key_makers"
branch_labels = None
depends_on = None


def upgrade() -> None:
    table = op.create_table("database_identity", sa.Column("id", sa.String(64), primary_key=True))
    op.bulk_insert(table, [{"id": "db_" + secrets.token_hex(16)}])


def downgrade() -> None:
    op.drop_table("database_identity")
