"""Async engine construction and Alembic migrations for SQLite and PostgreSQL."""

from __future__ import annotations

import logging
import re
from pathlib import Path

from sqlalchemy import event, inspect, text
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from chunkd.backends.repository.full import DATABASE_TIMEOUT

__all__ = ["HEAD_REVISION", "SchemaMismatch", "async_url", "check_schema", "create_engine", "migrate"]

log = logging.getLogger("chunkd.startup")  # what `chunkd serve` shows of its start (server/run.py:log_config)

MIGRATIONS = Path(__file__).parent / "migrations"
# The newest migration (a test checks it is Alembic's head). A database already there is not handed
# to Alembic at start-up, so a node never imports it (~9.5 MB of RSS, measured 2026-11-30) unless it
# has something to migrate.
HEAD_REVISION = "0013_endpoint_secret_rotation"
# Every revision this version knows, read from its migration files' ``revision = "…"`` lines (a test
# checks they are Alembic's), again without importing Alembic.
KNOWN_REVISIONS = frozenset(
    match.group(1)
    for path in (MIGRATIONS / "versions").glob("[0-9]*.py")
    if (match := re.search(r'^revision = "([^"]+)"$', path.read_text(encoding="utf-8"), re.MULTILINE))
)


class SchemaMismatch(RuntimeError):
    """The database's schema is not one this version of chunkd can run on."""


def async_url(url: str) -> str:
    """Accept the usual spellings (``sqlite:///…``, ``postgresql://…``) and pick the async driver."""
    parsed = make_url(url)
    driver = {"sqlite": "sqlite+aiosqlite", "postgresql": "postgresql+asyncpg", "postgres": "postgresql+asyncpg"}
    if parsed.drivername in driver:
        parsed = parsed.set(drivername=driver[parsed.drivername])
    return parsed.render_as_string(hide_password=False)


def create_engine(url: str, *, timeout: float = DATABASE_TIMEOUT, timed_statements: bool = True) -> AsyncEngine:
    """``timeout``: PostgreSQL only, how long a new connection, and a statement unless not
    ``timed_statements``, may wait for the server (``full.DATABASE_TIMEOUT``); SQLite waits for its
    write lock for 30 s (busy_timeout)."""
    url = async_url(url)
    if url.startswith("sqlite"):
        engine = create_async_engine(url, connect_args={"timeout": 30})

        @event.listens_for(engine.sync_engine, "connect")
        def _pragmas(dbapi_connection, _record):  # type: ignore[no-untyped-def]
            cursor = dbapi_connection.cursor()
            # WAL lets readers run beside the writer; synchronous=FULL makes a commit durable
            # before it returns (acknowledged means durable, also across power loss).
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=FULL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute("PRAGMA busy_timeout=30000")
            cursor.close()

        return engine
    return create_async_engine(
        url,
        pool_size=10,
        max_overflow=20,
        pool_pre_ping=True,
        connect_args={"timeout": timeout, **({"command_timeout": timeout} if timed_statements else {})},
    )


def _current_revision(connection: Connection) -> str | None:
    if not inspect(connection).has_table("alembic_version"):
        return None
    return connection.execute(text("SELECT version_num FROM alembic_version")).scalar()


def _newer_schema(current: str) -> str:
    return (
        f"the database's schema ({current}) was made by a newer chunkd than this one, which knows up to {HEAD_REVISION}"
    )


def _upgrade(connection: Connection) -> None:
    current = _current_revision(connection)
    if current == HEAD_REVISION:
        return
    if current is not None and current not in KNOWN_REVISIONS:
        # Alembic's own refusal is a traceback ending in "Can't locate revision".
        raise SchemaMismatch(
            _newer_schema(current) + ": run the newer version, or, while nodes are upgraded one by one, start "
            "this one with CHUNKD_MIGRATE_ON_START=false"
        )
    log.info("migrating the database's schema from %s to %s", current or "nothing", HEAD_REVISION)
    from alembic import command
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["connection"] = connection
    command.upgrade(config, "head")


