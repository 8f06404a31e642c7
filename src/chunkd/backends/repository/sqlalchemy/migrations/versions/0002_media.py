"""Media records: integer ids for uploads published through the media API.

Revision ID: 0002_media
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from chunkd.backends.repository.sqlalchemy.tables import UTCDateTime

revision = "0002_media"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "media",
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
        sa.UniqueConstraint("upload_id", name="uq_media_upload_id"),
    )
    op.create_index("ix_media_owner", "media", ["owner"])


def downgrade() -> None:
    op.drop_index("ix_media_owner", "media")
    op.drop_table("media")
