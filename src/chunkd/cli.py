"""The ``chunkd`` command: serve, keys, gc, migrate; and the client commands upload, download, ls, rm
(built on the SDK in :mod:`chunkd.client`, imported only when one of them runs)."""

from __future__ import annotations

import asyncio
import json
import os
import re
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.table import Column, Table

if TYPE_CHECKING:  # imported where used: the client commands need neither SQLAlchemy nor the settings
    from chunkd.ports.keys import ApiKeyRecord
    from chunkd.runtime import Runtime
    from chunkd.settings import Settings

T = TypeVar("T")

app = typer.Typer(help="chunkd: a self-hosted, resumable, chunked upload server.", no_args_is_help=True)
keys_app = typer.Typer(help="Manage API keys.", no_args_is_help=True)
app.add_typer(keys_app, name="keys")
console = Console()

DataDir = Annotated[
    Path | None, typer.Option("--data-dir", help="Data directory (default: $CHUNKD_DATA_DIR or ./chunkd-data).")
]


def _settings(data_dir: Path | None, **overrides: Any) -> Settings:
    from chunkd.settings import Settings

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


async def _with_runtime(settings: Settings, action: Callable[[Runtime], Awaitable[T]]) -> T:
    from chunkd.runtime import open_runtime

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

    async def create(runtime: Runtime) -> tuple[ApiKeyRecord, str]:
        return await runtime.keys.create(owner, scopes, name=name)

    from chunkd.domain.errors import ChunkdError

    try:
        record, token = asyncio.run(_with_runtime(_settings(data_dir), create))
    except ChunkdError as exc:
        console.print(f"error: {exc.message}", style="red")
        raise typer.Exit(2) from None
    console.print(f"key id {record.id} for owner {record.owner}, scopes {' '.join(sorted(record.scopes))}")
    print(token, flush=True)


def _key_row(key: ApiKeyRecord) -> dict[str, Any]:
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

    async def listing(runtime: Runtime) -> list[ApiKeyRecord]:
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

    async def revoke(runtime: Runtime) -> None:
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

    async def collect(runtime: Runtime) -> tuple[int, int]:
        expired = 0
        while True:
            batch = await runtime.uploads.expire_due(limit=500)
            expired += batch
            if batch < 500:
                break
        swept = 0
        sweeper = runtime.uploads.caps.sweeper
        if sweeper is not None:
            swept = await sweeper.sweep(await runtime.repo.live_blobs(), grace_seconds=grace)
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


# ---- client commands (the SDK, over HTTP) -------------------------------------------------------------

Url = Annotated[str, typer.Option("--url", envvar="CHUNKD_URL", help="Server URL.")]
Key = Annotated[
    str | None, typer.Option("--key", envvar="CHUNKD_KEY", help="API key (ck_...) or access token.", show_default=False)
]
JsonOutput = Annotated[bool, typer.Option("--json", help="One JSON object per line instead of text.")]
DEFAULT_URL = "http://127.0.0.1:8080"  # as chunkd.client.DEFAULT_URL (not imported here: `serve` stays lean)
err_console = Console(stderr=True, soft_wrap=True)  # messages stay whole lines in logs


def _client(url: str, key: str | None) -> Any:
    from chunkd.client import Client

    if not key:
        err_console.print("error: no API key: pass --key or set CHUNKD_KEY", style="red", markup=False)
        raise typer.Exit(1)
    return Client(url, key, on_retry=_tell_retry)


def _tell_retry(notice: Any) -> None:
    """Say why the command seems to pause (a server restarting, a proxy answering 502, a 429)."""
    err_console.print(
        f"retrying in {notice.delay:.1f} s after try {notice.attempt}: {notice.method} {notice.url}: {notice.reason}",
        style="yellow",
        markup=False,
    )


def _fatal(exc: Exception, url: str) -> None:
    """Exit at once on errors every further request would repeat (wrong key, server unreachable)."""
    from chunkd.client import AuthenticationError, ConnectionFailed, PermissionDenied

    if isinstance(exc, AuthenticationError):
        message = f"error: the server at {url} refused the API key ({exc.message}); check --key or CHUNKD_KEY"
    elif isinstance(exc, PermissionDenied) and exc.code == "missing_scope":
        message = f"error: the API key lacks a scope: {exc.message}"
    elif isinstance(exc, ConnectionFailed):
        message = f"error: cannot reach the server at {url}: {exc.message}"
    else:
        return
    err_console.print(message, style="red", markup=False)
    raise typer.Exit(1)


def _progress(enabled: bool) -> Any:
    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn, TransferSpeedColumn

    return Progress(
        TextColumn("{task.description}", markup=False),
        BarColumn(),
        DownloadColumn(binary_units=True),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
        console=err_console,
        disable=not enabled,
    )