# pg_advisory_xact_lock key that serialises migrations ("chunkd-migrate" as a 64-bit number).
MIGRATION_LOCK_KEY = int.from_bytes(b"chunkdmg", "big", signed=True)


async def migrate(engine: AsyncEngine, *, connect_timeout: float = DATABASE_TIMEOUT) -> str | None:
    """Apply every pending migration (idempotent), in one transaction; returns the revision the
    database was at before (None: no schema yet), ``HEAD_REVISION`` when nothing was pending.

    On PostgreSQL the DDL is transactional and the whole upgrade runs under a transaction-level
    advisory lock, so several nodes starting at once migrate one after the other: the first does
    the work, the others wait for it and then find nothing left to do. There, it runs on an
    engine of its own without a statement timeout: a migration may rewrite a large table, and
    waits for as long as another node's takes (a new connection still waits at most
    ``connect_timeout``). Whether one is pending is asked first on ``engine``,
    whose statements are timed: a node starting against a database that accepts connections but
    does not answer (frozen, a stalled disk) fails within the timeout, saying so, instead of
    waiting for ever; only a pending migration waits untimed. On SQLite it runs on an engine of its
    own too, whose transactions hold schema changes (``_transactional_sqlite``)."""
    if engine.url.database in (None, "", ":memory:") and engine.dialect.name == "sqlite":
        await _migrate(engine)  # a database of this engine's own connection: no other can see it
        return None
    async with engine.connect() as connection:
        before = await connection.run_sync(_current_revision)
        if before == HEAD_REVISION:
            return before
    url = engine.url.render_as_string(hide_password=False)
    if engine.dialect.name == "postgresql":
        own = create_engine(url, timeout=connect_timeout, timed_statements=False)
    else:
        own = _transactional_sqlite(url)
    try:
        await _migrate(own)
    finally:
        await own.dispose()
    return before


def _transactional_sqlite(url: str) -> AsyncEngine:
    """An SQLite engine whose transactions hold schema changes too. Python's ``sqlite3`` opens a
    transaction only before INSERT, UPDATE, DELETE or REPLACE, so each ALTER and CREATE of a
    migration committed on its own: one killed or failed half-way left a column added under the old
    revision, and every later start failed on it ("duplicate column name"). Here the driver opens
    none and each transaction begins with ``BEGIN IMMEDIATE`` (SQLAlchemy's documented recipe), which
    also takes the write lock first: a second process migrating at once waits, then finds the
    revision it would have reached."""
    engine = create_engine(url)

    @event.listens_for(engine.sync_engine, "connect")
    def _no_implicit_transactions(dbapi_connection, _record):  # type: ignore[no-untyped-def]
        dbapi_connection.isolation_level = None

    @event.listens_for(engine.sync_engine, "begin")
    def _begin(connection):  # type: ignore[no-untyped-def]
        connection.exec_driver_sql("BEGIN IMMEDIATE")

    return engine


async def check_schema(engine: AsyncEngine) -> None:
    """For a node that does not migrate: refuse to run on a schema older than this version's (every
    request would fail on a missing column while its health checks passed); run on a newer one,
    saying so, as an old node does while a rolling upgrade replaces it (migrations only add)."""
    async with engine.connect() as connection:
        current = await connection.run_sync(_current_revision)
    if current == HEAD_REVISION:
        return
    if current is None or current in KNOWN_REVISIONS:
        raise SchemaMismatch(
            f"the database's schema is {'not there' if current is None else 'at ' + current}; this chunkd "
            f"needs {HEAD_REVISION}: run `chunkd migrate` (CHUNKD_MIGRATE_ON_START is false)"
        )
    log.warning("%s; running on it, as during a rolling upgrade: upgrade this node", _newer_schema(current))


async def _migrate(engine: AsyncEngine) -> None:
    async with engine.begin() as connection:
        if connection.dialect.name == "postgresql":
            await connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK_KEY})
        await connection.run_sync(_upgrade)
