"""A blocking-hook service for tests, run as its own process:

    python -m tests.support.hook_server PORT RULES_FILE LOG_FILE

Each call (JSON ``{"hook", "owner", "upload"}``) is answered from ``RULES_FILE`` (JSON, read on every
call so a test can change its mind): ``rules[hook][upload filename]``, else ``rules[hook]["*"]``,
else ``{}`` (go ahead); a rule ``{"http_status": N}`` answers that status with no body. Every call
is appended to ``LOG_FILE`` as a JSON line. ``HookServer`` starts and stops it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx

__all__ = ["HookServer"]


class HookServer:
    def __init__(self, root: Path, port: int) -> None:
        self.root = root
        self.port = port
        self.rules_file = root / "rules.json"
        self.log_file = root / "calls.jsonl"
        self.process: subprocess.Popen[bytes] | None = None
        root.mkdir(parents=True, exist_ok=True)
        self.rules({})

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    def rules(self, rules: dict[str, dict[str, Any]]) -> None:
        tmp = self.rules_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(rules))
        tmp.replace(self.rules_file)

    def calls(self) -> list[dict[str, Any]]:
        if not self.log_file.exists():
            return []
        return [json.loads(line) for line in self.log_file.read_text().splitlines() if line.strip()]

    def start(self, timeout: float = 120.0) -> HookServer:
        repo = Path(__file__).resolve().parents[2]
        env = {**os.environ, "PYTHONPATH": f"{repo}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tests.support.hook_server",
                str(self.port),
                str(self.rules_file),
                str(self.log_file),
            ],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout
        with httpx.Client(timeout=5) as http:  # one client: a new one per poll costs real CPU
            while time.monotonic() < deadline:
                try:
                    http.get(self.url)
                    return self
                except httpx.HTTPError:
                    time.sleep(0.05)
        raise RuntimeError("the hook server did not start")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)
        self.process = None


def _serve(port: int, rules_file: Path, log_file: Path) -> None:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def do_POST(self) -> None:
            call = json.loads(self.rfile.read(int(self.headers.get("Content-Length", "0"))))
            with open(log_file, "a") as log:
                log.write(json.dumps(call) + "\n")
            rules = json.loads(rules_file.read_text()).get(call["hook"], {})
            rule = rules.get(call["upload"]["filename"], rules.get("*", {}))
            if "http_status" in rule:
                self.send_response(rule["http_status"])
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            body = json.dumps(rule).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    ThreadingHTTPServer(("127.0.0.1", port), Handler).serve_forever()


if __name__ == "__main__":
    _serve(int(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3]))
