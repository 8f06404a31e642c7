"""Media ids are never handed out twice, and a media record keeps the type its content was
inspected to be.

On SQLite an ``INTEGER PRIMARY KEY`` without ``AUTOINCREMENT`` reuses the highest id once its row
is deleted, so a media id (and any URL naming it) could come to name another owner's file. The
table is rebuilt with ``AUTOINCREMENT`` (SQLite cannot add it in place), keeping every row, and
``sqlite_sequence`` is seeded with the highest id present. PostgreSQL's sequence never goes back,
so there only the column is added.

Revision ID: 0003
Revises: 0006_crc64
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from alembic import op

from chunkd.backends.repository.sqlalchemy.tables import UTCDateTime

revision = "0003"
down_revision = "0006_crc64"
branch_labels = None
depends_on = None


COLUMNS = 'id, upload_id, owner, type, image_width, image_height, "order", added_at'


def _create_media(name: str, *, autoincrement: bool, with_mime_type: bool) -> None:
    """The media table as of this revision, under ``name`` (a copy: tables.py moves on)."""
    columns: list[Any] = [
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column(
            "upload_id",
            sa.String(64),
            sa.ForeignKey("uploads.id", ondelete="CASCADE", name="fk_media_upload_id"),
            nullable=False,
        ),
        sa.Column("owner", sa.String(128), nullable=False),
        sa.Column("type", sa.String(16), nullable=False),
        sa.Column("image_width", sa.Integer, nullable=True),
        sa.Column("image_height", sa.Integer, nullable=True),
        sa.Column("order", sa.Integer, nullable=False),
        sa.Column("added_at", UTCDateTime, nullable=False),
    ]
    if with_mime_type:
        columns.append(sa.Column("mime_type", sa.String(255), nullable=True))
    columns.append(sa.UniqueConstraint("upload_id", name="uq_media_upload_id"))
    op.create_table(name, *columns, sqlite_autoincrement=autoincrement)


def _swap(new: str) -> None:
    op.drop_index("ix_media_owner", "media")
    op.drop_table("media")
    op.rename_table(new, "media")
    op.create_index("ix_media_owner", "media", ["owner"])


def upgrade() -> None:
    if op.get_bind().dialect.name != "sqlite":
        op.add_column("media", sa.Column("mime_type", sa.String(255), nullable=True))
        return
    # SQLite cannot add AUTOINCREMENT in place: a new table, the rows copied, then swapped in.
    _create_media("media_0003", autoincrement=True, with_mime_type=True)
    op.execute(f"INSERT INTO media_0003 ({COLUMNS}) SELECT {COLUMNS} FROM media")
    _swap("media_0003")
    op.execute("DELETE FROM sqlite_sequence WHERE name IN ('media', 'media_0003')")
    op.execute("INSERT INTO sqlite_sequence (name, seq) SELECT 'media', COALESCE(MAX(id), 0) FROM media")


def downgrade() -> None:
    if op.get_bind().dialect.name != "sqlite":
        op.drop_column("media", "mime_type")
        return
    _create_media("media_0002", autoincrement=False, with_mime_type=False)
    op.execute(f"INSERT INTO media_0002 ({COLUMNS}) SELECT {COLUMNS} FROM media")
    _swap("media_0002")
