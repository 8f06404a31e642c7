"""The import graph follows the layers of the architecture (ARCHITECTURE.md): read from the sources (every
``import``, also those inside functions), so a lazy import breaks the rule as much as a top-level one."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SOURCES = Path(__file__).resolve().parents[1] / "src"


def _module(path: Path) -> str:
    parts = path.relative_to(SOURCES).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> set[str]:
    """The chunkd modules ``path`` imports (absolute imports; chunkd uses no relative ones)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return {name for name in found if name == "chunkd" or name.startswith("chunkd.")}


GRAPH = {_module(path): _imports(path) for path in SOURCES.rglob("*.py")}


def _within(name: str, package: str) -> bool:
    return name == package or name.startswith(package + ".")


def _closure(start: str) -> set[str]:
    """Every chunkd module ``start`` reaches through its imports."""
    seen, todo = set(), [start]
    while todo:
        for name in GRAPH.get(todo.pop(), set()) & GRAPH.keys():
            if name not in seen:
                seen.add(name)
                todo.append(name)
    return seen


def test_the_graph_is_read() -> None:
    assert "chunkd.server.cycle" in GRAPH["chunkd.server.protocol"]
    assert "chunkd.scope" in GRAPH["chunkd.server.cycle"]


@pytest.mark.parametrize("module", sorted(name for name in GRAPH if _within(name, "chunkd.server.protocol")))
def test_the_server_protocol_reaches_no_frontend(module: str) -> None:
    """The HTTP protocol runs under any app: what it shares with chunkd's app (scope keys, how a
    path is logged) lives in ``chunkd.scope``, below both."""
    reached = sorted(name for name in _closure(module) if _within(name, "chunkd.frontends"))
    assert reached == [], reached


@pytest.mark.parametrize("module", sorted(name for name in GRAPH if _within(name, "chunkd.server")))
def test_the_server_layer_imports_no_frontend(module: str) -> None:
    """Its runner composes the app through ``chunkd.app`` only, never a frontend directly."""
    direct = sorted(name for name in GRAPH[module] if _within(name, "chunkd.frontends"))
    assert direct == [], direct


def test_the_shared_request_module_imports_nothing_of_chunkd() -> None:
    assert GRAPH["chunkd.scope"] == set()
