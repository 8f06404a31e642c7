"""The ``chunkd`` command: serve, keys, gc, migrate (``server`` and ``keys``: on the data dir and
the database); and the client commands upload, download, ls, rm (``files``) and links (``links``),
built on the SDK in :mod:`chunkd.client`, imported only when one of them runs. Each module registers its commands on
the one Typer app (``chunkd.cli.common``); `chunkd --help` lists them in the order they are imported."""

from __future__ import annotations

from chunkd.cli.common import app
from chunkd.cli.keys import keys_app

# isort: off
# Importing them registers their commands, listed by `chunkd --help` in this order.
from chunkd.cli import server  # noqa: F401
from chunkd.cli import files  # noqa: F401
from chunkd.cli.links import links_app

# isort: on

__all__ = ["app", "main"]

app.add_typer(keys_app, name="keys")
app.add_typer(links_app, name="links")


def main() -> None:
    app()
