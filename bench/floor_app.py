"""The floor under chunkd's tus figures: a bare ASGI app served the way ``chunkd serve`` serves (uvicorn,
httptools, uvloop) that speaks just enough tus for ``bench/compare.py`` (POST creates, PATCH appends) and
does nothing else.

- ``bench.floor_app:drain`` reads and drops every body: the cost of the ASGI server alone.
- ``bench.floor_app:store`` also MD5s each byte and appends it to one file per upload, fdatasync'd before
  the response (chunkd's durability promise), in a worker thread per batch as chunkd does.

Run as ``uvicorn bench.floor_app:drain --loop uvloop --http httptools`` from the repository root.
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import os
import tempfile
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

BATCH = 1024 * 1024  # bytes handed to the worker thread at once, as chunkd batches its writes


class _Upload:
    def __init__(self, directory: str, number: int, length: int) -> None:
        self.fd = os.open(os.path.join(directory, str(number)), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        self.md5 = hashlib.md5()
        self.length = length

    def write(self, chunks: list[bytes]) -> None:
        for chunk in chunks:
            self.md5.update(chunk)
        os.writev(self.fd, chunks)


def _make(store: bool) -> Callable[[Scope, Receive, Send], Awaitable[None]]:
    directory = os.environ.get("FLOOR_DIR") or tempfile.mkdtemp(prefix="floor-")
    numbers = itertools.count(1)
    uploads: dict[str, _Upload] = {}
    offsets: dict[str, int] = {}

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        method, path = scope["method"], scope["path"]
        upload: _Upload | None = None
        if method == "POST":
            name = str(next(numbers))
            offsets[name] = 0
            if store:
                length = int(dict(scope["headers"]).get(b"upload-length", b"0"))
                uploads[name] = upload = _Upload(directory, int(name), length)
        else:
            name = path.rsplit("/", 1)[-1]
            upload = uploads.get(name)
        received = 0
        pending: list[bytes] = []
        pending_size = 0
        more = True
        while more:
            message = await receive()
            chunk = message.get("body", b"")
            more = message.get("more_body", False)
            received += len(chunk)
            if upload is not None and chunk:
                pending.append(chunk)
                pending_size += len(chunk)
                if pending_size >= BATCH or not more:
                    await asyncio.to_thread(upload.write, pending)
                    pending, pending_size = [], 0
        if upload is not None and received:
            await asyncio.to_thread(os.fdatasync, upload.fd)
        offsets[name] = offsets.get(name, 0) + received
        if upload is not None and offsets[name] >= upload.length:
            # Finished: close it so a cleared store frees its space; what a real server would now record.
            os.close(upload.fd)
            uploads.pop(name)
            offsets.pop(name)
            offset = str(upload.length).encode()
        else:
            offset = str(offsets.get(name, 0)).encode()
        headers = [(b"upload-offset", offset), (b"tus-resumable", b"1.0.0")]
        if method == "POST":
            headers.append((b"location", f"/files/{name}".encode()))
            status = 201
        else:
            status = 204
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": b""})

    return app


drain = _make(store=False)
store = _make(store=True)
