"""The engine's messages name fields as the native Files API does (``sizeBytes``, ``partNumber``);
each dialect re-says them with its own names (tus ``Upload-Length``, the asset API's ``filesize``,
Fine Uploader's ``qqtotalfilesize``), so a client reads the field it actually sent."""

from __future__ import annotations

import re
from collections.abc import Mapping

__all__ = ["FieldNames"]


class FieldNames:
    """The engine's field names → a dialect's, for field values and whole words of messages."""

    def __init__(self, names: Mapping[str, str]) -> None:
        self.names = dict(names)
        self._word = re.compile(r"\b(" + "|".join(map(re.escape, self.names)) + r")\b")

    def __contains__(self, field: object) -> bool:
        return field in self.names

    def field(self, name: str) -> str:
        return self.names.get(name, name)

    def message(self, text: str) -> str:
        return self._word.sub(lambda m: self.names[m.group(1)], text)

    def without(self, *fields: str) -> FieldNames:
        return FieldNames({k: v for k, v in self.names.items() if k not in fields})
