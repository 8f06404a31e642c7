"""Table definitions (SQLAlchemy Core). The Alembic migrations are the source of truth for the
schema; these mirror them for queries, and a test checks the two agree."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
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

__all__ = ["api_keys", "media", "metadata", "parts", "uploads"]


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
)

media = Table(
    "media",
    metadata,
    # An integer id per deployment: the media API's ids are integers.
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
    UniqueConstraint("upload_id", name="uq_media_upload_id"),
    Index("ix_media_owner", "owner"),
)
