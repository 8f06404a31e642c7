"""chunkd's app with two routes that fail, served by uvicorn with chunkd's protocol and settings,
for the tests of a request the app fails (tests/security/test_server_limits.py):

- ``POST /boom`` (a route of the real app): reads the first piece of its body and raises; the
  app's error middleware answers 500 and re-raises to the server;
- ``POST /bare/boom``: the same behind the access log alone, with no error middleware: the
  exception reaches the server before any response started.

Run: ``python -m tests.support.failing_app PORT DATA_DIR``."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from fastapi import Request

__all__ = ["build"]


async def _read_a_piece_and_fail(receive: Any) -> None:
    await receive()
    raise RuntimeError("a bug, after the body's first piece")


def build(data_dir: Path) -> Any:
    from chunkd.app import create_app
    from chunkd.metrics import Metrics
    from chunkd.observability.access import AccessLog
    from chunkd.settings import Settings

    app = create_app(Settings(data_dir=data_dir, bootstrap_admin_key=False, fsync=False))

    @app.post("/boom", include_in_schema=False)
    async def boom(request: Request) -> None:
        await _read_a_piece_and_fail(request.receive)

    async def bare(scope: Any, receive: Any, send: Any) -> None:
        await _read_a_piece_and_fail(receive)

    bare_logged = AccessLog(bare, metrics=Metrics(process_metrics=False), frontends={})

    async def dispatch(scope: Any, receive: Any, send: Any) -> None:
        target = bare_logged if scope["type"] == "http" and scope["path"].startswith("/bare/") else app
        await target(scope, receive, send)

    return dispatch


if __name__ == "__main__":
    import uvicorn

    from chunkd.server.run import _uvicorn_options
    from chunkd.settings import Settings

    options = _uvicorn_options(Settings(port=int(sys.argv[1]), host="127.0.0.1"))
    uvicorn.run(build(Path(sys.argv[2])), **options)
