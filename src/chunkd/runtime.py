"""Builds the backends named by the settings and the services over them (nothing at import time)."""

from __future__ import annotations

import asyncio
import importlib
import logging
import os
import tempfile
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy.engine import make_url

from chunkd.auth.authenticator import Authenticator
from chunkd.auth.key_cache import CachedKeys
from chunkd.auth.keys import KeyService
from chunkd.auth.links import UploadLinks
from chunkd.auth.principal import ALL_SCOPES
from chunkd.auth.signing import UrlSigner
from chunkd.auth.tokens import AccessTokens
from chunkd.backends.repository import open_metadata
from chunkd.metrics import Metrics
from chunkd.ports.blobs import BlobStore
from chunkd.ports.locks import LockManager
from chunkd.ports.media import MediaRepository
from chunkd.ports.metadata import MetadataStore
from chunkd.ports.repository import UploadRepository
from chunkd.ports.webhooks import WebhookRepository
from chunkd.readiness import Readiness
from chunkd.service.delivery import DeliveryWorker
from chunkd.service.hooks import NO_HOOKS, HookChain, HttpHooks, UploadHooks
from chunkd.service.inspection import InspectionPool
from chunkd.service.media import MediaService
from chunkd.service.takeover import InFlight
from chunkd.service.uploads import UploadService
from chunkd.service.virusscan import ClamdScanner
from chunkd.service.webhooks import WebhookService
from chunkd.settings import Settings

__all__ = ["Runtime", "bootstrap_admin_key", "open_runtime", "write_bootstrap_key"]

# Storage backends by name → "module:factory(settings)" (imported only when chosen).
BLOB_STORES = {
    "local": "chunkd.backends.blobs.local:from_settings",
    "s3": "chunkd.backends.blobs.s3:from_settings",
}


def _load(target: str) -> Any:
    module, _, attr = target.partition(":")
    return getattr(importlib.import_module(module), attr)


log = logging.getLogger("chunkd")

PRIVATE_DIR = 0o700
PRIVATE_FILE = 0o600
BOOTSTRAP_KEY_FILE = "bootstrap-admin-key"


def private_data_dir(path: Path) -> None:
    """Create the data dir readable by this user only (it holds the secret, the database and
    every uploaded byte), and take group and other access away from one made before."""
    path.mkdir(parents=True, exist_ok=True, mode=PRIVATE_DIR)
    _make_private(path, PRIVATE_DIR)


def _make_private(path: Path, mode: int) -> None:
    """Take group and other access away from ``path``; a file this user does not own (a volume
    mounted by another user) is left as it is, with a warning, rather than stopping the server."""
    if not path.stat().st_mode & 0o077:
        return
    try:
        os.chmod(path, mode)
    except PermissionError:
        log.warning("%s is readable by other users and cannot be made private (not our file)", path)


def private_sqlite_files(url: str) -> None:
    """Make the SQLite database file (and its -wal and -shm, which SQLite creates with the
    database file's own mode) readable by this user only: created 0600 before SQLite opens it,
    and tightened when it exists already. Nothing to do for other databases."""
    parsed = make_url(url)
    if not parsed.drivername.startswith("sqlite") or parsed.database in (None, "", ":memory:"):
        return
    database = Path(parsed.database)
    os.close(os.open(database, os.O_CREAT | os.O_WRONLY, PRIVATE_FILE))
    for path in (database, Path(f"{database}-wal"), Path(f"{database}-shm")):
        with suppress(FileNotFoundError):
            _make_private(path, PRIVATE_FILE)


def load_secret(path: Path) -> bytes:
    """The server secret (URL signatures, HS256 tokens): 32 random bytes made on first start,
    readable by this user only.

    Written to a temporary file (mkstemp makes it 0600) and then hard-linked into place, so several
    nodes starting at once on a shared data dir all end up with the same, complete secret (never a
    half-written one)."""
    if path.exists():
        _make_private(path, PRIVATE_FILE)
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
    # The new name must be durable before anything is signed with the secret: lost in a crash
    # (a power cut, a disk error within the filesystem's commit interval), it would be made anew
    # on restart and every URL, token and link signed before would stop working.
    from chunkd.backends.blobs.local_fs import fsync_dir

    fsync_dir(path.parent)
    return path.read_bytes()


