"""A webhook endpoint's previous signing secret and until when it still signs: an owner rotating
the secret has every delivery signed with both for a while, so the receiver can switch without
rejecting any.

Revision ID: 0013_endpoint_secret_rotation
Revises: 0012_key_expiry
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from chunkd.backends.repository.sqlalchemy.tables import UTCDateTime

revision = "0013_endpoint_secret_rotation"
down_revision = "0012_key_expiry"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("webhook_endpoints") as batch:
        batch.add_column(sa.Column("previous_secret", sa.String(128), nullable=True))
        batch.add_column(sa.Column("previous_secret_until", UTCDateTime, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("webhook_endpoints") as batch:
        batch.drop_column("previous_secret_until")
        batch.drop_column("previous_secret")
