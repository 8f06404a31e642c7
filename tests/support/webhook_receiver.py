"""A webhook receiver for end-to-end tests, run as its own process:

    python -m tests.support.webhook_receiver PORT SECRETS_FILE LOG_FILE [DELAY_SECONDS]

Every POST is verified with the ``standardwebhooks`` package against the secret that
``SECRETS_FILE`` (JSON ``{path: "whsec_…"}``, read on each request so a test can add an endpoint's
secret once it has registered it) gives for the request's path. Each request is appended to
``LOG_FILE`` as one JSON line ``{"path", "id", "verified", "payload"}``; a verified message gets a
204, anything else a 400, after ``DELAY_SECONDS`` (a slow receiver keeps deliveries in flight, so
several senders overlap). ``WebhookReceiver`` starts, stops and reads it."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx

__all__ = ["WebhookReceiver"]


class WebhookReceiver:
    """The receiver process on a fixed port (so it can be stopped and started again at the same URL)."""

    def __init__(self, root: Path, port: int, *, delay: float = 0.0) -> None:
        self.root = root
        self.port = port
        self.delay = delay
        self.secrets_file = root / "secrets.json"
        self.log_file = root / "received.jsonl"
        self.process: subprocess.Popen[bytes] | None = None
        root.mkdir(parents=True, exist_ok=True)
        if not self.secrets_file.exists():
            self.secrets_file.write_text("{}")

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def set_secret(self, path: str, secret: str) -> None:
        secrets = json.loads(self.secrets_file.read_text())
        secrets[path] = secret
        tmp = self.secrets_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(secrets))
        tmp.replace(self.secrets_file)

    def start(self, timeout: float = 120.0) -> WebhookReceiver:
        root_of_repo = Path(__file__).resolve().parents[2]
        env = {**os.environ, "PYTHONPATH": f"{root_of_repo}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tests.support.webhook_receiver",
                str(self.port),
                str(self.secrets_file),
                str(self.log_file),
                str(self.delay),
            ],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=open(self.root / "receiver.err", "ab"),  # noqa: SIM115 - the child keeps it
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout
        with httpx.Client(timeout=5) as http:  # one client: a new one per poll costs real CPU
            while time.monotonic() < deadline:
                if self.process.poll() is not None:
                    raise RuntimeError(f"the receiver exited: {(self.root / 'receiver.err').read_text()}")
                try:
                    http.get(self.url("/ready"))
                    return self
                except httpx.HTTPError:
                    time.sleep(0.05)
        raise RuntimeError("the webhook receiver did not start")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)
        self.process = None

    def messages(self, path: str | None = None) -> list[dict[str, Any]]:
        if not self.log_file.exists():
            return []
        lines = [json.loads(line) for line in self.log_file.read_text().splitlines() if line.strip()]
        return [m for m in lines if path is None or m["path"] == path]

    def wait_for(
        self, condition: Callable[[list[dict[str, Any]]], bool], timeout: float = 60.0, path: str | None = None
    ) -> list[dict[str, Any]]:
        """Wait until ``condition(messages)`` holds (polling the log; the receiver is another process)."""
        deadline = time.monotonic() + timeout
        while True:
            messages = self.messages(path)
            if condition(messages):
                return messages
            if time.monotonic() > deadline:
                raise AssertionError(f"the receiver never saw what was expected; it got {messages}")
            time.sleep(0.05)

    async def arrived(
        self, condition: Callable[[list[dict[str, Any]]], bool], timeout: float = 60.0, path: str | None = None
    ) -> list[dict[str, Any]]:
        """``wait_for`` for async tests, yielding to the event loop (where an in-process app's
        delivery worker runs) between looks."""
        deadline = time.monotonic() + timeout
        while True:
            messages = self.messages(path)
            if condition(messages):
                return messages
            if time.monotonic() > deadline:
                raise AssertionError(f"the receiver never saw what was expected; it got {messages}")
            await asyncio.sleep(0.05)


def _serve(port: int, secrets_file: Path, log_file: Path, delay: float) -> None:
    from standardwebhooks import Webhook, WebhookVerificationError

    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            time.sleep(delay)
            secret = json.loads(secrets_file.read_text()).get(self.path)
            verified, payload = False, None
            if secret is not None:
                try:
                    payload = Webhook(secret).verify(body, {k.lower(): v for k, v in self.headers.items()})
                    verified = True
                except WebhookVerificationError:
                    pass
            entry = {"path": self.path, "id": self.headers.get("webhook-id"), "verified": verified, "payload": payload}
            with lock, open(log_file, "a") as log:
                log.write(json.dumps(entry) + "\n")
                log.flush()
            self.send_response(204 if verified else 400)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            pass

    ThreadingHTTPServer(("127.0.0.1", port), Handler).serve_forever()


if __name__ == "__main__":
    _serve(int(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3]), float(sys.argv[4]) if len(sys.argv) > 4 else 0.0)
