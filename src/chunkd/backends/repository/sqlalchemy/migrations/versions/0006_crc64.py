"""CRC-64/NVME checksums: each part's (its integrity checksum, replacing a second MD5 pass per byte)
and the whole file's (combined from the parts' at completion).

Revision ID: 0006_crc64
Revises: 0002_media
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006_crc64"
down_revision = "0002_media"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("parts") as batch:
        batch.add_column(sa.Column("crc64", sa.String(16), nullable=False, server_default=""))
    with op.batch_alter_table("uploads") as batch:
        batch.add_column(sa.Column("crc64", sa.String(16), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("uploads") as batch:
        batch.drop_column("crc64")
    with op.batch_alter_table("parts") as batch:
        batch.drop_column("crc64")
