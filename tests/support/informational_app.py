"""A tiny ASGI app served by chunkd's HTTP protocol under uvicorn, for the informational-response
tests: it sends ``104 Upload Resumption Supported`` as soon as a request arrives, before reading
its body, then answers 200 with the number of body bytes it read.

Run: ``python -m tests.support.informational_app PORT [auto|on|off]`` (as ``CHUNKD_INFORMATIONAL_RESPONSES``:
offered to requests that came through no proxy, always, never)."""

from __future__ import annotations

import sys
from typing import Any, Literal

__all__ = ["app"]

MODES: dict[str, bool | Literal["auto"]] = {"auto": "auto", "on": True, "off": False}


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    supported = "http.response.informational" in scope.get("extensions", {})
    if supported:
        for offset in (b"0", b"1"):  # any number of them, before the final response
            await send(
                {
                    "type": "http.response.informational",
                    "status": 104,
                    "headers": [(b"location", b"/files/abc"), (b"upload-offset", offset)],
                }
            )
    size = 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return
        size += len(message.get("body", b""))
        if not message.get("more_body", False):
            break
    body = f"read {size}; informational {'supported' if supported else 'unsupported'}".encode()
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", b"text/plain"), (b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})


if __name__ == "__main__":
    import uvicorn

    from chunkd.server.protocol import protocol_class

    uvicorn.run(
        app,
        host="127.0.0.1",
        port=int(sys.argv[1]),
        log_level="warning",
        http=protocol_class(
            max_header_bytes=64 * 1024,
            header_timeout=10.0,
            informational=MODES[sys.argv[2] if sys.argv[2:] else "auto"],
        ),
    )
