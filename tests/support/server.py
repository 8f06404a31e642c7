"""A real ``chunkd serve`` process for end-to-end tests: start, stop, kill -9, restart on the
same data dir, and API keys made in its database."""

from __future__ import annotations

import asyncio
import fcntl
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import IO

import httpx

from tests.support.proc import holds, process_tree, tcp_sockets
from tests.support.sqlite import DB_NAME, copy_sqlite, process_template

__all__ = ["ChunkdServer", "free_port", "wait_until_up"]

BIN = Path(sys.executable).parent


# Ports handed out by free_port: below Linux's ephemeral range (32768-60999), so no outgoing
# connection holds one, and a block of its own per test process, so two processes never pick the
# same port. Asking the kernel for port 0 did neither: a port it handed one worker could be handed to
# another before the first server bound it, and the loser's readiness probe was then answered by the
# winner (CI saw a module's keys refused by another worker's server). The block is the first one
# whose lock file this process can lock, not the xdist worker's number: two suites on one machine
# (two checkouts) had the same workers, so the same blocks, and took each other's ports.
_PORTS_FIRST = 20_000
_PORTS_PER_WORKER = 600
_BLOCKS = 20
_next_port = 0
_block: tuple[int, IO[bytes]] | None = None  # the block's index, and its lock file (held while the process lives)


def _block_index() -> int:
    global _block
    if _block is None:
        locks = Path(tempfile.gettempdir()) / "chunkd-test-ports"
        locks.mkdir(exist_ok=True)
        for index in range(_BLOCKS):
            held = open(locks / f"block-{index}.lock", "wb")  # noqa: SIM115 - kept open: the lock lives with it
            try:
                fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                held.close()
                continue
            _block = (index, held)
            break
        else:
            raise RuntimeError(f"all {_BLOCKS} port blocks are held by other test processes")
    return _block[0]


def free_port() -> int:
    """A port on 127.0.0.1 nothing listens on now, from this process's own block (see above)."""
    global _next_port
    first = _PORTS_FIRST + _block_index() * _PORTS_PER_WORKER
    for _ in range(_PORTS_PER_WORKER):
        port = first + _next_port
        _next_port = (_next_port + 1) % _PORTS_PER_WORKER
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError(f"no free port in {first}-{first + _PORTS_PER_WORKER - 1}")


def listens_on(pid: int, port: int) -> bool:
    """Whether ``pid`` (or a process it started: a server may listen from a worker process of its
    own) holds the listening TCP socket on ``port``; True where /proc cannot tell (not Linux)."""
    if not Path("/proc/net/tcp").exists():
        return True
    inodes = {s.inode for s in tcp_sockets() if s.listening and s.local_port == port}
    return any(holds(member, inodes) for member in process_tree(pid))


def wait_until_up(process: subprocess.Popen[bytes], probe: str, name: str, output: Path, timeout: float) -> None:
    """Return once GET ``probe`` answers 200; fail at once if ``process`` exits, and after ``timeout``
    seconds, showing ``output`` (what the process wrote)."""
    deadline = time.monotonic() + timeout
    port = httpx.URL(probe).port
    # One client for the whole wait: each httpx.get() builds a client (and an SSL context), tens of
    # milliseconds of CPU per poll taken from the process we are waiting for.
    with httpx.Client(timeout=5) as http:
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise RuntimeError(f"{name} exited with {process.returncode}: {output.read_text()}")
            try:
                answered = http.get(probe).status_code == 200
            except httpx.HTTPError:
                answered = False
            # Answered by this process, not by another that holds the port (this one then exits).
            if answered and (port is None or listens_on(process.pid, port)):
                return
            time.sleep(0.05)
    raise RuntimeError(f"{name} did not answer in {timeout}s: {output.read_text()}")


class ChunkdServer:
    def __init__(self, data_dir: Path, *, port: int | None = None, env: dict[str, str] | None = None) -> None:
        self.data_dir = data_dir
        self.port = port or free_port()
        self.env = {**os.environ, "CHUNKD_BOOTSTRAP_ADMIN_KEY": "false", **(env or {})}
        self.process: subprocess.Popen[bytes] | None = None
        self.log = data_dir.parent / f"server-{self.port}.log"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 120.0) -> ChunkdServer:
        """Spawn the server and wait until it answers /healthz; ``timeout`` only bounds a server that
        never comes up (a loaded machine may take many seconds to import the app)."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if "CHUNKD_DATABASE_URL" not in self.env and not (self.data_dir / DB_NAME).exists():
            # A new data dir gets a copy of a migrated database, as in-process tests do: `chunkd serve`
            # would spend about a second of CPU migrating each one (~100 servers a run). Its own
            # migration of a new data dir is tested in tests/cli/test_migrate.py.
            copy_sqlite(process_template(), self.data_dir)
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen(
                [str(BIN / "chunkd"), "serve", "--port", str(self.port), "--data-dir", str(self.data_dir)],
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        try:
            wait_until_up(self.process, f"{self.url}/healthz", "chunkd serve", self.log, timeout)
        except RuntimeError:
            self.kill()  # never leave a server behind (a caller that gets the error has nothing to kill)
            raise
        return self

    def __enter__(self) -> ChunkdServer:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.kill()

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, sig)
            self.process.wait(timeout=30)
        self.process = None

    def stop(self) -> None:
        self.kill(signal.SIGTERM)

    def restart(self) -> ChunkdServer:
        self.kill()
        return self.start()

    def create_key(self, owner: str, scopes: str = "files:create,files:read,files:delete") -> str:
        """An API key in this server's database, made as ``chunkd keys create`` makes it (through the
        runtime's key service) but in this process: a ``chunkd`` process would spend seconds of CPU
        importing the app for each key. The command itself is tested in tests/cli/test_keys.py."""
        from chunkd.runtime import open_runtime
        from chunkd.settings import Settings

        settings = Settings(data_dir=self.data_dir, database_url=self.env.get("CHUNKD_DATABASE_URL"))

        async def create() -> str:
            runtime = await open_runtime(settings)
            try:
                _, token = await runtime.keys.create(owner, scopes)
                return token
            finally:
                await runtime.close()

        # A thread of its own: the caller may be a test that runs an event loop already.
        with ThreadPoolExecutor(1) as pool:
            return pool.submit(asyncio.run, create()).result()
