"""The health probes answer HEAD as they answer GET, without a body (RFC 9110 §9.3.2): load
balancers and orchestrators probe with either."""

from __future__ import annotations

import httpx
import pytest

from tests.support.server import ChunkdServer

pytestmark = pytest.mark.e2e


@pytest.mark.parametrize("path", ["/healthz", "/readyz"])
def test_a_probe_answers_head_like_get_without_a_body(e2e_server: ChunkdServer, path: str) -> None:
    with httpx.Client(base_url=e2e_server.url) as client:
        got, head = client.get(path), client.head(path)
    assert got.status_code == head.status_code == 200, (got.text, head.status_code)
    assert head.content == b"" and head.headers["content-type"] == got.headers["content-type"] == "application/json"
    assert head.headers["content-length"] == got.headers["content-length"]
