"""A credential header that is present must be valid, even when empty: a request carrying a valid
key and an empty ``X-API-Key``/``AccessToken``/``Authorization`` is refused, not judged by the valid
one alone (schemathesis's ignored-auth check found the empty ones passed)."""

from __future__ import annotations

import pytest

from tests.conftest import Api


@pytest.mark.parametrize("header", ["X-API-Key", "AccessToken", "Authorization"])
@pytest.mark.parametrize("value", ["", "   "])
async def test_an_empty_credential_header_is_refused(api: Api, header: str, value: str) -> None:
    key = api.keys["alice"]
    valid = {"X-API-Key": key} if header == "Authorization" else api.auth()
    response = await api.client.get("/v1/files", headers={**valid, header: value})
    assert response.status_code == 401, response.text
    assert response.json()["error"]["code"] == "unauthenticated"
    assert (await api.client.get("/v1/files", headers=valid)).status_code == 200


@pytest.mark.parametrize("scheme", ["Bearer", "basic", "Bearer   "])
async def test_a_scheme_without_its_credential_says_so(api: Api, scheme: str) -> None:
    """``Authorization: Bearer`` with nothing after it is a known scheme lacking its credential,
    not an unsupported scheme."""
    response = await api.client.get("/v1/files", headers={"Authorization": scheme})
    assert response.status_code == 401, response.text
    message = response.json()["error"]["message"]
    assert "carries no credential" in message and scheme.strip() in message


async def test_an_unknown_scheme_is_named_unsupported(api: Api) -> None:
    response = await api.client.get("/v1/files", headers={"Authorization": "Digest abc"})
    assert response.status_code == 401, response.text
    assert "unsupported Authorization scheme" in response.json()["error"]["message"]