def server_secret(settings: Settings) -> bytes:
    """``CHUNKD_SECRET`` when set (every node of a cluster must share it), else the data dir's file."""
    if settings.secret is not None:
        return settings.secret_bytes()
    return load_secret(settings.data_dir / "secret.key")


@dataclass
class Runtime:
    """Everything one process serves with, built once by :func:`open_runtime` (nothing is looked
    up or made later): the settings, the backends, the engine's services and this process's
    per-node parts (metrics, take-over registry, readiness checks, webhook delivery worker)."""

    settings: Settings
    repo: UploadRepository
    metadata: MetadataStore
    blobs: BlobStore
    locks: LockManager
    uploads: UploadService
    keys: KeyService
    authenticator: Authenticator
    signer: UrlSigner
    media: MediaService
    links: UploadLinks
    webhooks: WebhookService
    # Sends the outbox's deliveries (started by the app; woken whenever this process writes an event).
    delivery: DeliveryWorker
    # The request streaming into each upload, which a newer request may take over (tus, media).
    takeover: InFlight
    readiness: Readiness
    # This process's metrics (see chunkd.metrics): webhooks and hooks count into it too.
    metrics: Metrics
    tokens: AccessTokens | None = None

    async def close(self) -> None:
        await self.delivery.close()
        await self.uploads.finish_hash_runs()
        for hook in getattr(self.uploads.hooks, "hooks", ()):
            if isinstance(hook, HttpHooks):
                await hook.close()
        await asyncio.to_thread(self.media.close)  # stops the inspection workers
        await self.blobs.close()
        await self.locks.close()
        await self.metadata.close()


def build_locks(settings: Settings) -> LockManager:
    from chunkd.backends.locks.local import LocalLocks

    url = settings.resolved_database_url()
    if url.startswith(("postgresql", "postgres")):
        # Several nodes share the database: the in-process lock first (cheap queueing for this
        # process's tasks), then a PostgreSQL advisory lock (every other process and node).
        from chunkd.backends.locks.postgres import PostgresAdvisoryLocks
        from chunkd.backends.locks.stacked import StackedLocks

        return StackedLocks(
            LocalLocks(None),
            PostgresAdvisoryLocks(
                url, max_connections=settings.lock_connections, timeout=settings.database_timeout_seconds
            ),
        )
    from chunkd.backends.locks import siblings

    return LocalLocks(settings.data_dir / "locks", siblings=siblings.current())


async def open_runtime(
    settings: Settings, *, run_migrations: bool | None = None, metrics: Metrics | None = None
) -> Runtime:
    """The backends and services named by ``settings``; ``metrics``: the app's (a private one
    when not given, e.g. for the CLI's commands), subscribed to the engine's events."""
    private_data_dir(settings.data_dir)
    private_sqlite_files(settings.resolved_database_url())
    metadata = await open_metadata(
        settings.resolved_database_url(),
        run_migrations=settings.migrate_on_start if run_migrations is None else run_migrations,
        timeout=settings.database_timeout_seconds,
    )
    repo = metadata.uploads
    blobs: BlobStore = _load(BLOB_STORES[settings.storage])(settings)
    locks = build_locks(settings)
    uploads = UploadService(repo, blobs, locks, settings.engine_config())
    cached_keys = CachedKeys(metadata.keys)  # revocation reaches every node within its 1 s lifetime
    keys = KeyService(cached_keys)
    secret = server_secret(settings)
    signer = UrlSigner(secret)
    tokens = AccessTokens.from_settings(settings, cached_keys, secret)
    links = UploadLinks(
        metadata.links,
        keys=cached_keys,
        default_ttl_seconds=settings.upload_link_ttl_seconds,
        max_ttl_seconds=settings.upload_link_max_ttl_seconds,
        tus_prefix=settings.tus_path,
    )
    metrics = metrics or Metrics(process_metrics=False)
    uploads.hooks = build_hooks(settings, uploads, metrics)
    uploads.subscribe(metrics.on_upload_event)
    webhooks, delivery = build_webhooks(settings, metadata.webhooks, uploads, metrics)
    return Runtime(
        settings=settings,
        repo=repo,
        metadata=metadata,
        blobs=blobs,
        locks=locks,
        uploads=uploads,
        keys=keys,
        authenticator=Authenticator(keys, tokens, links),
        signer=signer,
        links=links,
        tokens=tokens,
        media=build_media(settings, metadata.media, uploads, metrics),
        webhooks=webhooks,
        delivery=delivery,
        takeover=InFlight(locks),
        readiness=Readiness(repo.ping, blobs, settings.readyz_timeout_seconds),
        metrics=metrics,
    )


