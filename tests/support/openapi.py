"""Reading the published OpenAPI document in tests."""

from __future__ import annotations

from typing import Any

__all__ = ["answer_schema"]


def answer_schema(document: dict[str, Any], method: str, path: str, status: str) -> dict[str, Any]:
    """The component schema ``document`` names for the JSON answer ``status`` of ``method path``."""
    content = document["paths"][path][method]["responses"][status]["content"]["application/json"]
    schema: dict[str, Any] = document["components"]["schemas"][content["schema"]["$ref"].rsplit("/", 1)[1]]
    return schema
