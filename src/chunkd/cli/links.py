"""``chunkd links``: make, list and revoke upload links (URLs through which a partner without an
account uploads into your files), over HTTP with the SDK, like the other client commands."""

from __future__ import annotations

import json
import re
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Column, Table
from rich.text import Text

from chunkd.cli.common import console, err_console
from chunkd.cli.files import DEFAULT_URL, JsonOutput, Key, Url, client_for, fatal, for_each_id

if TYPE_CHECKING:
    from chunkd.client import UploadLink

__all__ = ["links_app", "parse_duration"]

links_app = typer.Typer(
    help="Make, list and revoke upload links (needs a key with links:admin and files:create).", no_args_is_help=True
)

_DURATION = re.compile(r"^\s*(\d+)\s*([smhdw]?)\s*$")
_SECONDS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_duration(text: str) -> int:
    """Seconds in ``90``, ``45m``, ``12h``, ``7d`` or ``2w``; ValueError for anything else."""
    match = _DURATION.match(text.lower())
    if not match or int(match.group(1)) < 1:
        raise ValueError(f"{text!r} is not a duration (examples: 3600, 45m, 12h, 7d, 2w)")
    return int(match.group(1)) * _SECONDS[match.group(2)]


def _limits(link: UploadLink) -> tuple[str, str]:
    from chunkd.client import format_size

    files = f"{link.files_uploaded}" + (f" of {link.max_files}" if link.max_files is not None else "")
    size = format_size(link.bytes_uploaded) + (f" of {format_size(link.max_bytes)}" if link.max_bytes else "")
    return files, size


def _when(link: UploadLink, which: str) -> str:
    value = link.expires_at if which == "expires" else link.revoked_at
    return value.strftime("%Y-%m-%d %H:%M") if value else ""


@links_app.command("create")
def links_create(
    expires_in: Annotated[
        str | None, typer.Option(help="How long it works: 3600, 45m, 12h, 7d, 2w (default: the server's, 7 days).")
    ] = None,
    max_files: Annotated[int | None, typer.Option(min=1, help="Most files it may upload (default: no limit).")] = None,
    max_bytes: Annotated[
        str | None, typer.Option(help="Most bytes in all, e.g. 10GiB or 500MB (default: no limit).")
    ] = None,
    mime_type: Annotated[
        list[str] | None,
        typer.Option("--type", help="A media type it may upload (image/png, image/*); repeat for more (default: any)."),
    ] = None,
    note: Annotated[str | None, typer.Option(help="A line shown to the partner on the upload page.")] = None,
    url: Url = DEFAULT_URL,
    key: Key = None,
    json_output: JsonOutput = False,
) -> None:
    """Make an upload link. Its URL (the partner's way in) is shown this once, alone on the last line."""
    from chunkd.client import ClientError, format_size, parse_size

    try:
        seconds = parse_duration(expires_in) if expires_in is not None else None
        size = parse_size(max_bytes) if max_bytes is not None else None
    except ValueError as exc:
        err_console.print(f"error: {exc}", style="red", markup=False)
        raise typer.Exit(2) from None
    with client_for(url, key) as client:
        try:
            link = client.create_upload_link(
                expires_in=seconds, max_files=max_files, max_bytes=size, allowed_mime_types=mime_type, note=note
            )
        except ClientError as exc:
            fatal(exc, url)
            err_console.print(f"error: {exc}", style="red", markup=False)
            raise typer.Exit(1) from None
    if json_output:
        print(json.dumps(link.raw), flush=True)
        return
    limits = [f"expires {_when(link, 'expires')} UTC"]
    if link.max_files is not None:
        limits.append(f"up to {link.max_files} file{'' if link.max_files == 1 else 's'}")
    if link.max_bytes is not None:
        limits.append(f"up to {format_size(link.max_bytes)}")
    if link.allowed_mime_types:
        limits.append("only " + ", ".join(link.allowed_mime_types))
    # On stderr, so that `URL=$(chunkd links create …)` takes the URL alone.
    err_console.print(f"link {link.id}: {'; '.join(limits)}", markup=False)
    print(link.url, flush=True)


@links_app.command("ls")
def links_list(
    limit: Annotated[int, typer.Option(min=1, max=1000, help="Most links shown, newest first.")] = 100,
    url: Url = DEFAULT_URL,
    key: Key = None,
    json_output: JsonOutput = False,
) -> None:
    """List your upload links, revoked and expired ones too (never their URLs: only their makers saw those)."""
    from chunkd.client import ClientError

    with client_for(url, key) as client:
        try:
            links = client.upload_links(limit=limit)
        except ClientError as exc:
            fatal(exc, url)
            err_console.print(f"error: {exc}", style="red", markup=False)
            raise typer.Exit(1) from None
    if json_output:
        for link in links:
            print(json.dumps(link.raw), flush=True)
        return
    table = Table(Column("id", no_wrap=True, min_width=max((len(link.id) for link in links), default=2)))
    for name in ("files", "bytes", "expires", "revoked", "note"):
        table.add_column(name)
    for link in links:
        files, size = _limits(link)
        # A note is free text from whoever made the link: shown as it is, never read as markup.
        table.add_row(link.id, files, size, _when(link, "expires"), _when(link, "revoked"), Text(link.note or ""))
    console.print(table)


@links_app.command("revoke")
def links_revoke(
    link_ids: Annotated[list[str], typer.Argument(metavar="ID...", help="Links to end, as `links ls` shows them.")],
    url: Url = DEFAULT_URL,
    key: Key = None,
) -> None:
    """End upload links at once; what was uploaded through them stays in your files."""
    for_each_id(link_ids, url, key, lambda client, link_id: client.revoke_upload_link(link_id), "revoked")
