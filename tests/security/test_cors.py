"""One CORS policy for all routes: configured origins echoed with Vary: Origin, preflights without
credentials, the headers resumable clients read exposed, never '*' with credentials."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from chunkd.settings import Settings
from tests.security.conftest import MakeApi

ORIGIN = "https://app.example"


async def test_preflight_and_simple_requests(make_api: MakeApi) -> None:
    async with make_api(cors_origins=f"{ORIGIN}, https://other.example", rate_limits="read=2/minute") as api:
        preflight = await api.client.options(
            "/v1/files/abc/parts/1",
            headers={
                "Origin": ORIGIN,
                "Access-Control-Request-Method": "PUT",
                "Access-Control-Request-Headers": "authorization, content-md5, upload-offset, tus-resumable",
            },
        )
        assert preflight.status_code == 200  # no credentials needed
        assert preflight.headers["access-control-allow-origin"] == ORIGIN
        assert "PUT" in preflight.headers["access-control-allow-methods"]
        assert "authorization" in preflight.headers["access-control-allow-headers"].lower()
        assert "upload-offset" in preflight.headers["access-control-allow-headers"].lower()
        assert "origin" in preflight.headers["vary"].lower()

        simple = await api.client.get("/v1/files", headers={**api.auth(), "Origin": ORIGIN})
        assert simple.status_code == 200
        assert simple.headers["access-control-allow-origin"] == ORIGIN
        assert "origin" in simple.headers["vary"].lower()
        assert "access-control-allow-credentials" not in simple.headers
        exposed = {h.strip().lower() for h in simple.headers["access-control-expose-headers"].split(",")}
        for header in (
            "upload-offset",
            "location",
            "upload-length",
            "tus-version",
            "tus-resumable",
            "tus-max-size",
            "tus-extension",
            "upload-metadata",
            "upload-defer-length",
            "upload-concat",
            "upload-expires",
            # the checksum extension and the IETF draft's state fields, read by browser clients
            # (tus-js-client's IETF draft modes read Upload-Complete and Upload-Draft-Interop-Version)
            "tus-checksum-algorithm",
            "upload-complete",
            "upload-incomplete",
            "upload-limit",
            "upload-draft-interop-version",
            "repr-digest",
            "etag",
            "ratelimit-limit",
            "ratelimit-remaining",
            "ratelimit-reset",
            "retry-after",
            "content-range",
        ):
            assert header in exposed, header
        assert simple.headers["x-content-type-options"] == "nosniff"

        stranger = await api.client.get("/v1/files", headers={**api.auth(), "Origin": "https://evil.example"})
        assert "access-control-allow-origin" not in stranger.headers
        bad_preflight = await api.client.options(
            "/v1/files", headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "POST"}
        )
        assert bad_preflight.status_code == 400
        assert "access-control-allow-origin" not in bad_preflight.headers

        # A 429 still carries CORS headers, so a browser client can read Retry-After.
        limited = await api.client.get("/v1/files", headers={**api.auth(), "Origin": ORIGIN})
        assert limited.status_code == 429 and limited.headers["access-control-allow-origin"] == ORIGIN


async def test_no_origins_no_cors(make_api: MakeApi) -> None:
    async with make_api() as api:
        response = await api.client.get("/v1/files", headers={**api.auth(), "Origin": ORIGIN})
        assert "access-control-allow-origin" not in response.headers


async def test_wildcard(make_api: MakeApi) -> None:
    async with make_api(cors_origins="*") as api:
        response = await api.client.get("/v1/files", headers={**api.auth(), "Origin": ORIGIN})
        assert response.headers["access-control-allow-origin"] == "*"
        assert "access-control-allow-credentials" not in response.headers
    with pytest.raises(ValidationError, match="cannot be combined"):
        Settings(cors_origins="*", cors_allow_credentials=True)


async def test_credentials_with_listed_origins(make_api: MakeApi) -> None:
    async with make_api(cors_origins=ORIGIN, cors_allow_credentials=True) as api:
        response = await api.client.get("/v1/files", headers={**api.auth(), "Origin": ORIGIN})
        assert response.headers["access-control-allow-origin"] == ORIGIN
        assert response.headers["access-control-allow-credentials"] == "true"
