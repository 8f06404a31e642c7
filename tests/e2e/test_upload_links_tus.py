"""tus-js-client (under node), unchanged, uploading through an upload link's token against a real
``chunkd serve``: the file lands in the link owner's files, tagged with the link."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.support.files import FilesClient, MiB, random_file
from tests.support.server import ChunkdServer

pytestmark = [pytest.mark.e2e]

TESTS = Path(__file__).parents[1]
JS_CLIENT = Path(__file__).parent / "js" / "tus_upload.cjs"


def run_js(endpoint: str, token: str, file: Path, **options: object) -> Any:
    """tests/e2e/js/tus_upload.cjs: tus-js-client under node, as an application would use it."""
    if shutil.which("node") is None or not (TESTS / "node_modules" / "tus-js-client").exists():
        pytest.fail("node and tests/node_modules/tus-js-client are needed: run scripts/test-deps.sh")
    result = subprocess.run(
        ["node", str(JS_CLIENT), endpoint, token, str(file), json.dumps(options)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr + result.stdout
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_tus_js_client_with_a_link_token(live_server: ChunkdServer, tmp_path: Path) -> None:
    owner_key = live_server.create_key("alice", "files:create,files:read,links:admin")
    source = tmp_path / "from a partner.bin"
    md5 = random_file(source, 5 * MiB + 77)
    with FilesClient(live_server, owner_key) as owner:
        link = owner.http.post("/v1/upload-links", json={"maxFiles": 1}).json()
        token = link["url"].split("#link=", 1)[1]
        out = run_js(f"{live_server.url}/files", token, source, chunkSize=2 * MiB)
        file_id = out["url"].rsplit("/", 1)[1]
        info = owner.get(file_id)
        assert info["status"] == "COMPLETED" and info["md5"] == md5 and info["uploadLink"] == link["id"]
        assert info["filename"] == "from a partner.bin"
        assert owner.download_md5(file_id) == (5 * MiB + 77, md5)
        assert owner.http.get(f"/v1/upload-links/{link['id']}").json()["filesUploaded"] == 1
