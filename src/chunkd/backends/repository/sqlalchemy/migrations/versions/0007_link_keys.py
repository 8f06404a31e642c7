"""Upload links name the API key they were made with, so revoking that key revokes them too.

Revision ID: 0007_link_keys
Revises: 0005_webhooks
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007_link_keys"
down_revision = "0005_webhooks"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Nullable: links made before this migration, or with an identity provider's token, name no key.
    with op.batch_alter_table("upload_links") as batch:
        batch.add_column(sa.Column("key_id", sa.String(64), nullable=True))
    op.create_index("ix_upload_links_key", "upload_links", ["key_id"])


def downgrade() -> None:
    op.drop_index("ix_upload_links_key", "upload_links")
    with op.batch_alter_table("upload_links") as batch:
        batch.drop_column("key_id")
