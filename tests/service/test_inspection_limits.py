"""The inspection workers' own limits, beside the wall time the pool enforces: an allocation past
the address-space limit fails inside the worker, and a job that burns CPU past its allowance is
killed by the kernel (SIGXCPU) even when no wall time is set, and the pool goes on."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from pebble import ProcessExpired, ProcessPool

from chunkd.service.inspection import InspectionLimits, cap_cpu, worker_pool

MiB = 1024 * 1024


def allocate(size: int) -> str:
    try:
        block = bytearray(size)
    except MemoryError:
        return "MemoryError"
    return f"allocated {len(block)}"


def spin(seconds: int) -> None:
    cap_cpu(seconds)
    while True:
        pass


@pytest.fixture
def pool() -> Iterator[ProcessPool]:
    limits = InspectionLimits(
        workers=1, timeout_seconds=1, memory_bytes=256 * MiB, max_pdf_pages=10, max_image_pixels=100
    )
    workers = worker_pool(limits)
    try:
        yield workers
    finally:
        workers.stop()  # type: ignore[no-untyped-call]
        workers.join(timeout=10)


def test_memory_past_the_limit_fails_in_the_worker(pool: ProcessPool) -> None:
    assert pool.schedule(allocate, args=(1024 * MiB,)).result(timeout=60) == "MemoryError"
    assert pool.schedule(allocate, args=(8 * MiB,)).result(timeout=60) == f"allocated {8 * MiB}"


def test_cpu_past_the_allowance_kills_the_worker(pool: ProcessPool) -> None:
    with pytest.raises(ProcessExpired):
        pool.schedule(spin, args=(1,)).result(timeout=120)  # no pebble timeout: the kernel stops it
    assert pool.schedule(allocate, args=(MiB,)).result(timeout=60) == f"allocated {MiB}"
