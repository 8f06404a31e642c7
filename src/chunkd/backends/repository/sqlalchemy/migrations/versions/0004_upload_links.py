"""Upload links: a partner uploads into an owner's files through a URL, within the link's limits.

Revision ID: 0004_upload_links
Revises: 0003
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from chunkd.backends.repository.sqlalchemy.tables import UTCDateTime

revision = "0004_upload_links"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "upload_links",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("owner", sa.String(128), nullable=False),
        sa.Column("secret_hash", sa.String(64), nullable=False),
        sa.Column("created_at", UTCDateTime, nullable=False),
        sa.Column("expires_at", UTCDateTime, nullable=False),
        sa.Column("revoked_at", UTCDateTime, nullable=True),
        sa.Column("max_bytes", sa.BigInteger, nullable=True),
        sa.Column("max_files", sa.Integer, nullable=True),
        sa.Column("files_uploaded", sa.Integer, nullable=False),
        sa.Column("bytes_uploaded", sa.BigInteger, nullable=False),
        sa.Column("allowed_mime_types", sa.JSON, nullable=True),
        sa.Column("note", sa.String(1024), nullable=True),
    )
    op.create_index("ix_upload_links_owner_created", "upload_links", ["owner", "created_at"])


def downgrade() -> None:
    op.drop_index("ix_upload_links_owner_created", "upload_links")
    op.drop_table("upload_links")
