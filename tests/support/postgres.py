"""A real, throw-away PostgreSQL server for the test session, as ``pytest-postgresql`` does it:
``initdb`` + ``pg_ctl`` on a temporary directory and a free 127.0.0.1 port, stopped at the end.

Hand-written rather than taken from pytest-postgresql because we need two things it does not give
together: running ``initdb`` as an unprivileged user when the suite runs as root (CI does; initdb
refuses root), and a migrated *template* database that each test clones in a few milliseconds.

The binaries come from Debian's ``postgresql`` package (``scripts/services/postgres.sh`` installs
it); they live in ``/usr/lib/postgresql/<version>/bin``."""

from __future__ import annotations

import asyncio
import contextlib
import glob
import itertools
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from tests.support.server import free_port

__all__ = ["PostgresServer", "find_pg_bin", "own_postgres"]


def find_pg_bin() -> Path | None:
    """The newest installed PostgreSQL's bin directory (Debian layout), else one on PATH."""
    candidates = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"), key=lambda p: int(Path(p).parent.parent.name), reverse=True
    )
    if candidates:
        return Path(candidates[0]).parent
    found = shutil.which("pg_ctl")
    return Path(found).parent if found else None


def _run_as() -> list[str]:
    """Prefix that drops root (initdb and postgres refuse to run as root)."""
    if os.geteuid() != 0:
        return []
    for user in ("postgres", "nobody"):
        try:
            pwd.getpwnam(user)
        except KeyError:
            continue
        return ["runuser", "-u", user, "--"]
    raise RuntimeError("running as root, and neither a 'postgres' nor a 'nobody' user exists for initdb")


