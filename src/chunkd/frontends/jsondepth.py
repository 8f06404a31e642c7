"""A cap on the nesting of JSON request bodies.

Python's ``json`` parses nested arrays and objects recursively: a body of a few thousand ``[``
raises ``RecursionError`` deep in the parser (the connection used to be reset), and even below
that, every level costs a frame. No request chunkd takes needs more than a few levels, so every
JSON body is refused with 400 past :data:`MAX_JSON_DEPTH` levels, before it is parsed.

:class:`DepthMeter` counts the depth of a body as it streams in (the body guard feeds it the JSON
bodies FastAPI parses itself); :func:`loads` checks and parses a body already read (pm ``?done``,
media complete, asset complete). Only the structural characters are visited (a regular
expression finds them), so a long string costs almost nothing."""

from __future__ import annotations

import json
import re
from typing import Any

from chunkd.domain.errors import InvalidInput

__all__ = ["MAX_JSON_DEPTH", "DepthMeter", "TooDeep", "loads"]

MAX_JSON_DEPTH = 64  # levels of arrays/objects; the deepest body chunkd expects has 3
_STRUCTURE = re.compile(rb'[\[\]{}"\\]')
_OPEN = frozenset(b"[{")
_CLOSE = frozenset(b"]}")


class TooDeep(InvalidInput):
    """A JSON body nested deeper than the cap."""

    code = "too_deep"


class DepthMeter:
    """Feed a JSON text in pieces; :meth:`feed` raises :class:`TooDeep` once it nests too deep."""

    def __init__(self, max_depth: int = MAX_JSON_DEPTH, field: str = "body") -> None:
        self.max_depth = max_depth
        self.field = field
        self.depth = 0
        self.in_string = False
        self.offset = 0  # bytes fed so far
        self.escaped = -1  # offset of the byte a backslash escaped (may lie in the next piece)

    def feed(self, data: bytes) -> None:
        for match in _STRUCTURE.finditer(data):
            at = self.offset + match.start()
            if at == self.escaped:
                continue
            char = data[match.start()]
            if self.in_string:
                if char == 0x5C:  # backslash: the next byte is taken literally
                    self.escaped = at + 1
                elif char == 0x22:
                    self.in_string = False
            elif char == 0x22:
                self.in_string = True
            elif char in _OPEN:
                self.depth += 1
                if self.depth > self.max_depth:
                    raise TooDeep(
                        f"the JSON {self.field} is nested more than {self.max_depth} levels deep", field=self.field
                    )
            elif char in _CLOSE:
                self.depth -= 1
        self.offset += len(data)


def loads(raw: bytes | str, *, field: str = "body", max_depth: int = MAX_JSON_DEPTH) -> Any:
    """``json.loads`` of a request body, refusing one nested deeper than ``max_depth`` (TooDeep)
    and malformed JSON (InvalidInput), both naming ``field``."""
    data = raw.encode() if isinstance(raw, str) else raw
    DepthMeter(max_depth, field).feed(data)
    try:
        return json.loads(data)
    except json.JSONDecodeError as exc:
        raise InvalidInput(f"the {field} is not valid JSON: {exc.msg} at character {exc.pos}", field=field) from None
    except (UnicodeDecodeError, RecursionError):
        raise InvalidInput(f"the {field} is not valid JSON", field=field) from None
    except ValueError as exc:  # an integer past Python's 4,300-digit conversion limit
        raise InvalidInput(f"the {field} is not usable JSON: {exc}", field=field) from None
