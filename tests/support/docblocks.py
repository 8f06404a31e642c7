"""Code blocks of the project's Markdown documents, for the test that runs them.

A fenced block (```` ```sh ````, ``bash``, ``shell``, ``python``, ``py``) is an example to run. A block
that needs what the test cannot give (PostgreSQL, S3, nginx, the make targets) carries an HTML comment
on the line right before it::

    <!-- docs-test: skip needs PostgreSQL and S3 -->

Blocks in other languages (``nginx``, ``js``, ``json``, none) are not examples of commands and are
left out.
"""

from __future__ import annotations

import re
import textwrap
from dataclasses import dataclass
from pathlib import Path

__all__ = ["RUNNABLE", "Block", "blocks_of", "documents"]

SHELL = frozenset({"sh", "bash", "shell"})
PYTHON = frozenset({"python", "py"})
RUNNABLE = SHELL | PYTHON

_FENCE = re.compile(r"^(\s*)(`{3,}|~{3,})\s*([\w+-]*)")
_DIRECTIVE = re.compile(r"^\s*<!--\s*docs-test:\s*(\w+)\s*(.*?)\s*-->\s*$")


@dataclass(frozen=True)
class Block:
    path: Path
    line: int  # 1-based line of the opening fence
    language: str  # "sh" or "python"
    code: str
    skip: str | None  # the reason, when marked to be skipped

    @property
    def where(self) -> str:
        return f"{self.path.name}:{self.line}"


def documents(root: Path) -> list[Path]:
    """README.md and every Markdown file under docs/."""
    return [root / "README.md", *sorted((root / "docs").rglob("*.md"))]


def blocks_of(path: Path) -> list[Block]:
    """The runnable blocks of one document, in order."""
    lines = path.read_text().splitlines()
    found: list[Block] = []
    i = 0
    while i < len(lines):
        match = _FENCE.match(lines[i])
        if not match:
            i += 1
            continue
        indent, fence, language = match.groups()
        start = i
        i += 1
        body: list[str] = []
        while i < len(lines) and not lines[i].strip().startswith(fence):
            body.append(lines[i][len(indent) :] if lines[i].startswith(indent) else lines[i])
            i += 1
        i += 1  # the closing fence
        language = language.lower()
        if language not in RUNNABLE:
            continue
        skip: str | None = None
        before = start - 1
        while before >= 0 and not lines[before].strip():
            before -= 1
        directive = _DIRECTIVE.match(lines[before]) if before >= 0 else None
        if directive is not None:
            if directive.group(1) != "skip":
                raise ValueError(f"{path}:{before + 1}: unknown docs-test directive {directive.group(1)!r}")
            skip = directive.group(2) or "marked skip"
        found.append(
            Block(path, start + 1, "sh" if language in SHELL else "python", textwrap.dedent("\n".join(body)), skip)
        )
    return found
