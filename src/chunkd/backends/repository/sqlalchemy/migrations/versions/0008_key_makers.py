"""API keys name the key that made them (``POST /v1/keys`` with a keys:admin credential), so an
owner can see, and revoke with it, what a leaked key made.

Revision ID: 0008_key_makers
Revises: 0007_link_keys
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008_key_makers"
down_revision = "0007_link_keys"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Nullable: keys made before this migration, by the operator's command line, or with an
    # identity provider's token name no key.
    with op.batch_alter_table("api_keys") as batch:
        batch.add_column(sa.Column("created_by", sa.String(32), nullable=True))
    op.create_index("ix_api_keys_created_by", "api_keys", ["created_by"])


def downgrade() -> None:
    op.drop_index("ix_api_keys_created_by", "api_keys")
    with op.batch_alter_table("api_keys") as batch:
        batch.drop_column("created_by")
