"""Table definitions (SQLAlchemy Core). The Alembic migrations are the source of truth for the
schema; these mirror them for queries, and a test checks the two agree."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    UniqueConstraint,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.types import TypeDecorator

__all__ = [
    "api_keys",
    "events",
    "media",
    "metadata",
    "parts",
    "upload_links",
    "uploads",
    "webhook_deliveries",
    "webhook_endpoints",
]


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on every database (SQLite stores them naive)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> Any:
        if value is None:
            return None
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        when: datetime = value
        return when.replace(tzinfo=UTC) if when.tzinfo is None else when.astimezone(UTC)


metadata = MetaData()

uploads = Table(
    "uploads",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("owner", String(128), nullable=False),
    Column("frontend", String(32), nullable=False),
    Column("client_ref", String(128), nullable=True),
    Column("filename", String(1024), nullable=False),
    Column("mime_type", String(255), nullable=False),
    Column("size_bytes", BigInteger, nullable=True),
    Column("part_size", BigInteger, nullable=False),
    Column("mode", String(8), nullable=False),
    Column("status", String(16), nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
    Column("expires_at", UTCDateTime, nullable=True),
    Column("completed_at", UTCDateTime, nullable=True),
    Column("declared_md5", String(32), nullable=True),
    Column("md5", String(32), nullable=True),
    Column("bytes_received", BigInteger, nullable=False),
    Column("parts_received", Integer, nullable=False),
    Column("hash_offset", BigInteger, nullable=False),
    Column("hash_state", LargeBinary, nullable=True),
    Column("meta", JSON, nullable=False),
    Column("crc64", String(16), nullable=True),
    UniqueConstraint("owner", "frontend", "client_ref", name="uq_uploads_client_ref"),
    Index("ix_uploads_owner_created", "owner", "created_at", "id"),
    Index("ix_uploads_status_expires", "status", "expires_at"),
)

parts = Table(
    "parts",
    metadata,
    Column("upload_id", String(64), ForeignKey("uploads.id", ondelete="CASCADE"), primary_key=True),
    Column("number", Integer, primary_key=True),
    Column("offset", BigInteger, nullable=False),
    Column("size", BigInteger, nullable=False),
    Column("md5", String(32), nullable=False),
    Column("blob_ref", String(255), nullable=False),
    Column("hash_state", LargeBinary, nullable=True),
    Column("created_at", UTCDateTime, nullable=False),
    Column("crc64", String(16), nullable=False, server_default=""),
)

api_keys = Table(
    "api_keys",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("owner", String(128), nullable=False, index=True),
    Column("scopes", String(512), nullable=False),
    Column("secret_hash", String(128), nullable=False),
    Column("name", String(128), nullable=True),
    Column("created_at", UTCDateTime, nullable=False),
    Column("revoked_at", UTCDateTime, nullable=True),
    # The key whose keys:admin credential made this one (None: the operator, or an identity provider's token).
    Column("created_by", String(32), nullable=True, index=True),
    # When the key stops working (None: never); a key made by a credential that expires has one.
    Column("expires_at", UTCDateTime, nullable=True),
)

media = Table(
    "media",
    metadata,
    # An integer id per deployment: the media API's ids are integers, never handed out twice
    # (SQLite's AUTOINCREMENT; PostgreSQL sequences never go back).
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column(
        "upload_id", String(64), ForeignKey("uploads.id", ondelete="CASCADE", name="fk_media_upload_id"), nullable=False
    ),
    Column("owner", String(128), nullable=False),
    Column("type", String(16), nullable=False),
    Column("image_width", Integer, nullable=True),
    Column("image_height", Integer, nullable=True),
    Column("order", Integer, nullable=False),
    Column("added_at", UTCDateTime, nullable=False),
    # The media type the content was inspected to be; the file is served as this and nothing else.
    Column("mime_type", String(255), nullable=True),
    UniqueConstraint("upload_id", name="uq_media_upload_id"),
    Index("ix_media_owner", "owner"),
    sqlite_autoincrement=True,
)

upload_links = Table(
    "upload_links",
    metadata,
    # 128 random bits, hex; the link's token carries it beside a secret of which only a hash is kept.
    Column("id", String(32), primary_key=True),
    Column("owner", String(128), nullable=False),
    Column("secret_hash", String(64), nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("expires_at", UTCDateTime, nullable=False),
    Column("revoked_at", UTCDateTime, nullable=True),
    Column("max_bytes", BigInteger, nullable=True),
    Column("max_files", Integer, nullable=True),
    # Counted at creation (declared sizes), by one conditional UPDATE, so limits hold under races.
    Column("files_uploaded", Integer, nullable=False),
    Column("bytes_uploaded", BigInteger, nullable=False),
    Column("allowed_mime_types", JSON, nullable=True),
    Column("note", String(1024), nullable=True),
    # The API key the link was made with (none for an identity provider's token): revoking the key
    # revokes the link, as it ends the key's tokens and signed URLs.
    Column("key_id", String(64), nullable=True),
    Index("ix_upload_links_owner_created", "owner", "created_at"),
    Index("ix_upload_links_key", "key_id"),
)

# The outbox: one row per lifecycle event, written in the transaction of the state change it reports
# (no foreign key to uploads: a deleted upload's events outlive it). ``dispatched`` is set once the
# delivery worker has made the event's deliveries.
events = Table(
    "events",
    metadata,
    Column("seq", Integer, primary_key=True, autoincrement=True),
    Column("id", String(40), nullable=False),
    Column("type", String(64), nullable=False),
    Column("owner", String(128), nullable=False),
    Column("upload_id", String(64), nullable=True),
    Column("created_at", UTCDateTime, nullable=False),
    Column("payload", JSON, nullable=False),
    Column("dispatched", Boolean, nullable=False),
    UniqueConstraint("id", name="uq_events_id"),
    Index("ix_events_dispatched_seq", "dispatched", "seq"),
    Index("ix_events_created_at", "created_at"),  # the history's retention (migration 0010)
)

# Where events go: operator-wide endpoints (owner NULL, kept in step with the settings at start-up,
# signed with the operator's secret) and owners' own endpoints (with their own secret).
webhook_endpoints = Table(
    "webhook_endpoints",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("owner", String(128), nullable=True),
    Column("url", String(2048), nullable=False),
    Column("secret", String(128), nullable=True),
    Column("event_types", JSON, nullable=True),
    Column("created_at", UTCDateTime, nullable=False),
    Column("failing_since", UTCDateTime, nullable=True),
    Column("disabled_at", UTCDateTime, nullable=True),
    Column("disabled_reason", String(16), nullable=True),  # ports.webhooks.DisabledReason (migration 0011)
    # The secret a rotation replaced, still signing beside the new one until the time after it (0013).
    Column("previous_secret", String(128), nullable=True),
    Column("previous_secret_until", UTCDateTime, nullable=True),
    Index("ix_webhook_endpoints_owner", "owner"),
)

# One row per (event, endpoint) and per redelivery asked for: its attempts, its outcome, and the lease
# of the node sending it right now.
webhook_deliveries = Table(
    "webhook_deliveries",
    metadata,
    Column("id", String(40), primary_key=True),
    Column(
        "endpoint_id",
        String(40),
        ForeignKey("webhook_endpoints.id", ondelete="CASCADE", name="fk_webhook_deliveries_endpoint_id"),
        nullable=False,
    ),
    Column("event_id", String(40), nullable=False),
    Column("status", String(16), nullable=False),
    Column("attempts", Integer, nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("next_attempt_at", UTCDateTime, nullable=False),
    Column("lease_until", UTCDateTime, nullable=True),
    Column("last_attempt_at", UTCDateTime, nullable=True),
    Column("delivered_at", UTCDateTime, nullable=True),
    Column("response_status", Integer, nullable=True),
    Column("last_error", String(500), nullable=True),
    Index("ix_webhook_deliveries_due", "status", "next_attempt_at"),
    Index("ix_webhook_deliveries_endpoint", "endpoint_id", "created_at"),
    Index("ix_webhook_deliveries_event", "event_id"),  # the history's retention (migration 0010)
)

# One row: this database's id, made with it. A blob store keeps the id of the database it belongs
# to, and an orphan sweep runs only where the two agree (``UploadService.sweep_orphans``).
database_identity = Table(
    "database_identity",
    metadata,
    Column("id", String(64), primary_key=True),
)
