"""``chunkd keys``: create, list and revoke API keys (on the server's database)."""

from __future__ import annotations

import asyncio
import json
import re
import sys
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.table import Column, Table
from rich.text import Text

from chunkd.cli.common import DataDir, console, err_console, no_database_yet, settings_for, with_runtime

if TYPE_CHECKING:
    from chunkd.ports.keys import ApiKeyRecord
    from chunkd.runtime import Runtime

__all__ = ["keys_app"]

keys_app = typer.Typer(help="Manage API keys.", no_args_is_help=True)


@keys_app.command("create")
def keys_create(
    owner: Annotated[str, typer.Option(help="Owner the key acts for.")],
    scopes: Annotated[str, typer.Option(help="Comma-separated scopes.")] = "files:create,files:read",
    name: Annotated[str | None, typer.Option(help="A label for the key.")] = None,
    expires_in: Annotated[
        int | None, typer.Option(min=1, help="Seconds until the key stops working (default: never).")
    ] = None,
    data_dir: DataDir = None,
) -> None:
    """Create an API key; the key itself is printed alone on the last line."""

    async def create(runtime: Runtime) -> tuple[ApiKeyRecord, str]:
        expires_at = None if expires_in is None else datetime.now(UTC) + timedelta(seconds=expires_in)
        return await runtime.keys.create(owner, scopes, name=name, expires_at=expires_at)

    from chunkd.domain.errors import ChunkdError

    settings = settings_for(data_dir)
    # Run from another directory than the server's, the command would make a database of its own
    # there, and its key would be refused by the server: say so (the key is still made, for a data
    # dir prepared before its first `chunkd serve`).
    fresh = no_database_yet(settings)
    try:
        record, token = asyncio.run(with_runtime(settings, create, may_create=True))
    except ChunkdError as exc:
        # On stderr: `KEY=$(chunkd keys create … | tail -n 1)` must not take an error for the key.
        err_console.print(f"error: {exc.message}", style="red", markup=False)
        raise typer.Exit(2) from None
    if fresh:
        typer.echo(
            f"chunkd: note: {settings.data_dir} had no database, so a new one was made for this key; a server "
            "using another data directory will refuse the key (run this where `chunkd serve` runs, or pass "
            "--data-dir or CHUNKD_DATA_DIR)",
            err=True,
        )
    until = f", expires {record.expires_at.isoformat(timespec='seconds')}" if record.expires_at else ""
    console.print(f"key id {record.id} for owner {record.owner}, scopes {' '.join(sorted(record.scopes))}{until}")
    print(token, flush=True)


def _key_row(key: ApiKeyRecord) -> dict[str, Any]:
    return {
        "id": key.id,
        "owner": key.owner,
        "scopes": sorted(key.scopes),
        "createdAt": key.created_at.isoformat(timespec="seconds"),
        "revokedAt": key.revoked_at.isoformat(timespec="seconds") if key.revoked_at else None,
        "name": key.name,
        "createdBy": key.created_by,
        "expiresAt": key.expires_at.isoformat(timespec="seconds") if key.expires_at else None,
    }


@keys_app.command("list")
def keys_list(
    data_dir: DataDir = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print a JSON array of key objects.")] = False,
) -> None:
    """List API keys (never their secrets). On a terminal: a table; piped: one tab-separated line
    per key (id, owner, scopes, created, revoked, name, the id of the key that made it, expiry), ids always
    whole, so what is shown can be passed to `chunkd keys revoke`."""

    async def listing(runtime: Runtime) -> list[ApiKeyRecord]:
        return await runtime.keys.list()

    rows = [_key_row(key) for key in asyncio.run(with_runtime(settings_for(data_dir), listing))]
    if as_json:
        print(json.dumps(rows, indent=2))
        return
    if not sys.stdout.isatty():
        # A table would be cut to the (unknown) width of a pipe: plain lines for scripts instead.
        for row in rows:
            fields = (
                *(row["id"], row["owner"], ",".join(row["scopes"]), row["createdAt"], row["revokedAt"], row["name"]),
                row["createdBy"],  # after the first six, so that scripts reading those are unchanged
                row["expiresAt"],
            )
            print("\t".join(_tsv(value) for value in fields))
        return
    table = Table("owner", "scopes", "created", "revoked", "expires", "name")
    # The id is what `keys revoke` takes: it is never shortened, whatever the terminal's width.
    table.columns.insert(0, Column("id", no_wrap=True, min_width=max((len(r["id"]) for r in rows), default=2)))
    for row in rows:
        # A name can come from the API (POST /v1/keys): shown verbatim, never read as markup.
        table.add_row(
            row["id"],
            row["owner"],
            " ".join(row["scopes"]),
            row["createdAt"],
            row["revokedAt"] or "",
            row["expiresAt"] or "",
            Text(row["name"] or ""),
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
    cascade: Annotated[
        bool,
        typer.Option("--cascade", help="Also revoke the keys it made (createdBy), the keys those made, and so on."),
    ] = False,
) -> None:
    """Revoke an API key at once, with the tokens minted from it, the URLs signed for it and the
    upload links made with it."""
    from chunkd.domain.errors import ChunkdError

    target = _revoke_target(key_id)

    async def revoke(runtime: Runtime) -> list[str]:
        """The ids revoked now: the key's, and with ``cascade`` those of the keys it made (by the
        lists before and after: the service says only that it did)."""
        live = {k.id for k in await runtime.keys.list() if k.revoked_at is None} if cascade else set()
        await runtime.keys.revoke(target, cascade=cascade)
        gone = live - {k.id for k in await runtime.keys.list() if k.revoked_at is None}
        return [target, *sorted(gone - {target})]

    try:
        revoked = asyncio.run(with_runtime(settings_for(data_dir), revoke))
    except ChunkdError as exc:
        err_console.print(f"error: {exc.message}", style="red", markup=False)
        raise typer.Exit(2) from None
    console.print(f"revoked {target}")
    for made in revoked[1:]:
        console.print(f"revoked {made} (made by a key revoked with it)")
