"""Why a webhook endpoint is disabled (failing for long, its receiver answered 410 Gone, or its
owner disabled it), shown to its owner beside ``disabledAt``.

Endpoints disabled before this revision did not keep the reason: one that was failing when it was
disabled is taken as disabled for failing, any other as disabled by its owner.

Revision ID: 0011_endpoint_disabled_reason
Revises: 0010_event_retention
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0011_endpoint_disabled_reason"
down_revision = "0010_event_retention"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("webhook_endpoints") as batch:
        batch.add_column(sa.Column("disabled_reason", sa.String(16), nullable=True))
    op.execute(
        "UPDATE webhook_endpoints SET disabled_reason = "
        "CASE WHEN failing_since IS NOT NULL THEN 'failing' ELSE 'owner' END "
        "WHERE disabled_at IS NOT NULL"
    )


def downgrade() -> None:
    with op.batch_alter_table("webhook_endpoints") as batch:
        batch.drop_column("disabled_reason")
