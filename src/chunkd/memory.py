"""Keeping the server's memory flat under many threads, and the cyclic collector's pauses short.

glibc gives each thread that allocates its own malloc arena (up to 8 per core). Request bodies are
allocated by the event loop's thread while their digests and writes run in worker threads, and
memory freed into many arenas is kept by each of them, so the resident size creeps up with the
number of threads that have ever touched a buffer. Two arenas are enough for one event loop plus
its helpers: on the upload benchmark (1 GiB in 8 MiB parts, then 4 in parallel, then one whole-file
PUT) the peak RSS went from 132 MiB to 117 MiB, at the same throughput. Python has no binding for
``mallopt``, hence ctypes; elsewhere than glibc this does nothing.

The objects made at start-up (modules, the app and its routes, pydantic's schemas, settings) live
as long as the process, yet every full pass of Python's cyclic collector walks them all, with the
event loop stopped: 16 clients creating 64 KiB tus files saw passes of 155 ms, which all 16
requests in flight waited for (their p99 was 290 ms against a median of 60). Frozen once start-up
is done (``gc.freeze``), they are no longer walked. Only cycles among them would be kept if they
became garbage; objects freed by reference counting are freed as before.

Then the young generation is collected every 10,000 net allocations instead of 700. A young pass
walks every young object still alive, and under load those are mostly the requests in flight:
with 100 concurrent tus uploads, passes every 700 allocations walked them ~1,650 times a run and
the middle and full passes that follow ~160 times, 0.95 s of the event loop's time in a 1 GiB run
(~8 % of it); every 10,000, 50 passes and 0.25 s (``compare.py many-100``, 2026-12-01). Garbage
freed by reference counting is not affected; only garbage in reference cycles waits longer, and
the request path makes none (``chunkd.service.streaming``; a test keeps it so). A pass then takes
~5 ms at that load, against ~0.3 ms: well inside the requests' own latency (p99 ~400 ms)."""

from __future__ import annotations

import ctypes
import ctypes.util
import gc

__all__ = ["YOUNG_COLLECTION_EVERY", "limit_malloc_arenas", "tune_collector"]

_M_ARENA_MAX = -8  # from glibc's malloc.h
YOUNG_COLLECTION_EVERY = 10_000


def limit_malloc_arenas(arenas: int = 2) -> bool:
    """Cap glibc's malloc arenas (affects threads that allocate from now on). True if applied."""
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    return bool(mallopt(_M_ARENA_MAX, arenas))


def tune_collector() -> None:
    """Collect what start-up left behind, keep every object alive now out of the cyclic
    collector's later passes, and space its young passes (see the module docstring)."""
    gc.collect()
    gc.freeze()
    _, middle, full = gc.get_threshold()
    gc.set_threshold(YOUNG_COLLECTION_EVERY, middle, full)
