"""The outbox's history is kept for CHUNKD_EVENT_RETENTION_DAYS, not for ever: the reaper forgets
older events whose deliveries are all final. It finds them by age, and their deliveries by event.

Revision ID: 0010_event_retention
Revises: 0009_database_identity
"""

from __future__ import annotations

from alembic import op

revision = "0010_event_retention"
down_revision = "0009_database_identity"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_events_created_at", "events", ["created_at"])
    op.create_index("ix_webhook_deliveries_event", "webhook_deliveries", ["event_id"])


def downgrade() -> None:
    op.drop_index("ix_webhook_deliveries_event", table_name="webhook_deliveries")
    op.drop_index("ix_events_created_at", table_name="events")
