"""Rate-limit bypasses that are closed: the bytes budget is charged from the bytes read (chunked
bodies too); the category comes from the route, never from Content-Type; duplicate credential
headers are refused, so the limiter and the route cannot read different ones."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from tests.conftest import Api
from tests.security.conftest import MakeApi


async def _chunks(data: bytes, size: int = 300) -> AsyncIterator[bytes]:
    for start in range(0, len(data), size):
        yield data[start : start + size]


async def _create(api: Api, size: int, part: int) -> str:
    response = await api.client.post(
        "/v1/files", json={"filename": "a", "sizeBytes": size, "partSize": part}, headers=api.auth()
    )
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


async def test_chunked_bodies_are_charged_to_the_bytes_budget(make_api: MakeApi) -> None:
    async with make_api(rate_limits="read=100/minute;write=100/minute;upload=100/minute;bytes=1500/minute") as api:
        file_id = await _create(api, 4000, 1000)
        first = await api.client.put(f"/v1/files/{file_id}/parts/1", content=_chunks(b"x" * 1000), headers=api.auth())
        assert first.status_code == 200, first.text
        # 1,000 of 1,500 bytes used: the next chunked kilobyte is cut once it is over.
        second = await api.client.put(f"/v1/files/{file_id}/parts/2", content=_chunks(b"x" * 1000), headers=api.auth())
        assert second.status_code == 429, second.text
        assert second.json()["error"]["category"] == "bytes" and int(second.headers["Retry-After"]) >= 1
        assert second.headers["Connection"] == "close"
        got = (await api.client.get(f"/v1/files/{file_id}", headers=api.auth())).json()
        assert [p["partNumber"] for p in got["parts"]] == [1]


async def test_chunked_body_larger_than_the_window_gets_413(make_api: MakeApi) -> None:
    async with make_api(rate_limits="read=100/minute;write=100/minute;bytes=1500/minute") as api:
        file_id = await _create(api, 4000, 4000)
        whole = await api.client.put(f"/v1/files/{file_id}/content", content=_chunks(b"x" * 4000), headers=api.auth())
        assert whole.status_code == 413, whole.text
        assert whole.json()["error"]["limit"] == "rate_limits.bytes"


async def test_a_write_without_content_type_is_a_write(make_api: MakeApi) -> None:
    async with make_api(rate_limits="read=100/minute;write=3/minute;upload=100/minute") as api:
        raw = b'{"filename": "a", "sizeBytes": 1}'
        response = await api.client.post("/v1/files", content=raw, headers=api.auth())  # no Content-Type
        assert response.headers["RateLimit-Limit"] == "3", response.headers
        # pm's ?done carries no file bytes either, with or without a Content-Type.
        done = await api.client.post("/api/v2/pm/upload/?done", content=b"qquuid=x", headers=api.auth())
        assert done.headers["RateLimit-Limit"] == "3" and done.headers["RateLimit-Remaining"] == "1"


async def test_a_part_is_an_upload_whatever_its_content_type(make_api: MakeApi) -> None:
    async with make_api(rate_limits="read=100/minute;write=1/minute;upload=50/minute") as api:
        file_id = await _create(api, 3000, 1000)  # the only write allowed
        for number in (1, 2, 3):
            part = await api.client.put(
                f"/v1/files/{file_id}/parts/{number}",
                content=b"x" * 1000,
                headers={**api.auth(), "Content-Type": "application/json"},
            )
            assert part.status_code == 200, part.text
            assert part.headers["RateLimit-Limit"] == "50"


async def test_tus_patch_is_an_upload_and_pm_done_a_write(make_api: MakeApi) -> None:
    async with make_api(rate_limits="read=100/minute;write=2/minute;upload=50/minute") as api:
        tus = {**api.auth(), "Tus-Resumable": "1.0.0"}
        created = await api.client.post("/files/", headers={**tus, "Upload-Length": "10"})  # write 1 of 2
        assert created.status_code == 201 and created.headers["RateLimit-Limit"] == "2"
        location = created.headers["Location"]
        patch = await api.client.patch(
            location,
            content=b"0123456789",
            headers={**tus, "Upload-Offset": "0", "Content-Type": "application/offset+octet-stream"},
        )
        assert patch.status_code == 204 and patch.headers["RateLimit-Limit"] == "50"
        # pm's ?done has no file bytes: a write (2 of 2), then the write budget is spent.
        done = await api.client.post("/api/v2/pm/upload/?done", data={"qquuid": "x"}, headers=api.auth())
        assert done.headers["RateLimit-Limit"] == "2" and done.headers["RateLimit-Remaining"] == "0"
        refused = await api.client.post("/api/v2/pm/upload/?done", data={"qquuid": "x"}, headers=api.auth())
        assert refused.status_code == 429


@pytest.mark.parametrize("header", ["Authorization", "X-API-Key", "AccessToken"])
@pytest.mark.parametrize("limits", ["read=100/minute;write=100/minute", ""])
async def test_duplicate_credential_headers_are_refused(make_api: MakeApi, header: str, limits: str) -> None:
    async with make_api(rate_limits=limits) as api:
        alice, bob = api.keys["alice"], api.keys["bob"]
        values = (f"Bearer {alice}", f"Bearer {bob}") if header == "Authorization" else (alice, bob)
        headers = [(header, values[0]), (header, values[1])]
        response = await api.client.get("/v1/files", headers=headers)
        assert response.status_code == 400, response.text
        error = response.json()["error"]
        assert error["field"] == header and header in error["message"]
        # One of each is fine (both belong to alice).
        single = await api.client.get("/v1/files", headers=[("Authorization", f"Bearer {alice}"), ("X-API-Key", alice)])
        assert single.status_code == 200


@pytest.mark.parametrize("method", ["POST", "PUT", "PATCH"])
async def test_a_draft_creation_is_an_upload_and_its_content_is_metered(make_api: MakeApi, method: str) -> None:
    """The IETF draft creates uploads with any method that carries content, and that content is
    file bytes: counted against the bytes budget like a PATCH's. PUT and PATCH on the collection
    were counted as one write, their bodies not metered at all."""
    async with make_api(rate_limits="read=100/minute;write=100/minute;upload=100/minute;bytes=1500/minute") as api:
        headers = {**api.auth(), "Upload-Draft-Interop-Version": "8", "Upload-Complete": "?1"}
        first = await api.client.request(method, "/files/", content=b"x" * 1000, headers=headers)
        assert first.status_code == 201, first.text
        second = await api.client.request(method, "/files/", content=b"x" * 1000, headers=headers)
        assert second.status_code == 429, second.text
        # In the draft's own shape (problem details), as every draft error, not tus's plain text.
        assert second.headers["content-type"] == "application/problem+json"
        assert second.json()["code"] == "rate_limited" and second.headers["upload-draft-interop-version"] == "8"
        # A chunked body is cut once it passes the budget: answered by the route, in the same shape.
        cut = await api.client.request(method, "/files/", content=_chunks(b"x" * 1000), headers=headers)
        assert cut.status_code == 429, cut.text
        assert cut.headers["content-type"] == "application/problem+json" and cut.json()["code"] == "rate_limited"
