"""The test harness's own promises about ports and readiness: a server's readiness probe counts
only when the process started holds the port (another process answering on it must not pass for
the server: one module's requests once reached another worker's server in CI)."""

from __future__ import annotations

import http.server
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.server import free_port, listens_on, wait_until_up


@pytest.fixture
def foreign_server() -> Iterator[int]:
    """An HTTP server in this process that answers 200 to everything, on a port of its own."""

    class Ok(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *_: object) -> None:
            pass

    server = http.server.HTTPServer(("127.0.0.1", free_port()), Ok)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()


def test_free_ports_are_distinct_and_below_the_ephemeral_range() -> None:
    ports = [free_port() for _ in range(50)]
    assert len(set(ports)) == 50 and all(1024 < p < 32768 for p in ports)


def test_a_probe_answered_by_another_process_is_not_readiness(foreign_server: int, tmp_path: Path) -> None:
    assert listens_on(os.getpid(), foreign_server)
    idle = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        assert not listens_on(idle.pid, foreign_server)
        output = tmp_path / "idle.log"
        output.write_text("")
        with pytest.raises(RuntimeError, match="did not answer"):
            wait_until_up(idle, f"http://127.0.0.1:{foreign_server}/healthz", "idle", output, timeout=1)
        # The process that does hold the port is ready as soon as it answers.
        wait_until_up(_this_process(), f"http://127.0.0.1:{foreign_server}/healthz", "self", output, timeout=30)
    finally:
        idle.kill()
        idle.wait()


class _ThisProcess:
    """What wait_until_up asks of a process, for the test process itself."""

    pid = os.getpid()

    def poll(self) -> None:
        return None


def _this_process() -> subprocess.Popen[bytes]:
    return _ThisProcess()  # type: ignore[return-value]
