"""What every SQLAlchemy repository shares: the engine and its short transactions, row ↔ record
mapping, and the dialect's own ``INSERT … ON CONFLICT``.

Each repository method is one short transaction (``transaction``) or one read (``first``,
``all``, ``scalar``). Write transactions start with a write, so SQLite takes its write lock up
front instead of failing a read → write upgrade."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Mapping
from contextlib import asynccontextmanager, contextmanager
from typing import Any, Generic, TypeVar

from sqlalchemy import Table, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Row
from sqlalchemy.exc import DBAPIError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine
from sqlalchemy.sql import Executable

from chunkd.backends.repository.full import database_unreachable, storage_fault
from chunkd.domain.errors import DatabaseUnavailable

__all__ = ["RowMap", "SqlStore", "database_faults"]


@contextmanager
def database_faults() -> Iterator[None]:
    """A full, failed or unreachable database is the engine's ``StorageError`` (``full.py``), for
    reads as for writes. SQLAlchemy wraps the driver's errors (``orig``), but lets a failed
    connect's socket error through as it is; a connection it found dead is ``connection_invalidated``."""
    try:
        yield
    except DBAPIError as exc:
        if (fault := storage_fault(exc.orig)) is not None:
            raise fault from exc
        if exc.connection_invalidated:
            raise database_unreachable() from exc
        raise
    except OSError as exc:  # a timed-out statement too (asyncpg's TimeoutError is an OSError)
        raise (storage_fault(exc) or database_unreachable()) from exc
    except PoolTimeout as exc:
        # No pooled connection came free in time: with a hung database every connection is
        # held by a statement waiting for it (until its own timeout).
        raise DatabaseUnavailable("no metadata database connection came free in time; try again shortly") from exc


T = TypeVar("T")


class RowMap(Generic[T]):
    """How a record dataclass maps onto a table row: a field is stored in the column of its own
    name unless ``columns`` renames it; ``load``/``dump`` convert a field's value on the way out of
    and into the database; fields in ``skip`` are not stored (e.g. the parts loaded with an
    upload)."""

    def __init__(
        self,
        record: type[T],
        *,
        columns: Mapping[str, str] | None = None,
        load: Mapping[str, Callable[[Any], Any]] | None = None,
        dump: Mapping[str, Callable[[Any], Any]] | None = None,
        skip: Iterable[str] = (),
    ) -> None:
        skipped = set(skip)
        renamed = columns or {}
        self.record = record
        # (field, column) for every stored field, computed once: rows are mapped on every request.
        self.pairs = [
            (f.name, renamed.get(f.name, f.name))
            for f in dataclasses.fields(record)  # type: ignore[arg-type]
            if f.name not in skipped
        ]
        self.load = dict(load or {})
        self.dump = dict(dump or {})

    def from_row(self, row: Row[Any]) -> T:
        """The record of a row (selected with every column of the table)."""
        values = row._mapping
        load = self.load
        kwargs = {}
        for name, column in self.pairs:
            value = values[column]
            convert = load.get(name)
            kwargs[name] = value if convert is None else convert(value)
        return self.record(**kwargs)

    def to_row(self, record: T) -> dict[str, Any]:
        """The column values of a record."""
        dump = self.dump
        row = {}
        for name, column in self.pairs:
            value = getattr(record, name)
            convert = dump.get(name)
            row[column] = value if convert is None else convert(value)
        return row


class SqlStore:
    """The engine a repository works on, and the few ways it talks to it."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        self.dialect = engine.dialect.name

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[AsyncConnection]:
        """A connection in a transaction, committed when the block ends (rolled back on error)."""
        with database_faults():
            async with self.engine.begin() as conn:
                yield conn

    @asynccontextmanager
    async def reading(self) -> AsyncIterator[AsyncConnection]:
        """A connection for reads (no transaction of ours)."""
        with database_faults():
            async with self.engine.connect() as conn:
                yield conn

    async def first(self, query: Executable, mapper: Callable[[Row[Any]], T]) -> T | None:
        """The first row of ``query`` mapped, or None."""
        async with self.reading() as conn:
            row = (await conn.execute(query)).first()
        return None if row is None else mapper(row)

    async def all(self, query: Executable, mapper: Callable[[Row[Any]], T]) -> list[T]:
        """Every row of ``query``, mapped."""
        async with self.reading() as conn:
            return [mapper(row) for row in await conn.execute(query)]

    async def scalar(self, query: Executable) -> Any:
        """The single value ``query`` selects."""
        async with self.reading() as conn:
            return (await conn.execute(query)).scalar_one()

    async def run(self, statement: Executable) -> int:
        """Run one write statement in its own transaction; the number of rows it matched."""
        async with self.transaction() as conn:
            return int((await conn.execute(statement)).rowcount)

    def insert(self, table: Table) -> Any:
        """The dialect's own INSERT (with ``on_conflict_do_update``/``do_nothing``)."""
        return (postgresql.insert if self.dialect == "postgresql" else sqlite.insert)(table)

    async def ping(self) -> None:
        """A trivial query (readiness): raises when the database cannot answer."""
        async with self.engine.connect() as conn:
            await conn.execute(select(1))

    async def close(self) -> None:
        await self.engine.dispose()
