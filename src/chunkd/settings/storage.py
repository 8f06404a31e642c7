"""Where chunkd keeps things: the data dir, the metadata database, the bytes (local disk or S3) and
the server secret."""

from __future__ import annotations

import base64
import binascii
import re
from contextlib import suppress
from pathlib import Path
from typing import Literal, Self

from pydantic import BaseModel, Field, SecretStr, field_validator, model_validator

from chunkd.backends.repository.full import DATABASE_TIMEOUT
from chunkd.settings.units import MiB

__all__ = ["StorageSettings"]


def _decode_secret(text: str) -> bytes:
    """Hex (64+ digits) or standard/URL-safe base64 of at least 32 bytes."""
    text = text.strip()
    raw: bytes | None = None
    if re.fullmatch(r"(?:[0-9a-fA-F]{2})+", text):
        raw = bytes.fromhex(text)
    else:
        with suppress(binascii.Error, ValueError):
            raw = base64.b64decode(text.replace("-", "+").replace("_", "/") + "=" * (-len(text) % 4), validate=True)
    if raw is None:
        raise ValueError("CHUNKD_SECRET must be hex or base64")
    if len(raw) < 32:
        raise ValueError("CHUNKD_SECRET must hold at least 32 bytes (e.g. `openssl rand -hex 32`)")
    return raw


class StorageSettings(BaseModel):
    """The data dir, database, storage and secret settings."""

    @model_validator(mode="after")
    def _s3_needs_a_bucket(self) -> Self:
        # Checked with the other settings (one line at start), not when the store is made (a traceback).
        if self.storage == "s3" and not (self.s3_bucket or "").strip():
            raise ValueError("CHUNKD_S3_BUCKET is required with CHUNKD_STORAGE=s3")
        return self

    # ---- where things live ----
    data_dir: Path = Field(Path("./chunkd-data"), description="Directory for the SQLite database, bytes and secrets.")
    database_url: str | None = Field(
        None, description="SQLAlchemy URL of the metadata database; default: SQLite at <data_dir>/chunkd.db."
    )
    storage: Literal["local", "s3"] = Field("local", description="Where bytes go: local disk or S3-compatible.")
    fsync: bool = Field(True, description="fsync parts before acknowledging them (turn off only for tests).")
    min_free_bytes: int = Field(
        64 * MiB,
        ge=0,
        description="Local storage: bytes kept free on the blob volume; new upload bytes are refused with 507 below "
        "it, so the metadata database always has room to commit (0: off).",
    )
    migrate_on_start: bool = Field(True, description="Apply database migrations when the server starts.")
    secret: SecretStr | None = Field(
        None,
        description="Server secret (URL signatures, tokens) as hex or base64, at least 32 bytes; overrides "
        "<data_dir>/secret.key. Every node of a cluster needs the same one.",
    )
    database_timeout_seconds: float = Field(
        DATABASE_TIMEOUT,
        gt=0,
        description="PostgreSQL only: how long one statement, or a new connection, may wait for the database; "
        "a database that hangs is then a 503 for the client, not a request held open.",
    )
    lock_connections: int = Field(
        8,
        ge=1,
        description="PostgreSQL only: most connections on which a process holds its per-upload advisory locks. "
        "Each carries the locks of any number of uploads (a slow client streaming an append holds a lock, not a "
        "connection) and runs the saves made under them one statement at a time, so this bounds how many of "
        "those saves a process runs at once.",
    )

    # ---- S3-compatible storage (CHUNKD_STORAGE=s3) ----
    s3_endpoint: str | None = Field(
        None, description="S3 endpoint URL (e.g. http://127.0.0.1:7480); default: AWS's endpoint for the region."
    )
    s3_bucket: str | None = Field(None, description="Bucket holding every object chunkd writes (must exist).")
    s3_region: str = Field("us-east-1", description="Region used to sign requests.")
    s3_access_key: str | None = Field(
        None, description="Access key id; unset: the standard AWS credential chain (env, profile, instance role)."
    )
    s3_secret_key: str | None = Field(None, description="Secret access key (with s3_access_key).")
    s3_prefix: str = Field("", description="Key prefix for all objects, e.g. 'chunkd/' (empty: bucket root).")
    s3_presigned_downloads: bool = Field(
        False, description="Redirect downloads (307) to a presigned S3 GET instead of streaming them through chunkd."
    )
    s3_presign_seconds: int = Field(
        300, ge=1, le=7 * 86400, description="Lifetime of a presigned download URL, in seconds (SigV4 allows 7 days)."
    )
    s3_max_connections: int = Field(32, ge=1, description="HTTP connections (and worker threads) to S3 per process.")
    s3_timeout_seconds: float = Field(
        30,
        gt=0,
        description="How long one S3 call may wait for the store (to connect, or between bytes of its answer) "
        "before it is tried again; a store that hangs is then a 503 for the client, not a request held open.",
    )
    s3_attempts: int = Field(
        3, ge=1, le=10, description="Tries per S3 call (the first included) before the client gets a 503."
    )

    @field_validator("secret")
    @classmethod
    def _check_secret(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None:
            _decode_secret(value.get_secret_value())
        return value

    def secret_bytes(self) -> bytes:
        """The decoded ``secret`` (only call when it is set)."""
        assert self.secret is not None
        return _decode_secret(self.secret.get_secret_value())

    def default_database_path(self) -> Path:
        """The embedded SQLite database, used when ``database_url`` is unset."""
        return self.data_dir / "chunkd.db"

    def resolved_database_url(self) -> str:
        return self.database_url or f"sqlite:///{self.default_database_path().resolve()}"
