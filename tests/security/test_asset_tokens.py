"""The asset API's credentials as its seed documents them: ``X-API-Key`` plus ``Authorization``
and ``AccessToken`` carrying the JWT that ``POST /auth/token`` issued for that key. The JWT must
belong to the key's owner; another owner's, an expired or a garbled one is a 401 ``{message,
detail}``."""

from __future__ import annotations

import base64
import time
from typing import Any

import httpx
import jwt
import pytest

from chunkd.auth.tokens import derive_hs256_key
from tests.conftest import Api
from tests.security.conftest import MakeApi

pytestmark = pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)


async def _token(api: Api, who: str) -> str:
    response = await api.client.post("/auth/token", headers={"X-API-Key": api.keys[who]})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["tokenType"] == "Bearer" and body["expiresIn"] > 0
    return str(body["accessToken"])


async def _multipart_asset(api: Api) -> tuple[str, str, list[dict[str, Any]]]:
    """A two-part asset with both parts sent to their signed URLs: (fileId, uploadId, parts)."""
    created = await api.client.post(
        "/asset", json={"filename": "2 vid.mp4", "filesize": 10}, headers={"X-API-Key": api.keys["alice"]}
    )
    assert created.status_code == 201, created.text
    body = created.json()
    parts = []
    for part, data in zip(body["parts"], (b"01234", b"56789"), strict=True):
        sent = await api.client.put(part["uploadUrl"], content=data)
        assert sent.status_code == 200, sent.text
        parts.append({"partNumber": part["partNumber"], "etag": sent.headers["etag"]})
    return body["fileId"], body["uploadId"], parts


def _seed_headers(key: str, token: str) -> dict[str, str]:
    return {"X-API-Key": key, "Authorization": f"Bearer {token}", "AccessToken": token}


def _assert_401(response: httpx.Response) -> None:
    assert response.status_code == 401, response.text
    body = response.json()
    assert set(body) == {"message", "detail"} and all(isinstance(v, str) for v in body.values()), body
    assert response.headers["www-authenticate"].startswith("Bearer")


async def test_complete_with_the_jwt_of_auth_token(make_api: MakeApi) -> None:
    async with make_api(asset_part_size=5) as api:
        key = api.keys["alice"]
        token = await _token(api, "alice")
        file_id, upload_id, parts = await _multipart_asset(api)
        payload = {
            "fileId": file_id,
            "filename": "2 vid.mp4",
            "filesize": 10,
            "action": "complete",
            "originalFileId": None,
            "uploadId": upload_id,
            "parts": parts,
        }

        # Another owner's JWT with alice's key: refused, whichever header carries it.
        bobs = await _token(api, "bob")
        for headers in (
            _seed_headers(key, bobs),
            {"X-API-Key": key, "AccessToken": bobs},
            {"X-API-Key": key, "Authorization": f"Bearer {bobs}", "AccessToken": token},
        ):
            _assert_401(await api.client.post("/asset/complete", json=payload, headers=headers))

        # Expired (genuinely signed) and garbled tokens.
        secret = derive_hs256_key((api.runtime.settings.data_dir / "secret.key").read_bytes())
        claims = jwt.decode(token, secret, algorithms=["HS256"], audience="chunkd")
        expired = jwt.encode({**claims, "iat": int(time.time()) - 7200, "exp": int(time.time()) - 3600}, secret)
        for bad in (expired, token[:-4] + "AAAA", "not.a.jwt", token.split(".", 1)[1]):
            _assert_401(await api.client.post("/asset/complete", json=payload, headers=_seed_headers(key, bad)))
            _assert_401(
                await api.client.post("/asset/complete", json=payload, headers={"X-API-Key": key, "AccessToken": bad})
            )

        # Nothing was completed by the refused calls.
        status = await api.client.get(f"/v1/files/{file_id}", headers=api.auth())
        assert status.json()["status"] == "PENDING", status.text

        done = await api.client.post("/asset/complete", json=payload, headers=_seed_headers(key, token))
        assert done.status_code == 200, done.text
        assert done.json() == {
            "fileId": file_id,
            "filename": "2 vid.mp4",
            "action": "complete",
            "originalFileId": "",  # seed 003: a string
            "uploadId": upload_id,
            "s3Key": f"masters/{file_id}/2-vid.mp4",
            "status": "success",
        }


async def test_token_scopes_bind_the_asset_api(make_api: MakeApi) -> None:
    """A JWT narrowed to files:read, sent with a full key, narrows the request: 403 {message, detail}."""
    async with make_api(asset_part_size=5) as api:
        key = api.keys["alice"]
        narrow = await api.client.post("/auth/token", json={"scope": "files:read"}, headers={"X-API-Key": key})
        token = narrow.json()["accessToken"]
        response = await api.client.post(
            "/asset", json={"filename": "a.txt", "filesize": 3}, headers=_seed_headers(key, token)
        )
        assert response.status_code == 403, response.text
        assert set(response.json()) == {"message", "detail"} and "files:create" in response.json()["detail"]


async def test_authorization_as_the_seed_reads_it(make_api: MakeApi) -> None:
    """Seed 003 says only that ``Authorization`` is "provided by Authentication Token creation
    operation": a client may send the token as is, without ``Bearer``. Its BasicAuth scheme is
    also met by the whole API key as the user (empty password) or as the password. ``AccessToken``
    may carry the JWT with a ``Bearer`` prefix, as ``Authorization`` would."""
    async with make_api(asset_part_size=5) as api:
        key = api.keys["alice"]
        token = await _token(api, "alice")
        file_id, upload_id, parts = await _multipart_asset(api)
        payload = {"fileId": file_id, "action": "complete", "uploadId": upload_id, "parts": parts}

        def basic(user: str, password: str) -> str:
            return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()

        # The seed's three headers, the token sent bare in Authorization.
        bare = {"X-API-Key": key, "Authorization": token, "AccessToken": token, "Content-Type": "application/json"}
        for headers in (
            {"Authorization": token},
            {"AccessToken": f"Bearer {token}"},
            {"Authorization": key},
            {"Authorization": basic(key, "")},
            {"Authorization": basic("", key)},
            {"Authorization": basic("api", key)},
        ):
            response = await api.client.post("/asset", json={"filename": "a.txt", "filesize": 3}, headers=headers)
            assert response.status_code == 201, (headers, response.text)
        # Bare but wrong: still a 401 in the seed's shape, and another owner's still refused.
        bobs = await _token(api, "bob")
        for headers in (
            {"Authorization": "not-a-token"},
            {"Authorization": token[:-4] + "AAAA"},
            {"X-API-Key": key, "Authorization": bobs},
            {"Authorization": basic(api.keys["bob"] + "x", "")},
        ):
            _assert_401(await api.client.post("/asset/complete", json=payload, headers=headers))
        done = await api.client.post("/asset/complete", json=payload, headers=bare)
        assert done.status_code == 200, done.text
        assert done.json()["status"] == "success"