class PostgresServer:
    """One PostgreSQL cluster in a temporary directory, trust auth, bound to 127.0.0.1 only."""

    def __init__(self, bin_dir: Path) -> None:
        self.bin_dir = bin_dir
        self.port = free_port()
        self.root = Path(tempfile.mkdtemp(prefix="chunkd-pg-"))
        self.data = self.root / "data"
        self.log = self.root / "postgres.log"
        self.user = "postgres"
        self._names = itertools.count(1)
        self.template: str | None = None
        self._free: list[str] = []  # migrated databases emptied after use, ready for the next test

    def _cmd(self, *args: str) -> list[str]:
        return [*_run_as(), *args]

    def start(self) -> PostgresServer:
        prefix = _run_as()
        if prefix:
            os.chmod(self.root, 0o777)  # the unprivileged user owns what lives inside
            subprocess.run(["chown", prefix[2], str(self.root)], check=True)
        subprocess.run(
            self._cmd(
                str(self.bin_dir / "initdb"),
                "-D",
                str(self.data),
                "-U",
                self.user,
                "--auth=trust",
                "--encoding=UTF8",
                "--locale=C",
                "--no-sync",
            ),
            check=True,
            capture_output=True,
        )
        return self.resume()

    def resume(self) -> PostgresServer:
        """Start the server on its cluster (again, after ``pause``), on the same port."""
        # Durability settings off: this cluster lives for one test session. Unix sockets go to the
        # temporary directory (the default /var/run/postgresql may not exist or be writable).
        options = (
            f"-p {self.port} -c listen_addresses=127.0.0.1 -k {self.root} -c fsync=off "
            "-c synchronous_commit=off -c full_page_writes=off -c max_connections=300 -c shared_buffers=64MB"
        )
        subprocess.run(
            self._cmd(
                str(self.bin_dir / "pg_ctl"), "-D", str(self.data), "-l", str(self.log), "-o", options, "-w", "start"
            ),
            check=True,
            capture_output=True,
        )
        return self

    def pause(self) -> None:
        """Stop the server as an operator's restart does (``pg_ctl stop -m fast``: sessions are
        ended, committed data kept), leaving its cluster for ``resume``."""
        subprocess.run(
            self._cmd(str(self.bin_dir / "pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "stop"),
            check=True,
            capture_output=True,
        )

    def _processes(self) -> list[int]:
        """The postmaster and every process it started (backends, checkpointer, walwriter...)."""
        postmaster = int((self.data / "postmaster.pid").read_text().split()[0])
        pids = [postmaster]
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                fields = stat.read_text().rsplit(")", 1)[1].split()
            except OSError:  # gone meanwhile
                continue
            if int(fields[1]) == postmaster:  # the parent's pid, after the state letter
                pids.append(int(stat.parent.name))
        return pids

    def freeze(self) -> None:
        """Make the server hang without closing anything (SIGSTOP to all its processes): its
        sockets stay open and connections are still accepted by the kernel, but nothing answers,
        as with a server stuck on a dead disk or a host that stopped scheduling it."""
        for pid in self._processes():
            with contextlib.suppress(ProcessLookupError):  # a backend that ended since it was listed
                os.kill(pid, signal.SIGSTOP)

    def thaw(self) -> None:
        for pid in self._processes():
            with contextlib.suppress(ProcessLookupError):  # a backend that ended since it was listed
                os.kill(pid, signal.SIGCONT)

    def stop(self) -> None:
        subprocess.run(
            self._cmd(str(self.bin_dir / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "-w", "stop"),
            capture_output=True,
        )
        shutil.rmtree(self.root, ignore_errors=True)

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://{self.user}@127.0.0.1:{self.port}/{database}"

    async def _admin(self, *statements: str, fetch: str | None = None) -> Any:
        """Run ``statements`` in the ``postgres`` database, then answer ``fetch``'s first value."""
        import asyncpg

        conn = await asyncpg.connect(self.url())
        try:
            for statement in statements:
                await conn.execute(statement)
            return await conn.fetchval(fetch) if fetch is not None else None
        finally:
            await conn.close()

    def admin(self, *statements: str) -> None:
        asyncio.run(self._admin(*statements))

    def value(self, query: str) -> Any:
        """The first column of the first row ``query`` answers (in the ``postgres`` database)."""
        return asyncio.run(self._admin(fetch=query))

    def create_database(self, template: str | None = None) -> str:
        """A new empty database (or a clone of ``template``); returns its name."""
        name = f"chunkd_test_{next(self._names)}"
        clone = f" TEMPLATE {template}" if template else ""
        self.admin(f"CREATE DATABASE {name}{clone}")
        return name

    def migrated_database(self) -> str:
        """A fresh database at the latest migration: a clone of a template migrated once."""
        if self.template is None:
            from chunkd.backends.repository.sqlalchemy.database import create_engine, migrate

            name = self.create_database()

            async def upgrade() -> None:
                engine = create_engine(self.url(name))
                try:
                    await migrate(engine)
                finally:
                    await engine.dispose()

            asyncio.run(upgrade())
            self.template = name
        return self.create_database(self.template)

    def acquire_database(self) -> str:
        """An empty, migrated database for one test: a recycled one, else a new clone."""
        return self._free.pop() if self._free else self.migrated_database()

    def release_database(self, name: str) -> None:
        """Empty the test's database for the next test (TRUNCATE is faster than a new clone and
        keeps the cluster small); a database something still holds locks in is left alone."""

        async def truncate() -> bool:
            import asyncpg

            conn = await asyncpg.connect(self.url(name))
            try:
                await conn.execute("SET lock_timeout = '2s'")
                # Every table the migrations made (new ones included), not the migration history.
                tables = await conn.fetch(
                    "SELECT quote_ident(tablename) AS name FROM pg_tables "
                    "WHERE schemaname = 'public' AND tablename <> 'alembic_version'"
                )
                await conn.execute(f"TRUNCATE {', '.join(t['name'] for t in tables)} CASCADE")
                return True
            except asyncpg.PostgresError:
                return False
            finally:
                await conn.close()

        if asyncio.run(truncate()):
            self._free.append(name)


def session_server() -> Iterator[PostgresServer | None]:
    """Body of the session fixture: a started server, or None when PostgreSQL is not installed."""
    bin_dir = find_pg_bin()
    if bin_dir is None:
        yield None
        return
    server = PostgresServer(bin_dir).start()
    try:
        yield server
    finally:
        server.stop()


@contextlib.contextmanager
def own_postgres() -> Iterator[PostgresServer]:
    """A PostgreSQL server of one test's own, for a test that stops or freezes it (the session's is
    shared); the test is skipped where PostgreSQL is not installed."""
    import pytest

    bin_dir = find_pg_bin()
    if bin_dir is None:
        pytest.skip("PostgreSQL is not installed (scripts/services/postgres.sh installs it)")
    server = PostgresServer(bin_dir).start()
    try:
        yield server
    finally:
        server.stop()
