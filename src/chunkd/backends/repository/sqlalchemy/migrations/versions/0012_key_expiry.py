"""API keys may expire (``expires_at``): a key made with a credential that expires (an access
token, or a key that expires) expires no later than it, so a short-lived credential cannot make a
permanent one.

Nullable: every key made before this revision, and every key made by the operator or by a key
that never expires without asking for an expiry, never expires. A node of the previous version
(a rolling upgrade) ignores the column: it keeps serving a key past its expiry until it is upgraded.

Revision ID: 0012_key_expiry
Revises: 0011_endpoint_disabled_reason
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from chunkd.backends.repository.sqlalchemy.tables import UTCDateTime

revision = "0012_key_expiry"
down_revision = "0011_endpoint_disabled_reason"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("api_keys") as batch:
        batch.add_column(sa.Column("expires_at", UTCDateTime, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("api_keys") as batch:
        batch.drop_column("expires_at")
