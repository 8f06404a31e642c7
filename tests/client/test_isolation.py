"""The SDK works without the server: importing it loads none of the server's dependencies, and
``chunkd serve`` (importing the CLI) does not pay for the SDK."""

from __future__ import annotations

import json
import subprocess
import sys

SERVER_ONLY = ["fastapi", "starlette", "sqlalchemy", "alembic", "pydantic", "pydantic_settings", "uvicorn", "boto3"]


def loaded_after(statement: str, blocked: list[str] | None = None) -> list[str]:
    """Modules of interest present in ``sys.modules`` after ``statement`` runs in a fresh
    interpreter, where importing any of ``blocked`` fails outright."""
    script = f"""
import json, sys
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {blocked or []!r}:
            raise ImportError("blocked: " + name)
        return None
sys.meta_path.insert(0, Block())
{statement}
print(json.dumps(sorted(m for m in sys.modules if m.split(".")[0] in {SERVER_ONLY!r} or m.startswith("chunkd."))))
"""
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    return list(json.loads(result.stdout))


def test_the_sdk_imports_and_works_with_the_server_dependencies_blocked() -> None:
    statement = (
        "from chunkd.client import Client, AsyncClient, File, parse_size\n"
        "Client('http://127.0.0.1:1', 'ck_x').close()\n"
        "assert parse_size('8MiB') == 8 * 1024 * 1024"
    )
    loaded = loaded_after(statement, blocked=SERVER_ONLY)
    assert not [m for m in loaded if m.split(".")[0] in SERVER_ONLY]
    assert all(m.startswith("chunkd.client") for m in loaded), loaded


def test_the_cli_does_not_import_the_sdk_or_the_database_layer_until_a_client_command_runs() -> None:
    loaded = loaded_after("import chunkd.cli")
    assert "chunkd.client" not in loaded
    assert "sqlalchemy" not in loaded
