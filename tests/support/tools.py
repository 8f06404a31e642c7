"""Tools and services the tests take from the machine, and what a test does when one is missing:
it is skipped, except in CI (``CI`` set), where a missing tool is an error."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NoReturn

import pytest

__all__ = ["CHROMIUM", "CHROMIUM_ARGS", "chromium", "launch_chromium", "missing", "require"]

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


def missing(message: str) -> NoReturn:
    """Skip the test for want of ``message``'s tool (fail in CI, where every tool must be there)."""
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


def require(path: str | Path, what: str) -> None:
    """``what`` must be at ``path`` (scripts/test-deps.sh puts it there)."""
    if not Path(path).exists():
        missing(f"{what} missing at {path}: run scripts/test-deps.sh")


def launch_chromium(playwright: Any) -> Any:
    """A headless Chromium from a running ``sync_playwright()`` (the test closes it)."""
    require(CHROMIUM, "chromium")
    return playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)


@contextmanager
def chromium() -> Iterator[Any]:
    """A headless Chromium in a Playwright of its own, closed after use."""
    require(CHROMIUM, "chromium")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        instance = launch_chromium(pw)
        try:
            yield instance
        finally:
            instance.close()
