"""A misspelt field on a chunkd body is a 400 naming it, and changes nothing: ignored, a narrowing
field ("scopes" for "scope") gave a token every scope of its key, a link's "max_bytes" made a link
without limits, and "md5sum" on complete finished a file unchecked."""

from __future__ import annotations

import pytest

from tests.conftest import Api


@pytest.mark.parametrize(
    ("path", "body", "field"),
    [
        ("/v1/auth/token", {"scopes": "files:read", "expires_in": 60}, "scopes"),
        ("/v1/upload-links", {"max_bytes": 100, "maxFiles": 1}, "max_bytes"),
        ("/v1/webhooks", {"url": "https://example.com/hook", "event": ["upload.completed"]}, "event"),
        ("/v1/keys", {"scopes": "files:read", "owner": "bob"}, "owner"),
        ("/v1/files", {"filename": "a.bin", "sizeBytes": 3, "MD5": "0" * 32}, "MD5"),
    ],
)
async def test_a_misspelt_field_is_refused_by_name(api: Api, path: str, body: dict[str, object], field: str) -> None:
    listing = path if path != "/v1/auth/token" else None
    before = (await api.client.get(listing, headers=api.auth())).json() if listing else None
    response = await api.client.post(path, json=body, headers=api.auth())
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["field"] == field and field in error["message"] and "unknown field" in error["message"]
    if listing:
        assert (await api.client.get(listing, headers=api.auth())).json() == before


async def test_a_misspelt_md5_on_complete_does_not_complete_unchecked(api: Api) -> None:
    created = await api.client.post("/v1/files", json={"filename": "a.bin", "sizeBytes": 3}, headers=api.auth())
    file_id = created.json()["id"]
    assert (await api.client.put(f"/v1/files/{file_id}/parts/1", content=b"abc", headers=api.auth())).status_code == 200
    wrong = await api.client.post(f"/v1/files/{file_id}/complete", json={"md5sum": "0" * 32}, headers=api.auth())
    assert wrong.status_code == 400 and wrong.json()["error"]["field"] == "md5sum", wrong.text
    assert (await api.client.get(f"/v1/files/{file_id}", headers=api.auth())).json()["status"] == "PENDING"


async def test_the_seed_token_operation_keeps_taking_what_its_clients_send(api: Api) -> None:
    """Seed 003 documents no body for it: fields chunkd does not know are not refused there."""
    response = await api.client.post("/auth/token", json={"username": "x", "scope": "files:read"}, headers=api.auth())
    assert response.status_code == 200 and response.json()["scope"] == "files:read", response.text
