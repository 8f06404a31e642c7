"""tus-js-client (under node), unchanged, uploading through an upload link's token against a real
``chunkd serve``: the file lands in the link owner's files, tagged with the link."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.e2e.test_tus_clients import run_js
from tests.support.files import FilesClient, MiB, random_file
from tests.support.server import ChunkdServer

pytestmark = [pytest.mark.e2e]


def test_tus_js_client_with_a_link_token(live_server: ChunkdServer, tmp_path: Path) -> None:
    owner_key = live_server.create_key("alice", "files:create,files:read,links:admin")
    source = tmp_path / "from a partner.bin"
    md5 = random_file(source, 5 * MiB + 77)
    with FilesClient(live_server, owner_key) as owner:
        link = owner.http.post("/v1/upload-links", json={"maxFiles": 1}).json()
        token = link["url"].split("#link=", 1)[1]
        out = run_js(live_server, f"{live_server.url}/files", token, source, chunkSize=2 * MiB)
        file_id = out["url"].rsplit("/", 1)[1]
        info = owner.get(file_id)
        assert info["status"] == "COMPLETED" and info["md5"] == md5 and info["uploadLink"] == link["id"]
        assert info["filename"] == "from a partner.bin"
        assert owner.download_md5(file_id) == (5 * MiB + 77, md5)
        assert owner.http.get(f"/v1/upload-links/{link['id']}").json()["filesUploaded"] == 1
