"""The backends every contract suite runs against.

To add a backend, append ONE entry to ``BLOB_BACKENDS``, ``REPOSITORY_BACKENDS`` or ``LOCK_BACKENDS``
below: a name (the test id), a factory, and optional pytest marks. A factory is an async context
manager that takes the pytest ``request`` (to ask for service fixtures such as ``ceph_rgw`` or
``pg_server``, which start real services) and the test's ``tmp_path``, yields a fresh, empty
backend, and cleans up after it; nothing else in the suites needs to change. Blob backends also say
how to list what they hold for one upload, which lets the suite check that abort/discard/delete
really free storage.

Today: blobs on local disk and S3 (a real Ceph RGW); every repository port on SQLite (as served:
the raw ``sqlite3`` hot path; and SQLAlchemy throughout) and PostgreSQL; locks in-process with the
lock file, on PostgreSQL advisory locks, and the two stacked as a cluster runs them.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from chunkd.backends.blobs.local import LocalBlobStore
from chunkd.backends.repository import open_metadata
from chunkd.backends.repository.sqlalchemy import open_sql_metadata
from chunkd.domain.upload import Upload
from chunkd.ports.blobs import BlobStore
from chunkd.ports.metadata import MetadataStore
from chunkd.ports.repository import UploadRepository
from tests.support.sqlite import copy_sqlite


@dataclass(frozen=True)
class BlobBackend:
    name: str
    make: Callable[[pytest.FixtureRequest, Path], AbstractAsyncContextManager[BlobStore]]
    # Every stored object of one upload, committed or not (names are backend-specific).
    stored: Callable[[BlobStore, Upload], Awaitable[set[str]]]
    marks: Sequence[Any] = field(default_factory=tuple)


@dataclass(frozen=True)
class RepositoryBackend:
    name: str
    make: Callable[[pytest.FixtureRequest, Path], AbstractAsyncContextManager[MetadataStore]]
    marks: Sequence[Any] = field(default_factory=tuple)


# ---- local disk ------------------------------------------------------------------------------
@asynccontextmanager
async def local_blob_store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[BlobStore]:
    store = LocalBlobStore(tmp_path / "blobs", fsync=True)
    try:
        yield store
    finally:
        await store.close()


async def local_stored(store: BlobStore, upload: Upload) -> set[str]:
    assert isinstance(store, LocalBlobStore)
    directory = store.root / upload.id[:2] / upload.id
    return {p.name for p in directory.iterdir()} if directory.exists() else set()


# ---- S3 (a real Ceph RGW, one bucket per test) ---------------------------------------------------
@asynccontextmanager
async def s3_blob_store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[BlobStore]:
    from chunkd.backends.blobs.s3 import S3BlobStore

    gateway = request.getfixturevalue("ceph_rgw")
    bucket = request.getfixturevalue("s3_bucket")
    store = S3BlobStore(gateway.client(), bucket, prefix="contract/", spool_dir=tmp_path / "spool")
    try:
        yield store
    finally:
        await store.close()


async def s3_stored(store: BlobStore, upload: Upload) -> set[str]:
    from chunkd.backends.blobs.s3 import S3BlobStore

    assert isinstance(store, S3BlobStore)
    staged = await store._list_keys(store.staging_prefix(upload.id))
    finals = await store._list_keys(store.master_prefix(upload.id))
    # Staged objects are named by their blob refs (as local part files are); a finished object is
    # told apart by a prefix no blob ref can have.
    return {key.rsplit("/", 1)[1] for key, _ in staged} | {"final:" + key for key, _ in finals}


# ---- SQLite ----------------------------------------------------------------------------------
def _sqlite_copy(
    opener: Callable[..., Awaitable[MetadataStore]],
) -> Callable[[pytest.FixtureRequest, Path], AbstractAsyncContextManager[MetadataStore]]:
    """A repository factory: ``opener`` over a copy of the session's migrated template (the
    migration check then finds nothing to do)."""

    @asynccontextmanager
    async def make(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[MetadataStore]:
        database = copy_sqlite(request.getfixturevalue("sqlite_template"), tmp_path, "contract.db")
        store = await opener(f"sqlite:///{database}", run_migrations=True)
        try:
            yield store
        finally:
            await store.close()

    return make


# As served: the raw ``sqlite3`` hot path, with SQLAlchemy for the cold paths.
sqlite_repository = _sqlite_copy(open_metadata)
# SQLAlchemy throughout on SQLite (what PostgreSQL runs, and the SQLite fast path's cold paths).
sqlalchemy_sqlite_repository = _sqlite_copy(open_sql_metadata)


# ---- PostgreSQL (a real server, a fresh database per test) -------------------------------------
@asynccontextmanager
async def postgres_repository(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[MetadataStore]:
    server = request.getfixturevalue("pg_server")
    name = await asyncio.to_thread(server.acquire_database)  # it runs its own event loop
    store = await open_metadata(server.url(name), run_migrations=True)
    try:
        yield store
    finally:
        await store.close()
        await asyncio.to_thread(server.release_database, name)


# ---- the lists: add new backends here ---------------------------------------------------------
BLOB_BACKENDS: list[BlobBackend] = [
    BlobBackend("local", local_blob_store, local_stored),
    BlobBackend("s3", s3_blob_store, s3_stored),
]

REPOSITORY_BACKENDS: list[RepositoryBackend] = [
    RepositoryBackend("sqlite", sqlite_repository),
    RepositoryBackend("sqlite-sqlalchemy", sqlalchemy_sqlite_repository),
    RepositoryBackend("postgresql", postgres_repository),
]


@dataclass
class BlobFixture:
    store: BlobStore
    backend: BlobBackend

    async def stored(self, upload: Upload) -> set[str]:
        return await self.backend.stored(self.store, upload)


@pytest.fixture(params=[pytest.param(b, id=b.name, marks=list(b.marks)) for b in BLOB_BACKENDS])
async def blobs(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[BlobFixture]:
    backend: BlobBackend = request.param
    async with backend.make(request, tmp_path) as store:
        yield BlobFixture(store, backend)


@pytest.fixture(params=[pytest.param(b, id=b.name, marks=list(b.marks)) for b in REPOSITORY_BACKENDS])
async def metadata(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[MetadataStore]:
    """Every repository port of one fresh database, once per backend."""
    backend: RepositoryBackend = request.param
    async with backend.make(request, tmp_path) as store:
        yield store


@pytest.fixture
def repo(metadata: MetadataStore) -> UploadRepository:
    """The upload repository of ``metadata``."""
    return metadata.uploads
