"""A logging handler that writes its lines in batches from a thread of its own.

A ``StreamHandler`` writes and flushes once per record: one system call per request on the event
loop's thread, which measured as the largest part of the access log's cost (see
docs/operations.md). Here ``emit`` only appends the formatted line to a deque; a daemon thread
writes what has gathered every ``interval`` seconds (one write and one flush), and at exit. The
price: a line reaches the stream up to ``interval`` later, and a ``kill -9`` loses at most that
much of the log (nginx's ``access_log ... buffer= flush=`` makes the same trade).

``close`` writes what is left and stops the thread, but a line that comes after it starts the
thread again: ``logging.config.dictConfig`` closes every existing handler while leaving it on its
logger (uvicorn calls it when it starts, after the app is made), and a handler that went silent
then would lose the whole log."""

from __future__ import annotations

import atexit
import logging
import os
import select
import threading
import weakref
from collections import deque
from collections.abc import Iterator
from typing import TextIO

__all__ = ["BatchingHandler"]

_handlers: weakref.WeakSet[BatchingHandler] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    # A forked worker (``chunkd serve --workers N``) has none of its parent's threads: each handler
    # starts its writer again at its next line, and its lock may have been held by the parent's
    # writer. Lines queued before the fork are the parent's to write.
    for handler in list(_handlers):
        handler._write_lock = threading.Lock()
        handler._running = False
        handler._lines.clear()


os.register_at_fork(after_in_child=_after_fork_in_child)


class BatchingHandler(logging.Handler):
    def __init__(self, stream: TextIO, *, interval: float = 0.1) -> None:
        super().__init__()
        self.stream = stream
        self.interval = interval
        self._lines: deque[str] = deque()
        self._write_lock = threading.Lock()
        self._stop = threading.Event()
        self._running = False
        self._start()
        atexit.register(self.flush)
        _handlers.add(self)

    def _start(self) -> None:
        with self._write_lock:
            if self._running:
                return
            # A new event per thread: a stopped thread still waking up cannot miss its stop.
            self._stop = stop = threading.Event()
            threading.Thread(target=self._run, args=(stop,), name="chunkd-log-writer", daemon=True).start()
            self._running = True

    def handle(self, record: logging.LogRecord) -> bool:
        # No handler lock: deque.append is atomic, and the writer thread must never make the
        # event loop wait for its write.
        if not self.filter(record):
            return False
        self.emit(record)
        return True

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self._lines.append(self.format(record))
        except Exception:
            self.handleError(record)
        if not self._running:
            self._start()

    def write(self, line: str) -> None:
        """Queue a finished line, without a LogRecord (for a caller that checked it is this
        handler's logger's only handler and that no filter applies)."""
        self._lines.append(line)
        if not self._running:
            self._start()

    def flush(self) -> None:
        with self._write_lock:
            lines = []
            while self._lines:
                lines.append(self._lines.popleft())
            try:
                for piece in _atomic_pieces(lines):
                    self.stream.write(piece)
                    self.stream.flush()
            except (OSError, ValueError):  # stream closed or gone (e.g. at interpreter exit)
                pass

    def _run(self, stop: threading.Event) -> None:
        while not stop.wait(self.interval):
            self.flush()

    def close(self) -> None:
        with self._write_lock:
            self._running = False
            self._stop.set()
        self.flush()
        super().close()


def _atomic_pieces(lines: list[str]) -> Iterator[str]:
    """``lines`` joined into pieces of at most PIPE_BUF bytes (a longer line alone), each written
    with one system call: the workers of ``chunkd serve --workers N`` share one stdout, and a
    write of up to PIPE_BUF bytes to a pipe is never interleaved with another process's, so no
    line of the log is ever cut by another worker's."""
    piece: list[str] = []
    size = 0
    for line in lines:
        length = (len(line) if line.isascii() else len(line.encode())) + 1
        if piece and size + length > select.PIPE_BUF:
            yield "\n".join(piece) + "\n"
            piece, size = [], 0
        piece.append(line)
        size += length
    if piece:
        yield "\n".join(piece) + "\n"