@app.command()
def upload(
    paths: Annotated[list[Path], typer.Argument(help="Files to upload.", show_default=False)],
    url: Url = DEFAULT_URL,
    key: Key = None,
    parallel: Annotated[int, typer.Option(min=1, max=64, help="Parts sent at the same time.")] = 4,
    part_size: Annotated[
        str | None, typer.Option("--part-size", help="Bytes per part, e.g. 8MiB or 16M (default: the server's).")
    ] = None,
    json_output: JsonOutput = False,
) -> None:
    """Upload files in parts, in parallel, verified by MD5. Run the same command again after an
    interruption (Ctrl-C, kill, lost network) and it resumes: parts the server holds are not re-sent."""
    import json

    from chunkd.client import APIError, ClientError, format_size, parse_size

    try:
        part_bytes = parse_size(part_size) if part_size is not None else None
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--part-size") from None
    failed = 0
    sizes: dict[Path, int] = {}
    for path in paths:
        try:
            sizes[path] = path.stat().st_size
        except OSError as exc:
            err_console.print(f"error: {path}: {exc.strerror or exc}", style="red", markup=False)
            failed += 1
    show = err_console.is_terminal and not json_output
    with _client(url, key) as client, _progress(show) as progress:
        tasks = {path: progress.add_task(path.name, total=size) for path, size in sizes.items()}
        total = progress.add_task("total", total=sum(sizes.values())) if len(sizes) > 1 else None
        finished = 0
        for path, task in tasks.items():

            def on_progress(done: int, _: int, task: Any = task, base: int = finished) -> None:
                progress.update(task, completed=done)
                if total is not None:
                    progress.update(total, completed=base + done)

            try:
                file = client.upload(path, parallel=parallel, part_size=part_bytes, on_progress=on_progress)
            except KeyboardInterrupt:
                err_console.print("interrupted: run the same command again to resume", markup=False)
                raise typer.Exit(130) from None
            except (ClientError, OSError) as exc:
                progress.stop_task(task)
                if isinstance(exc, ClientError):
                    _fatal(exc, url)
                reason = str(exc) if isinstance(exc, APIError) else getattr(exc, "message", None) or str(exc)
                err_console.print(f"error: {path}: {reason}", style="red", markup=False)
                failed += 1
                continue
            finished += sizes[path]
            if json_output:
                print(json.dumps(file.summary()), flush=True)
            else:
                print(f"{path} → {file.id} ({format_size(file.size_bytes)}, md5 {file.md5})", flush=True)
    if failed:
        err_console.print(f"{failed} of {len(paths)} file(s) failed", style="red", markup=False)
        raise typer.Exit(1)


@app.command()
def download(
    file_id: Annotated[str, typer.Argument(metavar="ID", help="The file's id.", show_default=False)],
    output: Annotated[
        Path | None,
        typer.Option("-o", "--output", help="A file or a directory (default: the file's name, here)."),
    ] = None,
    url: Url = DEFAULT_URL,
    key: Key = None,
) -> None:
    """Download a completed file, verified by MD5; run it again after an interruption to continue
    where it stopped (Range)."""
    from chunkd.client import ClientError

    with _client(url, key) as client, _progress(err_console.is_terminal) as progress:
        task = progress.add_task(file_id, total=None)
        try:
            path = client.download(
                file_id, output, on_progress=lambda done, size: progress.update(task, completed=done, total=size)
            )
        except ClientError as exc:
            _fatal(exc, url)
            err_console.print(f"error: {file_id}: {exc}", style="red", markup=False)
            raise typer.Exit(1) from None
        except KeyboardInterrupt:
            err_console.print("interrupted: run the same command again to continue", markup=False)
            raise typer.Exit(130) from None
    print(path)


@app.command("ls")
def list_files(
    status: Annotated[
        str | None, typer.Option(help="Only files in this status: PENDING, COMPLETED, CANCELLED or EXPIRED.")
    ] = None,
    url: Url = DEFAULT_URL,
    key: Key = None,
    json_output: JsonOutput = False,
) -> None:
    """List your files, newest first."""
    import json

    from chunkd.client import ClientError, format_size

    table = Table("status", "size", "created", "filename")
    table.add_column("id", no_wrap=True, min_width=22)  # ids are for copying: never cut
    with _client(url, key) as client:
        try:
            for file in client.list(status=status.upper() if status else None):
                if json_output:
                    print(json.dumps(file.summary()), flush=True)
                    continue
                created = file.created_at.strftime("%Y-%m-%d %H:%M") if file.created_at else ""
                table.add_row(file.status, format_size(file.size_bytes), created, file.filename, file.id)
        except ClientError as exc:
            _fatal(exc, url)
            err_console.print(f"error: {exc}", style="red", markup=False)
            raise typer.Exit(1) from None
    if not json_output:
        console.print(table)


@app.command("rm")
def remove(
    file_ids: Annotated[list[str], typer.Argument(metavar="ID...", help="Files to delete.", show_default=False)],
    url: Url = DEFAULT_URL,
    key: Key = None,
) -> None:
    """Delete files and their bytes."""
    from chunkd.client import ClientError

    failed = 0
    with _client(url, key) as client:
        for file_id in file_ids:
            try:
                client.delete(file_id)
            except ClientError as exc:
                _fatal(exc, url)
                err_console.print(f"error: {file_id}: {exc}", style="red", markup=False)
                failed += 1
                continue
            print(f"deleted {file_id}")
    if failed:
        raise typer.Exit(1)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
