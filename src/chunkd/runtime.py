"""Builds the backends named by the settings and the services over them (nothing at import time)."""

from __future__ import annotations

import importlib
import os
import tempfile
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine

from chunkd.auth.authenticator import Authenticator
from chunkd.auth.key_cache import CachedKeys
from chunkd.auth.keys import KeyService
from chunkd.auth.principal import ALL_SCOPES
from chunkd.auth.signing import UrlSigner
from chunkd.auth.tokens import AccessTokens
from chunkd.backends.repository.sqlalchemy.database import create_engine, migrate
from chunkd.backends.repository.sqlalchemy.media import SqlMediaRepository
from chunkd.backends.repository.sqlalchemy.repository import SqlRepository
from chunkd.metrics import Metrics
from chunkd.ports.blobs import BlobStore
from chunkd.ports.locks import LockManager
from chunkd.service.media import MediaService
from chunkd.service.uploads import UploadService
from chunkd.settings import Settings

__all__ = ["Runtime", "open_runtime"]

# Storage backends by name → "module:factory(settings)" (imported only when chosen).
BLOB_STORES = {
    "local": "chunkd.backends.blobs.local:from_settings",
    "s3": "chunkd.backends.blobs.s3:from_settings",
}


def _load(target: str) -> Any:
    module, _, attr = target.partition(":")
    return getattr(importlib.import_module(module), attr)


def load_secret(path: Path) -> bytes:
    """The server secret (URL signatures, HS256 tokens): 32 random bytes made on first start.

    Written to a temporary file and then hard-linked into place, so several nodes starting at once
    on a shared data dir all end up with the same, complete secret (never a half-written one)."""
    if path.exists():
        return path.read_bytes()
    fd, tmp = tempfile.mkstemp(prefix=".secret-", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(os.urandom(32))
            handle.flush()
            os.fsync(handle.fileno())
        with suppress(FileExistsError):  # another node won the race: use its secret
            os.link(tmp, path)
    finally:
        os.unlink(tmp)
    return path.read_bytes()


def server_secret(settings: Settings) -> bytes:
    """``CHUNKD_SECRET`` when set (every node of a cluster must share it), else the data dir's file."""
    if settings.secret is not None:
        return settings.secret_bytes()
    return load_secret(settings.data_dir / "secret.key")


@dataclass
class Runtime:
    settings: Settings
    repo: SqlRepository
    blobs: BlobStore
    locks: LockManager
    uploads: UploadService
    keys: KeyService
    authenticator: Authenticator
    signer: UrlSigner
    media: MediaService
    tokens: AccessTokens | None = None
    # This process's metrics (see chunkd.metrics): webhooks and hooks count into it too.
    metrics: Metrics = field(default_factory=lambda: Metrics(process_metrics=False))
    # Per-process state a frontend keeps beside the runtime (tus: the request writing each upload).
    extras: dict[str, Any] = field(default_factory=dict)

    async def close(self) -> None:
        await self.blobs.close()
        await self.locks.close()
        await self.repo.close()


def build_locks(settings: Settings) -> LockManager:
    from chunkd.backends.locks.local import LocalLocks

    url = settings.resolved_database_url()
    if url.startswith(("postgresql", "postgres")):
        # Several nodes share the database: the in-process lock first (cheap queueing for this
        # process's tasks), then a PostgreSQL advisory lock (every other process and node).
        from chunkd.backends.locks.postgres import PostgresAdvisoryLocks
        from chunkd.backends.locks.stacked import StackedLocks

        return StackedLocks(LocalLocks(None), PostgresAdvisoryLocks(url, max_connections=settings.lock_connections))
    return LocalLocks(settings.data_dir / "locks")


async def open_runtime(
    settings: Settings, *, run_migrations: bool | None = None, metrics: Metrics | None = None
) -> Runtime:
    """The backends and services named by ``settings``; ``metrics``: the app's (a private one
    when not given, e.g. for the CLI's commands), subscribed to the engine's events."""
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    engine = create_engine(settings.resolved_database_url())
    if settings.migrate_on_start if run_migrations is None else run_migrations:
        await migrate(engine)
    repo = SqlRepository(engine)
    blobs: BlobStore = _load(BLOB_STORES[settings.storage])(settings)
    locks = build_locks(settings)
    uploads = UploadService(repo, blobs, locks, settings.engine_config())
    cached_keys = CachedKeys(repo)  # revocation reaches every node within its 1 s lifetime
    keys = KeyService(cached_keys)
    secret = server_secret(settings)
    signer = UrlSigner(secret)
    tokens = AccessTokens.from_settings(settings, cached_keys, secret)
    metrics = metrics or Metrics(process_metrics=False)
    uploads.subscribe(metrics.on_upload_event)
    return Runtime(
        settings=settings,
        repo=repo,
        blobs=blobs,
        locks=locks,
        uploads=uploads,
        keys=keys,
        authenticator=Authenticator(keys, tokens),
        signer=signer,
        tokens=tokens,
        metrics=metrics,
        media=build_media(settings, engine, uploads),
    )


def build_media(settings: Settings, engine: AsyncEngine, uploads: UploadService) -> MediaService:
    """The media API's service (integer media ids over the same database)."""
    return MediaService(uploads, SqlMediaRepository(engine), settings.media_limits())


async def bootstrap_admin_key(runtime: Runtime) -> str | None:
    """On first start (no keys at all), create an admin key; returns its token to print once.
    Under a lock, so of several nodes starting together on one database only one creates it."""
    async with runtime.locks.hold("bootstrap-admin-key", timeout=runtime.settings.lock_timeout_seconds):
        if await runtime.keys.repo.count_keys():
            return None
        _, token = await runtime.keys.create("admin", ALL_SCOPES, name="bootstrap admin key")
    return token
