"""The backends every contract suite runs against.

To add a backend (S3, PostgreSQL, ...), append ONE entry to ``BLOB_BACKENDS`` or
``REPOSITORY_BACKENDS`` below: a name (the test id), a factory, and optional pytest marks (e.g. a
``skipif`` when the service is unavailable). A factory is an async context manager that takes the
test's ``tmp_path`` and yields a fresh, empty backend, and cleans up after it; nothing else in the
suites needs to change. Blob backends also say how to list what they hold for one upload, which
lets the suite check that abort/discard/delete really free storage.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from chunkd.backends.blobs.local import LocalBlobStore
from chunkd.backends.repository.sqlalchemy.database import create_engine, migrate
from chunkd.backends.repository.sqlalchemy.repository import SqlRepository
from chunkd.domain.upload import Upload
from chunkd.ports.blobs import BlobStore


@dataclass(frozen=True)
class BlobBackend:
    name: str
    make: Callable[[Path], AbstractAsyncContextManager[BlobStore]]
    # Every stored object of one upload, committed or not (names are backend-specific).
    stored: Callable[[BlobStore, Upload], Awaitable[set[str]]]
    marks: Sequence[Any] = field(default_factory=tuple)


@dataclass(frozen=True)
class RepositoryBackend:
    name: str
    make: Callable[[Path], AbstractAsyncContextManager[SqlRepository]]
    marks: Sequence[Any] = field(default_factory=tuple)


# ---- local disk ------------------------------------------------------------------------------
@asynccontextmanager
async def local_blob_store(tmp_path: Path) -> AsyncIterator[BlobStore]:
    store = LocalBlobStore(tmp_path / "blobs", fsync=True)
    try:
        yield store
    finally:
        await store.close()


async def local_stored(store: BlobStore, upload: Upload) -> set[str]:
    assert isinstance(store, LocalBlobStore)
    directory = store.root / upload.id[:2] / upload.id
    return {p.name for p in directory.iterdir()} if directory.exists() else set()


# ---- SQLite ----------------------------------------------------------------------------------
@asynccontextmanager
async def sqlite_repository(tmp_path: Path) -> AsyncIterator[SqlRepository]:
    engine = create_engine(f"sqlite:///{tmp_path / 'contract.db'}")
    await migrate(engine)
    repo = SqlRepository(engine)
    try:
        yield repo
    finally:
        await repo.close()


# ---- the lists: add new backends here ---------------------------------------------------------
BLOB_BACKENDS: list[BlobBackend] = [
    BlobBackend("local", local_blob_store, local_stored),
]

REPOSITORY_BACKENDS: list[RepositoryBackend] = [
    RepositoryBackend("sqlite", sqlite_repository),
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
    async with backend.make(tmp_path) as store:
        yield BlobFixture(store, backend)


@pytest.fixture(params=[pytest.param(b, id=b.name, marks=list(b.marks)) for b in REPOSITORY_BACKENDS])
async def repo(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[SqlRepository]:
    backend: RepositoryBackend = request.param
    async with backend.make(tmp_path) as repository:
        yield repository
