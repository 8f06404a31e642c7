"""Uploads and what the dialects add to them: part sizes, expiry, per-owner quotas, upload links,
the media API's and the asset API's limits."""

from __future__ import annotations

from datetime import timedelta
from typing import Self

from pydantic import BaseModel, Field, model_validator

from chunkd.service.config import EngineConfig
from chunkd.service.inspection import InspectionLimits
from chunkd.service.media import MediaLimits
from chunkd.settings.units import MiB

__all__ = ["ENGINE", "UploadSettings"]

# The engine's defaults are written once, in EngineConfig; the settings that configure it take
# their defaults from there (the descriptions say the value).
ENGINE = EngineConfig()


class UploadSettings(BaseModel):
    """The upload, quota, upload-link, media and asset settings."""

    @model_validator(mode="after")
    def _part_sizes_in_order(self) -> Self:
        # Out of order, every create without its own part size was refused, and the client blamed.
        if not self.min_part_size <= self.part_size <= self.max_part_size:
            raise ValueError(
                f"part_size ({self.part_size}) must lie between min_part_size ({self.min_part_size}) and "
                f"max_part_size ({self.max_part_size})"
            )
        return self

    # ---- uploads ----
    part_size: int = Field(
        ENGINE.default_part_size, ge=1, description="Default part size in bytes for new uploads (default 8 MiB)."
    )
    min_part_size: int = Field(
        ENGINE.min_part_size, ge=1, description="Smallest part size a client may ask for, in bytes (default 256 KiB)."
    )
    max_part_size: int = Field(
        ENGINE.max_part_size, ge=1, description="Largest part size a client may ask for, in bytes (default 5 GiB)."
    )
    max_file_size: int = Field(
        ENGINE.max_file_size, ge=1, description="Largest file accepted, in bytes (default 5 TiB)."
    )
    upload_ttl_seconds: float = Field(
        ENGINE.ttl.total_seconds(),
        gt=0,
        description="Idle time after which a PENDING upload expires, in seconds (default 86400: 24 hours); each "
        "part pushes it forward.",
    )
    download_url_ttl_seconds: float = Field(
        60.0,
        gt=0,
        description="Lifetime of a signed download URL (POST /v1/files/{id}/download-url), in seconds (default 60): "
        "the browser page asks for one per click and follows it at once, so it need not live long.",
    )
    reaper_interval_seconds: float = Field(
        60.0, gt=0, description="How often the server looks for expired uploads, in seconds (default 60)."
    )
    orphan_sweep_interval_seconds: float = Field(
        86400.0,
        ge=0,
        description="How often the server removes blobs no record points at (what a crash in the middle of a "
        "delete, a cancel or an expiry left), in seconds, and once at start (so after the crash that left "
        "them); default 86400 (a day: a sweep walks every stored blob); 0: never, leave it to `chunkd gc`.",
    )
    orphan_grace_seconds: float = Field(
        3600.0,
        ge=0,
        description="Age below which such a blob is spared, in seconds (default 3600): a part being written is "
        "not recorded yet, so keep it longer than a part can take to arrive.",
    )
    lock_timeout_seconds: float = Field(
        ENGINE.lock_timeout,
        ge=0,
        description="How long an operation waits for an upload's lock, in seconds (default 30).",
    )

    # ---- per-owner quotas (unset, the default: unlimited) ----
    max_pending_uploads: int | None = Field(
        ENGINE.max_pending_uploads, ge=0, description="Most PENDING uploads one owner may hold."
    )
    max_pending_bytes: int | None = Field(
        ENGINE.max_pending_bytes, ge=0, description="Most bytes one owner's PENDING uploads may declare."
    )
    max_stored_bytes: int | None = Field(
        ENGINE.max_stored_bytes, ge=0, description="Most bytes one owner may store (completed + pending)."
    )

    # ---- upload links ----
    upload_link_ttl_seconds: int = Field(
        7 * 24 * 3600, ge=1, description="Lifetime of an upload link created without `expiresIn`, in seconds (7 days)."
    )
    upload_link_max_ttl_seconds: int = Field(
        90 * 24 * 3600, ge=1, description="Longest `expiresIn` an upload link may be given, in seconds (90 days)."
    )

    # ---- private-message files (/api/v2/pm, Fine Uploader's protocol) ----
    pm_max_held_chunk_bytes: int = Field(
        8 * MiB,
        ge=0,
        description="Largest qqfile held in memory when it comes first in its form, so that the fields after it "
        "(qquuid, qqpartindex, …) can say where it goes, in bytes (8 MiB: four of Fine Uploader's 2,000,000-byte "
        "chunks); a longer one is stored as a whole file. 0 holds none.",
    )

    # ---- media API (/api/v2/media; "MB" read as MiB, as S3 and Django count sizes) ----
    media_max_image_bytes: int = Field(5 * MiB, description="Largest image (type image or eimage), in bytes (5 MiB).")
    media_max_document_bytes: int = Field(50 * MiB, description="Largest document (type doc, PDF), in bytes (50 MiB).")
    media_max_chunk_bytes: int = Field(
        204_800, description="Largest chunk one media upload request may carry, in bytes."
    )
    media_url_ttl_seconds: float = Field(
        3600.0,
        description="Lifetime of the signed file URL in a Media object's image field (usable in <img>): at "
        "least this long, and up to a quarter more (at least 60 s more), its expiry rounded up so that "
        "repeated reads give the same, cacheable URL.",
    )
    media_max_image_pixels: int = Field(
        89_478_485, description="Images with more pixels are refused as decompression bombs (Pillow's default)."
    )
    # Inspection (Pillow, pypdf) parses hostile files: it runs in worker processes of its own with
    # these limits (chunkd.service.inspection); passing one refuses the file with a 400.
    media_inspect_workers: int = Field(
        2, ge=1, le=64, description="Worker processes that inspect images and PDFs (more wait their turn)."
    )
    media_inspect_queue: int = Field(
        16,
        ge=0,
        description="Inspections that may wait for a worker, all owners together; one more is answered 429 "
        "with Retry-After (nothing is recorded on the upload). Waiting ones take turns by owner.",
    )
    media_inspect_timeout_seconds: float = Field(
        10.0,
        gt=0,
        description="Wall time one inspection may take, in seconds; past it the worker is killed and the file "
        "refused. Its CPU time is capped at this, rounded up, plus one second.",
    )
    media_inspect_memory_bytes: int = Field(
        512 * MiB,
        ge=128 * MiB,
        description="Address space of an inspection worker, in bytes (512 MiB; the interpreter and parsers take "
        "about 60 MiB of it).",
    )
    media_max_pdf_pages: int = Field(
        10_000, ge=1, description="PDFs with more pages are refused (a page tree is walked page by page)."
    )

    # ---- asset API (/asset) ----
    asset_part_size: int = Field(
        100 * MiB, description="Part size of multipart assets in bytes; files up to this size take one PUT (100 MiB)."
    )
    asset_url_ttl_seconds: float = Field(
        3600.0, description="Lifetime of the signed upload URLs handed out for assets."
    )

    def media_limits(self) -> MediaLimits:
        return MediaLimits(
            image_bytes=self.media_max_image_bytes,
            document_bytes=self.media_max_document_bytes,
            chunk_bytes=self.media_max_chunk_bytes,
        )

    def inspection_limits(self) -> InspectionLimits:
        return InspectionLimits(
            workers=self.media_inspect_workers,
            queue=self.media_inspect_queue,
            timeout_seconds=self.media_inspect_timeout_seconds,
            memory_bytes=self.media_inspect_memory_bytes,
            max_pdf_pages=self.media_max_pdf_pages,
            max_image_pixels=self.media_max_image_pixels,
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
