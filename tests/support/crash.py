"""``kill -9`` of a ``chunkd serve`` at a precise step, not at a random moment: the server runs
with a ``sitecustomize`` (on its PYTHONPATH) that wraps one function of chunkd's; once the test
arms it (creates the ``armed`` file), the ``call``-th call of that function kills the server's
whole process group with SIGKILL just ``before`` it runs or ``after`` it returned. Nothing of
the server's runs after that: no ``finally``, no rollback, no answer."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from tests.support.server import ChunkdServer

__all__ = ["KillPoint", "armed_server"]

_SITE = """
import functools, inspect, json, os, signal, sys, threading

def _install():
    spec = json.loads(os.environ["CHUNKD_TEST_KILL_AT"])
    module_name, _, qualname = spec["target"].partition(":")
    module = __import__(module_name, fromlist=["_"])
    owner, _, name = qualname.rpartition(".")
    holder = getattr(module, owner) if owner else module
    real = getattr(holder, name)
    armed, when, call = spec["armed"], spec["when"], spec["call"]
    calls = [0]
    lock = threading.Lock()

    def due():
        if not os.path.exists(armed):
            return False
        with lock:
            calls[0] += 1
            return calls[0] == call

    def die():
        os.killpg(os.getpgid(0), signal.SIGKILL)

    if inspect.iscoroutinefunction(real):
        @functools.wraps(real)
        async def wrapper(*args, **kwargs):
            kill = due()
            if kill and when == "before":
                die()
            result = await real(*args, **kwargs)
            if kill:
                die()
            return result
    else:
        @functools.wraps(real)
        def wrapper(*args, **kwargs):
            kill = due()
            if kill and when == "before":
                die()
            result = real(*args, **kwargs)
            if kill:
                die()
            return result
    setattr(holder, name, wrapper)

# In the server only: ``chunkd serve`` starts as the command line and becomes the server (execv),
# and the command line importing the target's module is a few tenths of a second of CPU for nothing.
if os.environ.get("CHUNKD_TEST_KILL_AT") and sys.orig_argv[-2:] == ["-m", "chunkd.server"]:
    _install()
"""


@dataclass(frozen=True)
class KillPoint:
    """Where to die: ``target`` is ``module:function`` or ``module:Class.method``."""

    target: str
    when: str = "after"  # or "before"
    call: int = 1

    @property
    def id(self) -> str:
        return f"{self.when}-{self.target.rsplit(':', 1)[1]}" + (f"-{self.call}" if self.call != 1 else "")


def armed_server(data_dir: Path, point: KillPoint, env: dict[str, str] | None = None) -> tuple[ChunkdServer, Path]:
    """A server (not started) that dies at ``point`` once the returned file exists. Drop
    ``CHUNKD_TEST_KILL_AT`` from its ``env`` before starting it again."""
    site = data_dir.parent / "kill-site"
    site.mkdir(parents=True, exist_ok=True)
    (site / "sitecustomize.py").write_text(_SITE)
    armed = data_dir.parent / "kill-armed"
    spec = {"target": point.target, "when": point.when, "call": point.call, "armed": str(armed)}
    server = ChunkdServer(
        data_dir,
        env={**(env or {}), "PYTHONPATH": str(site), "CHUNKD_TEST_KILL_AT": json.dumps(spec)},
    )
    return server, armed
