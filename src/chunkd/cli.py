"""The ``chunkd`` command: serve, keys, gc, migrate."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from chunkd.runtime import open_runtime
from chunkd.settings import Settings

app = typer.Typer(help="chunkd: a self-hosted, resumable, chunked upload server.", no_args_is_help=True)
keys_app = typer.Typer(help="Manage API keys.", no_args_is_help=True)
app.add_typer(keys_app, name="keys")
console = Console()

DataDir = Annotated[
    Path | None, typer.Option("--data-dir", help="Data directory (default: $CHUNKD_DATA_DIR or ./chunkd-data).")
]


def _settings(data_dir: Path | None, **overrides: Any) -> Settings:
    values = {k: v for k, v in overrides.items() if v is not None}
    if data_dir is not None:
        values["data_dir"] = data_dir
    return Settings(**values)


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Address to listen on [default: 127.0.0.1].")] = None,
    port: Annotated[int | None, typer.Option(help="Port to listen on [default: 8080].")] = None,
    data_dir: DataDir = None,
    server: Annotated[str | None, typer.Option(help="ASGI server: uvicorn or granian.")] = None,
) -> None:
    """Run the server (SQLite + local disk under the data dir unless configured otherwise)."""
    settings = _settings(data_dir, host=host, port=port, server=server)
    # Child processes and the app factory read the same settings from the environment.
    os.environ["CHUNKD_DATA_DIR"] = str(settings.data_dir)
    console.print(
        f"chunkd listening on http://{settings.host}:{settings.port} (data: {settings.data_dir})", style="green"
    )
    from chunkd.server.run import run_granian, run_uvicorn

    (run_granian if settings.server == "granian" else run_uvicorn)(settings)


async def _with_runtime(settings: Settings, action: Any) -> Any:
    runtime = await open_runtime(settings)
    try:
        return await action(runtime)
    finally:
        await runtime.close()


@keys_app.command("create")
def keys_create(
    owner: Annotated[str, typer.Option(help="Owner the key acts for.")],
    scopes: Annotated[str, typer.Option(help="Comma-separated scopes.")] = "files:create,files:read",
    name: Annotated[str | None, typer.Option(help="A label for the key.")] = None,
    data_dir: DataDir = None,
) -> None:
    """Create an API key; the key itself is printed alone on the last line."""

    async def create(runtime: Any) -> tuple[Any, str]:
        return await runtime.keys.create(owner, scopes, name=name)  # type: ignore[no-any-return]

    from chunkd.domain.errors import ChunkdError

    try:
        record, token = asyncio.run(_with_runtime(_settings(data_dir), create))
    except ChunkdError as exc:
        console.print(f"error: {exc.message}", style="red")
        raise typer.Exit(2) from None
    console.print(f"key id {record.id} for owner {record.owner}, scopes {' '.join(sorted(record.scopes))}")
    print(token, flush=True)


@keys_app.command("list")
def keys_list(data_dir: DataDir = None) -> None:
    """List API keys (never their secrets)."""

    async def listing(runtime: Any) -> Any:
        return await runtime.keys.list()

    table = Table("id", "owner", "scopes", "created", "revoked", "name")
    for key in asyncio.run(_with_runtime(_settings(data_dir), listing)):
        table.add_row(
            key.id,
            key.owner,
            " ".join(sorted(key.scopes)),
            key.created_at.isoformat(timespec="seconds"),
            key.revoked_at.isoformat(timespec="seconds") if key.revoked_at else "",
            key.name or "",
        )
    console.print(table)


@keys_app.command("revoke")
def keys_revoke(key_id: str, data_dir: DataDir = None) -> None:
    """Revoke an API key at once."""
    from chunkd.domain.errors import ChunkdError

    async def revoke(runtime: Any) -> None:
        await runtime.keys.revoke(key_id)

    try:
        asyncio.run(_with_runtime(_settings(data_dir), revoke))
    except ChunkdError as exc:
        console.print(f"error: {exc.message}", style="red")
        raise typer.Exit(2) from None
    console.print(f"revoked {key_id}")


@app.command()
def gc(
    data_dir: DataDir = None,
    grace: Annotated[float, typer.Option(help="Spare unreferenced blobs younger than this many seconds.")] = 3600,
) -> None:
    """Expire idle uploads and remove blobs nothing points at (safe beside a running server)."""

    async def collect(runtime: Any) -> tuple[int, int]:
        expired = 0
        while True:
            batch = await runtime.uploads.expire_due(limit=500)
            expired += batch
            if batch < 500:
                break
        swept = 0
        sweep = getattr(runtime.blobs, "sweep", None)
        if sweep is not None:
            swept = await sweep(await runtime.repo.live_blobs(), grace_seconds=grace)
        return expired, swept

    expired, swept = asyncio.run(_with_runtime(_settings(data_dir), collect))
    console.print(f"expired {expired} upload(s); removed {swept} orphaned blob(s)")


@app.command()
def migrate(data_dir: DataDir = None) -> None:
    """Apply database migrations (safe to run from several nodes at once on PostgreSQL)."""
    from chunkd.backends.repository.sqlalchemy.database import create_engine
    from chunkd.backends.repository.sqlalchemy.database import migrate as upgrade

    settings = _settings(data_dir)
    if settings.database_url is None:  # the default SQLite file lives in the data dir
        settings.data_dir.mkdir(parents=True, exist_ok=True)

    async def run() -> None:
        engine = create_engine(settings.resolved_database_url())
        try:
            await upgrade(engine)
        finally:
            await engine.dispose()

    asyncio.run(run())
    console.print("database is up to date")


def main() -> None:
    app()


if __name__ == "__main__":
    main()
