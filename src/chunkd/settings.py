"""Every setting of chunkd, with unit and default. Each one can be given as an environment
variable ``CHUNKD_<NAME>`` (e.g. ``CHUNKD_DATA_DIR``) or, for a few, a ``chunkd serve`` option."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from chunkd.service.media import MediaLimits
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

    # ---- media API (/api/v2/media; "MB" read as MiB, as S3 and Django count sizes) ----
    media_max_image_bytes: int = Field(5 * MiB, description="Largest image (type image or eimage), in bytes (5 MiB).")
    media_max_document_bytes: int = Field(50 * MiB, description="Largest document (type doc, PDF), in bytes (50 MiB).")
    media_max_chunk_bytes: int = Field(
        204_800, description="Largest chunk one media upload request may carry, in bytes."
    )
    media_url_ttl_seconds: float = Field(
        3600.0, description="Lifetime of the signed file URL in a Media object's image field (usable in <img>)."
    )
    media_max_image_pixels: int = Field(
        89_478_485, description="Images with more pixels are refused as decompression bombs (Pillow's default)."
    )

    # ---- asset API (/asset) ----
    asset_part_size: int = Field(
        100 * MiB, description="Part size of multipart assets in bytes; files up to this size take one PUT (100 MiB)."
    )
    asset_url_ttl_seconds: float = Field(
        3600.0, description="Lifetime of the signed upload URLs handed out for assets."
    )

    def resolved_database_url(self) -> str:
        return self.database_url or f"sqlite:///{(self.data_dir / 'chunkd.db').resolve()}"

    def media_limits(self) -> MediaLimits:
        return MediaLimits(
            image_bytes=self.media_max_image_bytes,
            document_bytes=self.media_max_document_bytes,
            chunk_bytes=self.media_max_chunk_bytes,
            image_pixels=self.media_max_image_pixels,
        )

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
