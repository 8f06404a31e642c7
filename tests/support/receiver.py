"""What the tests' receiving services share (the blocking-hook service, the webhook receiver).

In the test: :class:`ReceiverProcess`, a ``python -m tests.support.<module> PORT …`` child on a fixed
port (so a test can stop it and start it again at the same URL), started once it answers, and the
JSON files it reads and writes. In the child: :func:`serve`, a threaded HTTP server that answers GET
(the readiness probe) with an empty 200 and every POST with what a function makes of it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from collections.abc import Callable, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Self

from tests.support.server import wait_until_up

__all__ = ["Answer", "ReceiverProcess", "append_json_line", "read_json_lines", "serve", "write_json"]

ROOT = Path(__file__).resolve().parents[2]

Answer = Callable[[str, Mapping[str, str], bytes], tuple[int, bytes]]
"""(path, lower-cased headers, body) of a POST → (status, JSON body or ``b""``)."""


class ReceiverProcess:
    """The child process; a subclass names its ``module`` and the ``arguments`` after the port."""

    module: str
    name: str

    def __init__(self, root: Path, port: int) -> None:
        self.root = root
        self.port = port
        self.process: subprocess.Popen[bytes] | None = None
        root.mkdir(parents=True, exist_ok=True)

    def arguments(self) -> list[str]:
        raise NotImplementedError

    def start(self, timeout: float = 120.0) -> Self:
        env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
        errors = self.root / f"{self.module.rsplit('.', 1)[-1]}.err"
        self.process = subprocess.Popen(
            [sys.executable, "-m", self.module, str(self.port), *self.arguments()],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=open(errors, "ab"),  # noqa: SIM115 - the child keeps it
            start_new_session=True,
        )
        wait_until_up(self.process, f"http://127.0.0.1:{self.port}/ready", f"the {self.name}", errors, timeout)
        return self

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)
        self.process = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()


def write_json(path: Path, value: Any) -> None:
    """Replace ``path`` at once (the child reads it on every request)."""
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(value))
    tmp.replace(path)


def read_json_lines(path: Path) -> list[dict[str, Any]]:
    """The whole lines written so far: a line the child is still writing (no newline yet) is left
    for the next look (a test read one half-written and failed on its JSON)."""
    if not path.exists():
        return []
    text = path.read_text()
    whole = text[: text.rfind("\n") + 1]
    return [json.loads(line) for line in whole.splitlines() if line.strip()]


_appending = threading.Lock()


def append_json_line(path: Path, entry: Any) -> None:
    """One JSON line, whole (the server answers from several threads)."""
    with _appending, open(path, "a") as log:
        log.write(json.dumps(entry) + "\n")


def serve(port: int, answer: Answer) -> None:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self._reply(200, b"")

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            headers = {name.lower(): value for name, value in self.headers.items()}
            self._reply(*answer(self.path, headers, body))

        def _reply(self, status: int, body: bytes) -> None:
            self.send_response(status)
            if body:
                self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    ThreadingHTTPServer(("127.0.0.1", port), Handler).serve_forever()
