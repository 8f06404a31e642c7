"""A small HTTP reverse proxy for end-to-end tests of clients: it logs every request it forwards
(so a test can count which parts a client sent), can slow bodies down to a given rate (so a test
can act in the middle of an upload or download without racing it), and answers 502 when the server behind
it is down (as a real load balancer would). Runs as its own process::

    python -m tests.support.proxy --port P --upstream http://127.0.0.1:8080 --log requests.log [--rate BYTES/S]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx

from tests.support.server import free_port

__all__ = ["CountingProxy"]

ROOT = Path(__file__).resolve().parents[2]
HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade", "host"}


class CountingProxy:
    """The proxy process: ``start()``, ``url``, ``requests()`` (what it forwarded), ``stop()``."""

    def __init__(self, upstream: str, log: Path, *, rate: int | None = None, port: int | None = None) -> None:
        self.upstream = upstream
        self.log = log
        self.rate = rate
        self.port = port or free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 20.0) -> CountingProxy:
        command = [sys.executable, "-m", "tests.support.proxy", "--port", str(self.port)]
        command += ["--upstream", self.upstream, "--log", str(self.log)]
        if self.rate:
            command += ["--rate", str(self.rate)]
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
        self.process = subprocess.Popen(command, env=env, cwd=ROOT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"the proxy exited with {self.process.returncode}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return self
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("the proxy did not start")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=30)
        self.process = None

    def requests(self) -> list[dict[str, Any]]:
        """Log lines so far: ``{"method", "path", "phase", "status", "range"}``; phase ``sent`` when the
        request starts going to the server, then ``answered`` (with its status) or ``failed``."""
        if not self.log.exists():
            return []
        return [json.loads(line) for line in self.log.read_text().splitlines() if line.strip()]


class ClientGone(Exception):
    """The client hung up in the middle of its request body."""


def make_app(upstream: str, log_path: Path, rate: int | None) -> Any:
    client = httpx.AsyncClient(base_url=upstream, timeout=httpx.Timeout(120.0, connect=5.0))
    log = open(log_path, "a", buffering=1)  # noqa: SIM115 - the file lives as long as the process

    def record(scope: dict[str, Any], phase: str, status: int | None = None) -> None:
        headers = dict(scope["headers"])
        entry = {"method": scope["method"], "path": scope["path"], "phase": phase, "status": status}
        entry["range"] = headers[b"range"].decode() if b"range" in headers else None
        log.write(json.dumps(entry) + "\n")

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return

        async def body() -> AsyncIterator[bytes]:
            while True:
                message = await receive()
                if message["type"] == "http.disconnect":  # abort the upstream request, never truncate it
                    raise ClientGone
                chunk = message.get("body", b"")
                if chunk:
                    if rate:
                        await asyncio.sleep(len(chunk) / rate)
                    yield chunk
                if not message.get("more_body", False):
                    return

        headers = [(k.decode(), v.decode()) for k, v in scope["headers"] if k.decode().lower() not in HOP_BY_HOP]
        has_body = any(k.lower() == "content-length" for k, _ in headers) or scope["method"] in ("PUT", "POST")
        path = scope["raw_path"].decode() + (f"?{scope['query_string'].decode()}" if scope["query_string"] else "")
        request = client.build_request(scope["method"], path, headers=headers, content=body() if has_body else None)
        record(scope, "sent")
        try:
            response = await client.send(request, stream=True)
        except (httpx.TransportError, ClientGone) as exc:
            record(scope, "failed")
            payload = json.dumps({"error": {"code": "bad_gateway", "message": str(exc)}}).encode()
            json_type = [(b"content-type", b"application/json")]
            await send({"type": "http.response.start", "status": 502, "headers": json_type})
            await send({"type": "http.response.body", "body": payload})
            return
        record(scope, "answered", response.status_code)
        try:
            out = [(k.encode(), v.encode()) for k, v in response.headers.items() if k.lower() not in HOP_BY_HOP]
            await send({"type": "http.response.start", "status": response.status_code, "headers": out})
            async for chunk in response.aiter_raw():
                if rate:
                    await asyncio.sleep(len(chunk) / rate)
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await send({"type": "http.response.body", "body": b""})
        finally:
            await response.aclose()

    return app


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--upstream", required=True)
    parser.add_argument("--log", type=Path, required=True)
    parser.add_argument("--rate", type=int, default=None, help="bytes per second for request and response bodies")
    args = parser.parse_args()
    import uvicorn

    uvicorn.run(make_app(args.upstream, args.log, args.rate), host="127.0.0.1", port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
