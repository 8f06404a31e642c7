"""The server-side commands: ``serve``, ``gc`` and ``migrate`` (on the data dir and database)."""

from __future__ import annotations

import asyncio
import errno
import os
import socket
import sys
from typing import TYPE_CHECKING, Annotated

import typer

from chunkd.cli.common import (
    DataDir,
    app,
    console,
    err_console,
    no_database_yet,
    require_data_dir,
    settings_for,
    with_runtime,
)

if TYPE_CHECKING:
    from chunkd.runtime import Runtime
    from chunkd.settings import Settings

__all__ = ["gc", "listen_problem", "migrate", "serve"]


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Address to listen on (default 127.0.0.1).")] = None,
    port: Annotated[int | None, typer.Option(help="Port to listen on (default 8080).")] = None,
    data_dir: DataDir = None,
    server: Annotated[str | None, typer.Option(help="ASGI server: uvicorn or granian.")] = None,
    workers: Annotated[
        int | None, typer.Option(min=1, max=64, help="Server processes on the one port (uvicorn; default 1).")
    ] = None,
) -> None:
    """Run the server (SQLite + local disk under the data dir unless configured otherwise)."""
    settings = settings_for(data_dir, host=host, port=port, server=server, workers=workers)
    require_data_dir(settings)
    # Before anything is made or announced: a port in use is one clear line, not a data dir, a
    # bootstrap key and "listening on" followed by the server's own bind error.
    if problem := listen_problem(settings.host, settings.port):
        typer.echo(f"chunkd: {problem}", err=True)
        raise typer.Exit(1)
    # The server reads the same settings from the environment: the options are passed on there.
    os.environ.update(
        CHUNKD_DATA_DIR=str(settings.data_dir),
        CHUNKD_HOST=settings.host,
        CHUNKD_PORT=str(settings.port),
        CHUNKD_SERVER=settings.server,
        CHUNKD_WORKERS=str(settings.workers),
    )
    _migrate_embedded(settings)
    listening = f"chunkd listening on http://{settings.host}:{settings.port} (data: {settings.data_dir})"
    if settings.log_format == "json":  # every line of the server's output is one JSON object then
        from chunkd.observability.logformat import json_line

        print(json_line("INFO", "chunkd.startup", listening))
    else:
        console.print(listening, style="green")
    sys.stdout.flush()
    sys.stderr.flush()
    # The server runs in a fresh interpreter in this same process (same pid, signals and
    # descriptors), without the command line's libraries: typer, click and rich stay resident
    # otherwise, ~10 MiB of a ~115 MiB idle server (2026-11-30).
    os.execv(sys.executable, [sys.executable, "-m", "chunkd.server"])


def listen_problem(host: str, port: int) -> str | None:
    """Why the server could not listen on ``host:port``, or None: a trial bind, released at once,
    made as uvicorn binds (IPv6 when the host has a colon, IPv4 otherwise; SO_REUSEADDR)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as trial:
        trial.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            trial.bind((host, port))
        except socket.gaierror as exc:
            return f"host (--host, CHUNKD_HOST): cannot listen on {host!r}: {exc.strerror}"
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                return (
                    f"port {port} on {host} is already in use (by another chunkd serve?): stop that, "
                    "or choose another port with --port or CHUNKD_PORT"
                )
            return f"cannot listen on {host}:{port}: {exc.strerror or exc}"
    return None


def _migrate_embedded(settings: Settings) -> None:
    """Create the default SQLite database of a new data dir here, before the server starts: the
    server then finds it current and never imports Alembic (idle RSS 105 → 100 MiB, 2026-11-30).
    Anything else is left to the server, which migrates what needs it and reports any failure."""
    if not settings.migrate_on_start or not no_database_yet(settings):
        return
    try:
        _upgrade(settings)
    except Exception:  # the server tries again and says why
        return


def _upgrade(settings: Settings) -> str | None:
    """Migrate the settings' database; the data dir and an SQLite file are made private first, as
    the server makes them (the database holds key hashes and every upload's metadata)."""
    from chunkd.backends.repository.sqlalchemy.database import create_engine
    from chunkd.backends.repository.sqlalchemy.database import migrate as upgrade
    from chunkd.runtime import private_data_dir, private_sqlite_files

    if settings.database_url is None:  # the default SQLite file lives in the data dir
        require_data_dir(settings)
        private_data_dir(settings.data_dir)
    private_sqlite_files(settings.resolved_database_url())

    async def run() -> str | None:
        engine = create_engine(settings.resolved_database_url(), timeout=settings.database_timeout_seconds)
        try:
            return await upgrade(engine, connect_timeout=settings.database_timeout_seconds)
        finally:
            await engine.dispose()

    return asyncio.run(run())


@app.command()
def gc(
    data_dir: DataDir = None,
    grace: Annotated[
        float,
        typer.Option(
            help="Spare unreferenced blobs younger than this many seconds. Beside a running server keep it"
            " longer than a part can take to arrive: a part being written is not referenced yet."
        ),
    ] = 3600,
) -> None:
    """Expire idle uploads and remove blobs nothing points at (safe beside a running server)."""

    from chunkd.domain.errors import ForeignStore

    async def collect(runtime: Runtime) -> tuple[int, int | ForeignStore]:
        expired = 0
        while True:
            batch = await runtime.uploads.expire_due(limit=500)
            expired += batch
            if batch < 500:
                break
        try:
            return expired, await runtime.uploads.sweep_orphans(grace)
        except ForeignStore as refused:
            return expired, refused

    expired, swept = asyncio.run(with_runtime(settings_for(data_dir), collect))
    if isinstance(swept, ForeignStore):
        console.print(f"expired {expired} upload(s)")
        err_console.print(f"chunkd: {swept.message}", markup=False)
        raise typer.Exit(1)
    console.print(f"expired {expired} upload(s); removed {swept} orphaned blob(s)")


@app.command()
def migrate(data_dir: DataDir = None) -> None:
    """Apply database migrations (safe to run from several nodes at once on PostgreSQL)."""
    from chunkd.backends.repository.sqlalchemy.database import HEAD_REVISION, SchemaMismatch

    try:
        before = _upgrade(settings_for(data_dir))
    except SchemaMismatch as exc:  # a newer chunkd's schema: one line, as the server says it
        err_console.print(f"chunkd: {exc}", style="red", markup=False)
        raise typer.Exit(1) from None
    if before == HEAD_REVISION:
        console.print(f"database is up to date (schema {HEAD_REVISION})")
    else:
        console.print(f"database migrated from {before or 'nothing'} to schema {HEAD_REVISION}")
