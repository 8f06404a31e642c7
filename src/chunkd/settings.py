"""Every setting of chunkd, with unit and default. Each one can be given as an environment
variable ``CHUNKD_<NAME>`` (e.g. ``CHUNKD_DATA_DIR``) or, for a few, a ``chunkd serve`` option."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from chunkd.service.uploads import EngineConfig

__all__ = ["Settings"]

MiB = 1024 * 1024


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="CHUNKD_", extra="ignore")

    # ---- where things live ----
    data_dir: Path = Field(Path("./chunkd-data"), description="Directory for the SQLite database, bytes and secrets.")
    database_url: str | None = Field(
        None, description="SQLAlchemy URL of the metadata database; default: SQLite at <data_dir>/chunkd.db."
    )
    storage: Literal["local", "s3"] = Field("local", description="Where bytes go: local disk or S3-compatible.")
    fsync: bool = Field(True, description="fsync parts before acknowledging them (turn off only for tests).")
    migrate_on_start: bool = Field(True, description="Apply database migrations when the server starts.")

    # ---- server ----
    host: str = Field("127.0.0.1", description="Address to listen on.")
    port: int = Field(8080, description="TCP port to listen on.")
    server: Literal["uvicorn", "granian"] = Field("uvicorn", description="ASGI server used by `chunkd serve`.")
    public_url: str | None = Field(
        None, description="Base URL clients reach the server at (for upload URLs); default: taken from the request."
    )
    bootstrap_admin_key: bool = Field(
        True, description="On first start with no API keys, create an admin key and print it once."
    )

    # ---- uploads ----
    part_size: int = Field(8 * MiB, description="Default part size in bytes for new uploads.")
    min_part_size: int = Field(256 * 1024, description="Smallest part size a client may ask for, in bytes.")
    max_part_size: int = Field(5 * 1024 * MiB, description="Largest part size a client may ask for, in bytes.")
    max_file_size: int = Field(5 * 1024 * 1024 * MiB, description="Largest file accepted, in bytes (default 5 TiB).")
    upload_ttl_seconds: float = Field(
        24 * 3600, description="Idle time after which a PENDING upload expires; each part pushes it forward."
    )
    reaper_interval_seconds: float = Field(60.0, description="How often the server looks for expired uploads.")
    lock_timeout_seconds: float = Field(30.0, description="How long an operation waits for an upload's lock.")

    # ---- per-owner quotas (unset: unlimited) ----
    max_pending_uploads: int | None = Field(None, description="Most PENDING uploads one owner may hold.")
    max_pending_bytes: int | None = Field(None, description="Most bytes one owner's PENDING uploads may declare.")
    max_stored_bytes: int | None = Field(None, description="Most bytes one owner may store (completed + pending).")

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
    s3_presign_seconds: int = Field(300, description="Lifetime of a presigned download URL, in seconds.")
    s3_max_connections: int = Field(32, description="HTTP connections (and worker threads) to S3 per process.")

    def resolved_database_url(self) -> str:
        return self.database_url or f"sqlite:///{(self.data_dir / 'chunkd.db').resolve()}"

    def engine_config(self) -> EngineConfig:
        return EngineConfig(
            default_part_size=self.part_size,
            min_part_size=self.min_part_size,
            max_part_size=self.max_part_size,
            max_file_size=self.max_file_size,
            ttl=timedelta(seconds=self.upload_ttl_seconds),
            lock_timeout=self.lock_timeout_seconds,
            max_pending_uploads=self.max_pending_uploads,
            max_pending_bytes=self.max_pending_bytes,
            max_stored_bytes=self.max_stored_bytes,
        )