def build_hooks(settings: Settings, uploads: UploadService, metrics: Metrics) -> UploadHooks:
    """The engine's blocking checks: the virus scan first (a refused file never reaches the
    operator's hook), then the operator's hook service."""
    hooks: list[UploadHooks] = []
    if settings.clamd:
        hooks.append(
            ClamdScanner(
                settings.clamd,
                uploads.read_received,
                timeout=settings.clamd_timeout_seconds,
                fail_open=settings.clamd_failure == "allow",
            )
        )
    if settings.hook_url:
        hooks.append(
            HttpHooks(
                settings.hook_url,
                timeout=settings.hook_timeout_seconds,
                fail_open=settings.hook_failure == "allow",
                secret=settings.hook_secret.get_secret_value() if settings.hook_secret is not None else None,
            )
        )
    for hook in hooks:
        hook.count = metrics.hook_invocation  # type: ignore[attr-defined]
    return HookChain(hooks) if hooks else NO_HOOKS


def build_webhooks(
    settings: Settings, repo: WebhookRepository, uploads: UploadService, metrics: Metrics
) -> tuple[WebhookService, DeliveryWorker]:
    """The webhook API's service and this process's delivery worker (started by the app), woken
    whenever this process writes an event."""
    secret = settings.webhook_secret.get_secret_value() if settings.webhook_secret is not None else None
    previous = settings.webhook_previous_secret
    worker = DeliveryWorker(
        repo,
        settings.delivery_policy(),
        operator_secret=secret,
        operator_previous_secret=previous.get_secret_value() if previous is not None else None,
        clock=uploads.clock,
    )
    worker.count = metrics.webhook_delivery

    async def wake(_event: str, _upload: object) -> None:
        worker.wake()

    uploads.subscribe(wake)
    service = WebhookService(
        repo,
        uploads.clock,
        block_private=settings.webhook_block_private,
        locks=uploads.locks,
        lock_timeout=settings.lock_timeout_seconds,
        wake=lambda: worker.wake(due=True),
    )
    return service, worker


def build_media(settings: Settings, repo: MediaRepository, uploads: UploadService, metrics: Metrics) -> MediaService:
    """The media API's service (integer media ids over the same database); its inspections counted."""
    inspector = InspectionPool(settings.inspection_limits())
    inspector.count = metrics.media_inspection
    inspector.occupancy = metrics.media_inspection_occupancy
    return MediaService(uploads, repo, settings.media_limits(), inspector)


async def bootstrap_admin_key(runtime: Runtime) -> str | None:
    """On first start (no keys at all), create an admin key; returns its token. Under a lock, so
    of several nodes starting together on one database only one creates it."""
    async with runtime.locks.hold("bootstrap-admin-key", timeout=runtime.settings.lock_timeout_seconds):
        if await runtime.keys.repo.count_keys():
            return None
        _, token = await runtime.keys.create("admin", ALL_SCOPES, name="bootstrap admin key")
    return token


def write_bootstrap_key(data_dir: Path, token: str) -> Path:
    """Keep the bootstrap admin key in ``<data_dir>/bootstrap-admin-key``, readable by this user
    only, and return its path: the key itself never goes to the log (logs are collected, shipped
    and read by others). A file left by an earlier bootstrap (its key gone with the database that
    held it) is replaced whole, never partly written."""
    from chunkd.backends.blobs.local_fs import replace_durably

    path = data_dir / BOOTSTRAP_KEY_FILE
    replace_durably(path, (token + "\n").encode())  # made 0600
    return path
