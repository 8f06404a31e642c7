"""A small HTTP reverse proxy for end-to-end tests of clients: it logs every request it forwards
(so a test can count which parts a client sent), can *hold* a client in the middle of an upload or a
download (so a test can act there without racing it: nothing moves until the test says so, however
slow or loaded the machine is), and answers 502 when the server behind it is down (as a real load
balancer would). Runs as its own process::

    python -m tests.support.proxy --port P --upstream http://127.0.0.1:8080 --log requests.log \
        [--pass-uploads N] [--pass-response-bytes B]

``--pass-uploads N``: the first N upload requests (PUT, PATCH) go through; every later one waits,
before any of it reaches the server, until the test releases the proxy.
``--pass-response-bytes B``: each response body stops after its first B bytes until the release.
A held request whose client hangs up is recorded as failed. ``POST /_proxy/release`` (answered by
the proxy itself, never forwarded) lets everything held, and everything after, through.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
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


RELEASE_PATH = "/_proxy/release"
UPLOAD_METHODS = ("PUT", "PATCH")


class CountingProxy:
    """The proxy process: ``start()``, ``url``, ``requests()`` (what it forwarded), ``release()``,
    ``stop()``. ``pass_uploads``: only the first N upload requests (PUT, PATCH) are forwarded
    before ``release()``; ``pass_response_bytes``: each response stops after that many bytes until then."""

    def __init__(
        self,
        upstream: str,
        log: Path,
        *,
        pass_uploads: int | None = None,
        pass_response_bytes: int | None = None,
        port: int | None = None,
    ) -> None:
        self.upstream = upstream
        self.log = log
        self.pass_uploads = pass_uploads
        self.pass_response_bytes = pass_response_bytes
        self.port = port or free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 120.0) -> CountingProxy:
        command = [sys.executable, "-m", "tests.support.proxy", "--port", str(self.port)]
        command += ["--upstream", self.upstream, "--log", str(self.log)]
        if self.pass_uploads is not None:
            command += ["--pass-uploads", str(self.pass_uploads)]
        if self.pass_response_bytes is not None:
            command += ["--pass-response-bytes", str(self.pass_response_bytes)]
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
        self.stop()  # never leave a proxy behind (a caller that gets the error has nothing to stop)
        raise RuntimeError("the proxy did not start")

    def release(self) -> None:
        """Let every held body go on, and stop holding."""
        httpx.post(f"{self.url}{RELEASE_PATH}", timeout=60).raise_for_status()

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=30)
        self.process = None

    def requests(self) -> list[dict[str, Any]]:
        """Log lines so far: ``{"id", "method", "path", "phase", "status", "range"}`` (``id`` numbers
        the requests); phase ``sent`` when the request starts going to the server (``held`` before,
        when it waits for the release; also when its response does), then ``answered`` (with its
        status) or ``failed``."""
        if not self.log.exists():
            return []
        return [json.loads(line) for line in self.log.read_text().splitlines() if line.strip()]


class ClientGone(Exception):
    """The client hung up in the middle of its request (or while it was held)."""


def make_app(upstream: str, log_path: Path, pass_uploads: int | None, pass_response_bytes: int | None) -> Any:
    client = httpx.AsyncClient(base_url=upstream, timeout=httpx.Timeout(120.0, connect=5.0))
    log = open(log_path, "a", buffering=1)  # noqa: SIM115 - the file lives as long as the process
    released = asyncio.Event()
    uploads = 0
    requests = itertools.count(1)

    def record(scope: dict[str, Any], phase: str, status: int | None = None) -> None:
        headers = dict(scope["headers"])
        entry = {"id": scope["proxy.id"], "method": scope["method"], "path": scope["path"], "phase": phase}
        entry["status"] = status
        entry["range"] = headers[b"range"].decode() if b"range" in headers else None
        log.write(json.dumps(entry) + "\n")

    async def hold(scope: dict[str, Any], receive: Any) -> list[dict[str, Any]]:
        """Wait for the release, reading the client meanwhile to notice it hanging up (ClientGone);
        returns what it sent while held, for the body to replay."""
        record(scope, "held")
        kept: list[dict[str, Any]] = []
        release = asyncio.ensure_future(released.wait())
        try:
            while True:
                message = asyncio.ensure_future(receive())
                done, _ = await asyncio.wait({release, message}, return_when=asyncio.FIRST_COMPLETED)
                if message not in done:
                    message.cancel()  # uvicorn's receive() loses nothing when cancelled while waiting
                    return kept
                if message.result()["type"] == "http.disconnect":
                    raise ClientGone
                kept.append(message.result())
        finally:
            release.cancel()

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        nonlocal uploads
        if scope["type"] != "http":
            return
        scope["proxy.id"] = next(requests)
        if scope["path"] == RELEASE_PATH and scope["method"] == "POST":
            released.set()
            await send({"type": "http.response.start", "status": 204, "headers": []})
            await send({"type": "http.response.body", "body": b""})
            return
        pending: list[dict[str, Any]] = []
        if scope["method"] in UPLOAD_METHODS:
            uploads += 1
            if pass_uploads is not None and uploads > pass_uploads and not released.is_set():
                try:  # held before the server sees anything of it: no server-side timer runs meanwhile
                    pending = await hold(scope, receive)
                except ClientGone:
                    record(scope, "failed")
                    return

        async def body() -> AsyncIterator[bytes]:
            while True:
                message = pending.pop(0) if pending else await receive()
                if message["type"] == "http.disconnect":  # abort the upstream request, never truncate it
                    raise ClientGone
                chunk = message.get("body", b"")
                if chunk:
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
            sent = 0
            async for chunk in response.aiter_raw():
                if (
                    pass_response_bytes is not None
                    and not released.is_set()
                    and sent + len(chunk) >= pass_response_bytes
                ):
                    head, chunk = chunk[: pass_response_bytes - sent], chunk[pass_response_bytes - sent :]
                    await send({"type": "http.response.body", "body": head, "more_body": True})
                    sent += len(head)
                    try:
                        await hold(scope, receive)
                    except ClientGone:
                        return
                if chunk:
                    await send({"type": "http.response.body", "body": chunk, "more_body": True})
                    sent += len(chunk)
            await send({"type": "http.response.body", "body": b""})
        finally:
            await response.aclose()

    return app


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--upstream", required=True)
    parser.add_argument("--log", type=Path, required=True)
    parser.add_argument("--pass-uploads", type=int, default=None, help="upload bodies sent before the release")
    parser.add_argument("--pass-response-bytes", type=int, default=None, help="response bytes sent before the release")
    args = parser.parse_args()
    import uvicorn

    app = make_app(args.upstream, args.log, args.pass_uploads, args.pass_response_bytes)
    uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
