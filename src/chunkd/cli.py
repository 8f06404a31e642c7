"""The ``chunkd`` command: serve, keys, gc, migrate."""

from __future__ import annotations

import asyncio
import json
import os
import re
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Column, Table

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
    from chunkd.app import create_app

    app_ = create_app(settings)
    console.print(
        f"chunkd listening on http://{settings.host}:{settings.port} (data: {settings.data_dir})", style="green"
    )
    if settings.server == "granian":
        from granian.constants import Interfaces
        from granian.server import Server

        Server(
            target="chunkd.app:create_app",
            factory=True,
            address=settings.host,
            port=settings.port,
            interface=Interfaces.ASGI,
        ).serve()
        return
    import uvicorn

    uvicorn.run(
        app_,
        host=settings.host,
        port=settings.port,
        log_level="warning",
        loop="uvloop",
        http="httptools",
        timeout_keep_alive=30,
        h11_max_incomplete_event_size=64 * 1024,
    )


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


def _key_row(key: Any) -> dict[str, Any]:
    return {
        "id": key.id,
        "owner": key.owner,
        "scopes": sorted(key.scopes),
        "createdAt": key.created_at.isoformat(timespec="seconds"),
        "revokedAt": key.revoked_at.isoformat(timespec="seconds") if key.revoked_at else None,
        "name": key.name,
    }


@keys_app.command("list")
def keys_list(
    data_dir: DataDir = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print a JSON array of key objects.")] = False,
) -> None:
    """List API keys (never their secrets). On a terminal: a table; piped: one tab-separated line
    per key (id, owner, scopes, created, revoked, name), ids always whole, so what is shown can be
    passed to ``keys revoke``."""

    async def listing(runtime: Any) -> Any:
        return await runtime.keys.list()

    rows = [_key_row(key) for key in asyncio.run(_with_runtime(_settings(data_dir), listing))]
    if as_json:
        print(json.dumps(rows, indent=2))
        return
    if not sys.stdout.isatty():
        # A table would be cut to the (unknown) width of a pipe: plain lines for scripts instead.
        for row in rows:
            fields = (row["id"], row["owner"], ",".join(row["scopes"]), row["createdAt"], row["revokedAt"], row["name"])
            print("\t".join(_tsv(value) for value in fields))
        return
    table = Table("owner", "scopes", "created", "revoked", "name")
    # The id is what `keys revoke` takes: it is never shortened, whatever the terminal's width.
    table.columns.insert(0, Column("id", no_wrap=True, min_width=max((len(r["id"]) for r in rows), default=2)))
    for row in rows:
        table.add_row(
            row["id"],
            row["owner"],
            " ".join(row["scopes"]),
            row["createdAt"],
            row["revokedAt"] or "",
            row["name"] or "",
        )
    console.print(table)


def _tsv(value: str | None) -> str:
    """One field of a tab-separated line (a name could hold a tab or a newline)."""
    return "" if value is None else value.replace("\t", " ").replace("\n", " ")


def _revoke_target(given: str) -> str:
    """The key id in what was given: the id itself, or a whole key ``ck_<id>_<secret>`` (or its
    ``ck_<id>`` prefix), so a key pasted from anywhere can be revoked."""
    match = re.fullmatch(r"ck_([0-9a-f]{16})(?:_.*)?", given.strip())
    return match.group(1) if match else given.strip()


@keys_app.command("revoke")
def keys_revoke(
    key_id: Annotated[str, typer.Argument(help="The key id as `keys list` shows it, or the whole key.")],
    data_dir: DataDir = None,
) -> None:
    """Revoke an API key at once."""
    from chunkd.domain.errors import ChunkdError

    target = _revoke_target(key_id)

    async def revoke(runtime: Any) -> None:
        await runtime.keys.revoke(target)

    try:
        asyncio.run(_with_runtime(_settings(data_dir), revoke))
    except ChunkdError as exc:
        console.print(f"error: {exc.message}", style="red")
        raise typer.Exit(2) from None
    console.print(f"revoked {target}")


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
