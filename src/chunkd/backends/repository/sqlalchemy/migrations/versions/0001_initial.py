"""Initial schema: uploads, parts, api_keys.

Revision ID: 0001
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from chunkd.backends.repository.sqlalchemy.tables import UTCDateTime

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "uploads",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("owner", sa.String(128), nullable=False),
        sa.Column("frontend", sa.String(32), nullable=False),
        sa.Column("client_ref", sa.String(128), nullable=True),
        sa.Column("filename", sa.String(1024), nullable=False),
        sa.Column("mime_type", sa.String(255), nullable=False),
        sa.Column("size_bytes", sa.BigInteger, nullable=True),
        sa.Column("part_size", sa.BigInteger, nullable=False),
        sa.Column("mode", sa.String(8), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("created_at", UTCDateTime, nullable=False),
        sa.Column("updated_at", UTCDateTime, nullable=False),
        sa.Column("expires_at", UTCDateTime, nullable=True),
        sa.Column("completed_at", UTCDateTime, nullable=True),
        sa.Column("declared_md5", sa.String(32), nullable=True),
        sa.Column("md5", sa.String(32), nullable=True),
        sa.Column("bytes_received", sa.BigInteger, nullable=False),
        sa.Column("parts_received", sa.Integer, nullable=False),
        sa.Column("hash_offset", sa.BigInteger, nullable=False),
        sa.Column("hash_state", sa.LargeBinary, nullable=True),
        sa.Column("meta", sa.JSON, nullable=False),
        sa.UniqueConstraint("owner", "frontend", "client_ref", name="uq_uploads_client_ref"),
    )
    op.create_index("ix_uploads_owner_created", "uploads", ["owner", "created_at", "id"])
    op.create_index("ix_uploads_status_expires", "uploads", ["status", "expires_at"])
    op.create_table(
        "parts",
        sa.Column("upload_id", sa.String(64), sa.ForeignKey("uploads.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("number", sa.Integer, primary_key=True),
        sa.Column("offset", sa.BigInteger, nullable=False),
        sa.Column("size", sa.BigInteger, nullable=False),
        sa.Column("md5", sa.String(32), nullable=False),
        sa.Column("blob_ref", sa.String(255), nullable=False),
        sa.Column("hash_state", sa.LargeBinary, nullable=True),
        sa.Column("created_at", UTCDateTime, nullable=False),
    )
    op.create_table(
        "api_keys",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("owner", sa.String(128), nullable=False),
        sa.Column("scopes", sa.String(512), nullable=False),
        sa.Column("secret_hash", sa.String(128), nullable=False),
        sa.Column("name", sa.String(128), nullable=True),
        sa.Column("created_at", UTCDateTime, nullable=False),
        sa.Column("revoked_at", UTCDateTime, nullable=True),
    )
    op.create_index("ix_api_keys_owner", "api_keys", ["owner"])


def downgrade() -> None:
    op.drop_table("api_keys")
    op.drop_table("parts")
    op.drop_index("ix_uploads_status_expires", "uploads")
    op.drop_index("ix_uploads_owner_created", "uploads")
    op.drop_table("uploads")
