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
