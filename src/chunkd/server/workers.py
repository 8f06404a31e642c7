"""``chunkd serve --workers N``: N server processes forked from one supervisor, sharing its
listening socket (the kernel hands each connection to one of them).

Why: one process runs its Python on one core at a time. With 100 concurrent uploads on two cores,
one process left about a core idle; two workers moved 57 → 69-75 MiB/s (``compare.py many-100``,
2026-11-30). The cost is memory: each worker is a copy of the app (pages shared with the
supervisor until written).

What the workers share, and how:
- upload locks: byte-range locks in the data dir's lock file, as before; a take-over of an upload
  another worker writes reaches it through ``chunkd.backends.locks.siblings`` (PostgreSQL: NOTIFY);
- database writes: SQLite's own locking, in turns (``GroupCommitWriter``);
- metrics: prometheus_client's multi-process mode, in a private temporary directory made here, so
  ``/metrics`` from any worker reports all of them;
- rate limits: counted per worker unless ``CHUNKD_REDIS_URL`` names a shared store (as per node).

First-start work (migrations, the server secret, the bootstrap admin key, the operator's webhook
endpoints) runs in the first worker alone: the others are forked once it is serving.

The supervisor starts a worker that dies again, unless it died before it served (it cannot
start: the supervisor stops the others and exits non-zero). SIGTERM or SIGINT stops every
worker gracefully; a second one kills them. Workers die with the supervisor (even by ``kill -9``).
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import shutil
import signal
import socket
import stat
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import FrameType

from chunkd.backends.locks import siblings

__all__ = ["Supervisor", "shared_metrics"]

log = logging.getLogger("chunkd.server")

_PR_SET_PDEATHSIG = 1
# A worker that dies within this many seconds of its start waits this long before the next.
RESTART_PAUSE = 1.0

# serve(ready) runs one worker's server on the socket and returns its exit status; it calls
# ready() once the server answers requests.
Serve = Callable[[Callable[[], None]], int]


_METRICS_PREFIX = "chunkd-metrics-"


def _remove_orphaned_metrics() -> None:
    """Remove the metrics directories of supervisors that are gone without cleaning up (``kill -9``):
    ours (same user), named after a process that no longer exists."""
    root = Path(tempfile.gettempdir())
    for path in root.glob(f"{_METRICS_PREFIX}*-*"):
        pid = path.name.removeprefix(_METRICS_PREFIX).partition("-")[0]
        try:
            info = path.lstat()  # a symlink is never followed, nor removed
            if not pid.isdigit() or info.st_uid != os.getuid() or not stat.S_ISDIR(info.st_mode):
                continue
            os.kill(int(pid), 0)
        except ProcessLookupError:
            shutil.rmtree(path, ignore_errors=True)
        except OSError:
            continue  # alive under another user (EPERM), or the entry went meanwhile


@contextlib.contextmanager
def shared_metrics() -> Iterator[None]:
    """A private directory for prometheus_client's multi-process mode, named in its environment
    variable before any metric exists (the library picks its value class at import), removed at the end."""
    if "prometheus_client" in sys.modules:
        raise RuntimeError("shared_metrics must come before prometheus_client is imported")
    _remove_orphaned_metrics()
    directory = tempfile.mkdtemp(prefix=f"{_METRICS_PREFIX}{os.getpid()}-")  # 0700
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = directory
    try:
        yield
    finally:
        shutil.rmtree(directory, ignore_errors=True)


class Supervisor:
    def __init__(self, count: int, sock: socket.socket, serve: Serve) -> None:
        self.count = count
        self.sock = sock
        self.serve = serve
        self.inboxes, self.outboxes = siblings.channels(count)
        self.pids: dict[int, int] = {}  # pid → slot
        self.ready: dict[int, int] = {}  # pid → the pipe its worker writes a byte to once it serves
        self.serving: set[int] = set()  # pids whose byte has been read
        self.forked: dict[int, float] = {}  # slot → when its worker was last forked
        self.stopping = 0  # stop signals received
        self.failed = False

    def run(self) -> int:
        """Start the workers and watch them until they are all gone; the exit status."""
        previous = {sig: signal.signal(sig, self._on_stop) for sig in (signal.SIGTERM, signal.SIGINT)}
        try:
            first = self._spawn(0)
            # A byte once the first worker serves; nothing (end of file) if it died first.
            if self._served(first, wait=True) and not self.stopping:
                for slot in range(1, self.count):
                    self._spawn(slot)
            self._watch()
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            self.sock.close()
        return 1 if self.failed else 0

    def _watch(self) -> None:
        while self.pids:
            pid, status = os.wait()  # a signal's handler runs inside; the wait goes on (PEP 475)
            slot = self.pids.pop(pid, None)
            if slot is None:
                continue
            _forget_metrics(pid)
            served = self._served(pid, wait=False)
            self.serving.discard(pid)
            code = os.waitstatus_to_exitcode(status)
            if self.stopping:
                continue
            if not served:
                log.error("worker %d (pid %d) exited with %d before it served: stopping the server", slot, pid, code)
                self.failed = True
                self.stopping = 1
                self._signal_all(signal.SIGTERM)
                continue
            log.warning("worker %d (pid %d) exited with %d: starting it again", slot, pid, code)
            if time.monotonic() - self.forked[slot] < RESTART_PAUSE:
                time.sleep(RESTART_PAUSE)  # one that fails at each start of its work must not spin
            self._spawn(slot)

    def _served(self, pid: int, *, wait: bool) -> bool:
        """Whether worker ``pid`` said it serves (``wait``: block until it says so or exits)."""
        ready = self.ready.pop(pid, None)
        if ready is None:  # it said so before
            return pid in self.serving
        try:
            if not wait:
                os.set_blocking(ready, False)
            try:
                served = os.read(ready, 1) == b"1"
            except BlockingIOError:
                served = False
        finally:
            os.close(ready)
        if served:
            self.serving.add(pid)
        return served

    def _on_stop(self, signum: int, frame: FrameType | None) -> None:
        self.stopping += 1
        self._signal_all(signal.SIGTERM if self.stopping == 1 else signal.SIGKILL)

    def _signal_all(self, sig: int) -> None:
        for pid in self.pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)

    def _spawn(self, slot: int) -> int:
        """Fork the worker of ``slot``; its pid."""
        parent = os.getpid()
        sys.stdout.flush()
        sys.stderr.flush()
        ready_read, ready = os.pipe()
        pid = os.fork()
        if pid:
            os.close(ready)
            self.forked[slot] = time.monotonic()
            self.pids[pid] = slot
            self.ready[pid] = ready_read
            return pid
        self.pids.clear()  # a stop signal before the handlers are reset must not reach the others
        os.close(ready_read)
        for other in self.ready.values():
            os.close(other)
        code = 1
        try:
            code = self._work(slot, parent, ready)
        except SystemExit as exc:  # uvicorn's, when the app does not start
            code = exc.code if isinstance(exc.code, int) else 1
        except BaseException:
            log.exception("worker %d failed", slot)
        finally:
            logging.shutdown()  # the access log's last lines
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)

    def _work(self, slot: int, parent: int, ready: int) -> int:
        """In the worker: die with the supervisor, take the default signal handlers back (the
        server installs its own), join the siblings and serve."""
        _die_with_parent()
        if os.getppid() != parent:  # the supervisor died before the line above
            return 1
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, signal.SIG_DFL)
        siblings.join(siblings.Siblings(self.inboxes, self.outboxes, slot))

        def announce() -> None:
            with contextlib.suppress(OSError):
                os.write(ready, b"1")

        return self.serve(announce)


def _die_with_parent() -> None:
    """Ask Linux to kill this process when its parent dies (elsewhere: nothing)."""
    if not sys.platform.startswith("linux"):
        return
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


def _forget_metrics(pid: int) -> None:
    """A dead worker's live gauges (its counters stay: totals do not drop when a worker restarts)."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        with contextlib.suppress(OSError):
            multiprocess.mark_process_dead(pid)  # type: ignore[no-untyped-call]
