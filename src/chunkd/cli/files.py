"""The client commands ``upload``, ``download``, ``ls`` and ``rm`` (and the options and error
handling ``links`` shares with them): the SDK (:mod:`chunkd.client`, imported only when one of them
runs) over HTTP, never the server's modules."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table
from rich.text import Text

from chunkd.cli.common import app, console, err_console

if TYPE_CHECKING:
    from rich.progress import Progress, TaskID

    from chunkd.client import Client, RetryNotice

__all__ = [
    "DEFAULT_URL",
    "JsonOutput",
    "Key",
    "Url",
    "client_for",
    "download",
    "fatal",
    "for_each_id",
    "list_files",
    "remove",
    "upload",
    "usage",
]


Url = Annotated[str, typer.Option("--url", envvar="CHUNKD_URL", help="Server URL.")]
Key = Annotated[
    str | None, typer.Option("--key", envvar="CHUNKD_KEY", help="API key (ck_...) or access token.", show_default=False)
]
JsonOutput = Annotated[bool, typer.Option("--json", help="One JSON object per line instead of text.")]
DEFAULT_URL = "http://127.0.0.1:8080"  # as chunkd.client.DEFAULT_URL (not imported here: `serve` stays lean)
# Ids made before chunkd stopped minting ids that begin with '-' still may; the shell cannot tell one from an option.
ID_NOTE = "An id that begins with '-' goes after '--' (chunkd {command} -- -Xw…)."
ID_HELP = "The file's id. " + ID_NOTE.format(command="download")


def client_for(url: str, key: str | None) -> Client:
    from chunkd.client import Client

    if not key:
        err_console.print("error: no API key: pass --key or set CHUNKD_KEY", style="red", markup=False)
        raise typer.Exit(1)
    try:
        return Client(url, key, on_retry=_tell_retry)
    except ValueError as exc:  # a key that cannot be a header value (said without the key)
        err_console.print(f"error: {exc}", style="red", markup=False)
        raise typer.Exit(1) from None


def _tell_retry(notice: RetryNotice) -> None:
    """Say why the command seems to pause (a server restarting, a proxy answering 502, a 429)."""
    err_console.print(
        f"retrying in {notice.delay:.1f} s after try {notice.attempt}: {notice.method} {notice.url}: {notice.reason}",
        style="yellow",
        markup=False,
    )


def for_each_id(ids: list[str], url: str, key: str | None, act: Callable[[Client, str], object], done: str) -> None:
    """``act`` on each id in turn, saying ``done ID`` for each; an id refused is said on stderr and
    the others go on (exit status 1 at the end), but a wrong key or a server out of reach stops at once."""
    from chunkd.client import ClientError

    failed = 0
    with client_for(url, key) as client:
        for each in ids:
            try:
                act(client, each)
            except ClientError as exc:
                fatal(exc, url)
                err_console.print(f"error: {each}: {exc}", style="red", markup=False)
                failed += 1
                continue
            print(f"{done} {each}")
    if failed:
        raise typer.Exit(1)


def fatal(exc: Exception, url: str, *, resumable: bool = False) -> None:
    """Exit at once on errors every further request would repeat (wrong key, server unreachable);
    ``resumable``: say that running the command again resumes (``upload``)."""
    from chunkd.client import AuthenticationError, ConnectionFailed, PermissionDenied

    if isinstance(exc, AuthenticationError):
        message = f"error: the server at {url} refused the API key ({exc.message}); check --key or CHUNKD_KEY"
    elif isinstance(exc, PermissionDenied) and exc.code == "missing_scope":
        message = f"error: the API key lacks a scope: {exc.message}"
    elif isinstance(exc, ConnectionFailed):
        message = f"error: cannot reach the server at {url}: {exc.message}"
        if resumable:
            message += "; run the same command again once it answers: uploads resume where they stopped"
    else:
        return
    err_console.print(message, style="red", markup=False)
    raise typer.Exit(1)


def _progress(enabled: bool) -> Progress:
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


def _expand(paths: list[Path], *, recursive: bool) -> list[Path]:
    """The files to upload: ``paths`` as given, with ``recursive`` each directory replaced by the
    files below it, in name order (links to directories are not followed: a loop would never end)."""
    chosen: list[Path] = []
    for path in paths:
        if not (recursive and path.is_dir()):
            chosen.append(path)
            continue
        for top, dirs, files in os.walk(path):
            dirs.sort()
            # Regular files (or links to them): a FIFO or a socket would hang the read or fail it.
            chosen.extend(Path(top) / name for name in sorted(files) if (Path(top) / name).is_file())
    return chosen


@app.command()
def upload(
    paths: Annotated[list[Path], typer.Argument(help="Files to upload.", show_default=False)],
    url: Url = DEFAULT_URL,
    key: Key = None,
    recursive: Annotated[
        bool,
        typer.Option("--recursive", "-r", help="Upload the files in the directories given, and in theirs, by name."),
    ] = False,
    parallel: Annotated[int, typer.Option(min=1, max=64, help="Parts sent at the same time.")] = 4,
    part_size: Annotated[
        str | None, typer.Option("--part-size", help="Bytes per part, e.g. 8MiB or 16M (default: the server's).")
    ] = None,
    json_output: JsonOutput = False,
) -> None:
    """Upload files in parts, in parallel, verified by MD5. Run the same command again after an
    interruption (Ctrl-C, kill, lost network) and it resumes: parts the server holds are not re-sent."""
    import json

    from chunkd.client import APIError, ClientError, StorageFull, format_size, parse_size
    from chunkd.client.source import display_name

    try:
        part_bytes = parse_size(part_size) if part_size is not None else None
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--part-size") from None
    failed = 0
    sizes: dict[Path, int] = {}
    chosen = _expand(paths, recursive=recursive)
    for path in chosen:
        try:
            if path.is_dir():
                raise IsADirectoryError(0, "is a directory (-r uploads the files in it)")
            sizes[path] = path.stat().st_size
        except OSError as exc:
            err_console.print(f"error: {path}: {exc.strerror or exc}", style="red", markup=False)
            failed += 1
    show = err_console.is_terminal and not json_output
    with client_for(url, key) as client, _progress(show) as progress:
        tasks = {path: progress.add_task(path.name, total=size) for path, size in sizes.items()}
        total = progress.add_task("total", total=sum(sizes.values())) if len(sizes) > 1 else None
        finished = 0
        for path, task in tasks.items():

            def on_progress(done: int, _: int, task: TaskID = task, base: int = finished) -> None:
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
                if isinstance(exc, StorageFull):
                    # Tried a few times already (RetryPolicy.storage_full_attempts); the next files
                    # would be refused too. The server keeps the parts it took, the state file the upload's id.
                    err_console.print(
                        f"error: {path}: the server's storage is full ({exc.message}); the parts it received, if"
                        " any, are kept: run the same command again to resume the upload once it has room",
                        style="red",
                        markup=False,
                    )
                    raise typer.Exit(1) from None
                if isinstance(exc, ClientError):
                    fatal(exc, url, resumable=True)
                reason = (
                    str(exc)
                    if isinstance(exc, APIError)
                    else getattr(exc, "message", None) or getattr(exc, "strerror", None) or str(exc)
                )
                err_console.print(f"error: {path}: {reason}", style="red", markup=False)
                failed += 1
                continue
            finished += sizes[path]
            if json_output:
                print(json.dumps(file.summary()), flush=True)
            else:
                # A name that is not UTF-8 as the terminal shows it: printed as it is, it stopped the
                # command (UnicodeEncodeError) after its upload, before the other files'.
                shown = display_name(str(path))
                print(f"{shown} → {file.id} ({format_size(file.size_bytes)}, md5 {file.md5})", flush=True)
    if failed:
        err_console.print(f"{failed} of {len(chosen)} file(s) failed", style="red", markup=False)
        raise typer.Exit(1)


@app.command()
def download(
    file_id: Annotated[str, typer.Argument(metavar="ID", help=ID_HELP, show_default=False)],
    output: Annotated[
        str | None,
        typer.Option(
            "-o",
            "--output",
            metavar="PATH",
            help="A file (replaced if it exists) or a directory (default: the file's name, here, which never"
            " replaces an existing file).",
        ),
    ] = None,
    url: Url = DEFAULT_URL,
    key: Key = None,
) -> None:
    """Download a completed file, verified by MD5; run it again after an interruption to continue
    where it stopped (Range)."""
    from chunkd.client import ClientError

    with client_for(url, key) as client, _progress(err_console.is_terminal) as progress:
        task = progress.add_task(file_id, total=None)
        try:
            path = client.download(
                file_id, output, on_progress=lambda done, size: progress.update(task, completed=done, total=size)
            )
        except ClientError as exc:
            fatal(exc, url)
            err_console.print(f"error: {file_id}: {exc}", style="red", markup=False)
            raise typer.Exit(1) from None
        except OSError as exc:  # where the bytes go: a missing directory, no permission, a full disk
            where = f"cannot write {exc.filename}: " if exc.filename else ""
            err_console.print(f"error: {file_id}: {where}{exc.strerror or exc}", style="red", markup=False)
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
    with client_for(url, key) as client:
        try:
            for file in client.list(status=status.upper() if status else None):
                if json_output:
                    print(json.dumps(file.summary()), flush=True)
                    continue
                created = file.created_at.strftime("%Y-%m-%d %H:%M") if file.created_at else ""
                # Filenames are chosen by whoever uploaded (a partner, through a link): shown as they
                # are, never read as rich markup ("[conceal]…" would hide, "[red]" vanish).
                table.add_row(file.status, format_size(file.size_bytes), created, Text(file.filename), file.id)
        except ClientError as exc:
            fatal(exc, url)
            err_console.print(f"error: {exc}", style="red", markup=False)
            raise typer.Exit(1) from None
    if not json_output:
        console.print(table)


@app.command("usage")
def usage(url: Url = DEFAULT_URL, key: Key = None, json_output: JsonOutput = False) -> None:
    """What you hold (pending uploads, their bytes, stored bytes), as the server's quotas count it, and those quotas."""
    import json

    from chunkd.client import ClientError, format_size

    with client_for(url, key) as client:
        try:
            held = client.usage()
        except ClientError as exc:
            fatal(exc, url)
            err_console.print(f"error: {exc}", style="red", markup=False)
            raise typer.Exit(1) from None
    if json_output:
        print(json.dumps(held.raw), flush=True)  # the API's own object
        return

    def of(limit: int | None, size: bool) -> str:
        if limit is None:
            return "no limit"
        return f"of {format_size(limit)}" if size else f"of {limit}"

    print(f"pending uploads  {held.pending_uploads} ({of(held.max_pending_uploads, False)})")
    print(f"pending bytes    {format_size(held.pending_bytes)} ({of(held.max_pending_bytes, True)})")
    stored = f"stored bytes     {format_size(held.stored_bytes)}"
    if held.max_stored_bytes is not None:
        stored += f" ({format_size(held.stored_bytes + held.pending_bytes)} with the pending ones, "
        stored += f"{of(held.max_stored_bytes, True)})"
    else:
        stored += " (no limit)"
    print(stored, flush=True)


@app.command("rm")
def remove(
    file_ids: Annotated[
        list[str],
        typer.Argument(metavar="ID...", help="Files to delete. " + ID_NOTE.format(command="rm"), show_default=False),
    ],
    url: Url = DEFAULT_URL,
    key: Key = None,
) -> None:
    """Delete files and their bytes."""
    for_each_id(file_ids, url, key, lambda client, file_id: client.delete(file_id), "deleted")
