"""The ``chunkd`` command's root: the Typer app every command registers on, the console, and what
the server-side commands share (the settings with command-line overrides, a runtime for one
command)."""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable, Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer
from rich.console import Console

if TYPE_CHECKING:  # imported where used: the client commands need neither SQLAlchemy nor the settings
    from chunkd.runtime import Runtime
    from chunkd.settings import Settings

__all__ = [
    "DataDir",
    "app",
    "console",
    "data_dir_problem",
    "err_console",
    "no_database_yet",
    "require_data_dir",
    "settings_for",
    "with_runtime",
]

T = TypeVar("T")

app = typer.Typer(help="chunkd: a self-hosted, resumable, chunked upload server.", no_args_is_help=True)
console = Console()
err_console = Console(stderr=True, soft_wrap=True)  # errors: on stderr, whole lines in logs

DataDir = Annotated[
    Path | None, typer.Option("--data-dir", help="Data directory (default: $CHUNKD_DATA_DIR or ./chunkd-data).")
]


def settings_for(data_dir: Path | None, **overrides: Any) -> Settings:
    """The settings (``CHUNKD_*``) with the options given on the command line (None: not given)."""
    from pydantic import ValidationError

    from chunkd.settings import Settings

    values = {k: v for k, v in overrides.items() if v is not None}
    if data_dir is not None:
        values["data_dir"] = data_dir
    try:
        settings = Settings(**values)
    except ValidationError as exc:  # a setting's name and what is wrong with it, not a traceback
        for error in exc.errors():
            field = ".".join(str(part) for part in error["loc"])
            where = f"{field} (CHUNKD_{field.upper()})" if field else "settings"
            typer.echo(f"chunkd: {where}: {error['msg']}", err=True)
        raise typer.Exit(2) from None
    for name in unknown_environment(os.environ, Settings.model_fields):
        typer.echo(f"chunkd: warning: {name} is not a setting and is ignored (a misspelt name?)", err=True)
    return settings


# CHUNKD_* variables read by the chunkd commands that talk to a server, not settings of a server.
CLIENT_VARIABLES = frozenset({"CHUNKD_URL", "CHUNKD_KEY"})


def unknown_environment(environ: Mapping[str, str], fields: Iterable[str]) -> list[str]:
    """The ``CHUNKD_*`` variables no setting reads (a misspelt one used to be ignored in silence)."""
    known = {f"CHUNKD_{name.upper()}" for name in fields} | CLIENT_VARIABLES
    return sorted(name for name in environ if name.upper().startswith("CHUNKD_") and name.upper() not in known)


def require_data_dir(settings: Settings) -> None:
    """Stop with one line (exit 2, as for any bad setting) when the data dir cannot be used: the
    server and every command on its runtime keep the secret, the SQLite database or bytes there."""
    if problem := data_dir_problem(settings.data_dir):
        typer.echo(
            f"chunkd: data_dir (--data-dir, CHUNKD_DATA_DIR): cannot use {settings.data_dir}: {problem}", err=True
        )
        raise typer.Exit(2)


def data_dir_problem(path: Path) -> str | None:
    """Why ``path`` cannot be the data directory (made if missing, then written to), or None. Checked
    on the directory itself, or on the nearest existing one above it, without making anything."""
    existing = path
    while not existing.exists() and existing.parent != existing:
        existing = existing.parent
    if not existing.is_dir():
        return f"{existing} is not a directory"
    if not os.access(existing, os.W_OK | os.X_OK):
        return f"{existing} is not writable by this user" if existing == path else f"cannot create it in {existing}"
    return None


def no_database_yet(settings: Settings) -> bool:
    """Whether ``settings`` name the data dir's own SQLite database and it is not there yet."""
    return settings.database_url is None and not settings.default_database_path().exists()


async def with_runtime(settings: Settings, action: Callable[[Runtime], Awaitable[T]], *, may_create: bool = False) -> T:
    """Run ``action`` with a runtime opened on ``settings`` (closed afterwards, also on errors).
    Without ``may_create``, a data dir with no database (and no CHUNKD_DATABASE_URL) is refused
    rather than given a new, empty one: listing, revoking or collecting there would report an empty
    server and exit 0 (a mistyped --data-dir, a server on PostgreSQL)."""
    from chunkd.runtime import open_runtime

    require_data_dir(settings)
    if not may_create and no_database_yet(settings):
        err_console.print(
            f"chunkd: {settings.data_dir} has no chunkd database: pass the server's data directory (--data-dir, "
            "CHUNKD_DATA_DIR), or CHUNKD_DATABASE_URL for a server on PostgreSQL",
            markup=False,
        )
        raise typer.Exit(2)
    runtime = await open_runtime(settings)
    try:
        return await action(runtime)
    finally:
        await runtime.close()
