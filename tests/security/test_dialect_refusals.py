"""Refusals made by the shared guards (rate limits 429/413, duplicate credentials 400, a stalled
body 408) come back in each dialect's own error shape: Fine Uploader's ``{"success": false,
"error"}`` (retries left on for 429), tus's plain text with ``Tus-Resumable``, the media API's
``{"detail", "code"}``, the asset API's ``{"status": "error", "message"}``, the Files API's JSON."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from tests.security.conftest import MakeApi

TUS = {"Tus-Resumable": "1.0.0"}
ONE_READ = "read=100/minute;write=1/minute;upload=1/minute"


async def test_pm_rate_limit(make_api: MakeApi) -> None:
    async with make_api(rate_limits=ONE_READ) as api:
        form = {"qquuid": "0b9a4a4e-2f6e-4c55-9f8b-6f1f0d1f0c11", "qqfilename": "p.bin"}
        for _ in range(2):
            response = await api.client.post(
                "/api/v2/pm/upload/", data=form, files={"qqfile": ("p.bin", b"x")}, headers=api.auth()
            )
        assert response.status_code == 429
        body = response.json()
        assert body["success"] is False and body["code"] == "rate_limited" and "rate limit" in body["error"]
        assert "preventRetry" not in body  # Fine Uploader may retry after Retry-After
        assert int(response.headers["Retry-After"]) >= 1


async def test_tus_rate_limit_and_duplicate_credentials(make_api: MakeApi) -> None:
    async with make_api(rate_limits=ONE_READ) as api:
        for _ in range(2):
            response = await api.client.post("/files/", headers={**api.auth(), **TUS, "Upload-Length": "5"})
        assert response.status_code == 429
        assert response.headers["Tus-Resumable"] == "1.0.0"
        assert response.headers["Content-Type"].startswith("text/plain")
        assert response.text.startswith("rate_limited: ")
        key = api.keys["alice"]
        duplicate = await api.client.head(
            "/files/abc", headers=[("X-API-Key", key), ("X-API-Key", key), ("Tus-Resumable", "1.0.0")]
        )
        assert duplicate.status_code == 400 and duplicate.headers["Tus-Resumable"] == "1.0.0"


async def test_media_rate_limit(make_api: MakeApi) -> None:
    async with make_api(rate_limits=ONE_READ) as api:
        for _ in range(2):
            response = await api.client.post(
                "/api/v2/media/upload/complete/", data={"upload_id": "x"}, headers=api.auth()
            )
        assert response.status_code == 429
        body = response.json()
        assert body["code"] == "rate_limited" and "rate limit" in body["detail"]


async def test_asset_rate_limit(make_api: MakeApi) -> None:
    async with make_api(rate_limits=ONE_READ) as api:
        for _ in range(2):
            response = await api.client.post("/asset", json={"filename": "a.mp4"}, headers=api.auth())
        assert response.status_code == 429
        body = response.json()
        assert body["status"] == "error" and "rate limit" in body["message"]


async def test_native_rate_limit_keeps_its_shape(make_api: MakeApi) -> None:
    async with make_api(rate_limits=ONE_READ) as api:
        for _ in range(2):
            response = await api.client.post("/v1/files", json={"filename": "a", "sizeBytes": 1}, headers=api.auth())
        assert response.status_code == 429
        error = response.json()["error"]
        assert error["code"] == "rate_limited" and error["category"] == "write"


async def test_bytes_budget_cut_in_the_pm_dialect(make_api: MakeApi) -> None:
    async with make_api(rate_limits="read=100/minute;write=100/minute;bytes=100/minute") as api:
        response = await api.client.post(
            "/api/v2/pm/upload/",
            data={"qquuid": "0b9a4a4e-2f6e-4c55-9f8b-6f1f0d1f0c12", "qqfilename": "p.bin"},
            files={"qqfile": ("p.bin", b"x" * 1000)},
            headers=api.auth(),
        )
        assert response.status_code == 413
        body = response.json()
        assert body["success"] is False and body["code"] == "too_large" and body["preventRetry"] is True


async def test_stalled_tus_patch_gets_a_plain_text_408(make_api: MakeApi) -> None:
    async with make_api(body_idle_timeout_seconds=0.3, rate_limits="") as api:
        created = await api.client.post("/files/", headers={**api.auth(), **TUS, "Upload-Length": "10"})
        location = created.headers["Location"]

        async def stalls() -> AsyncIterator[bytes]:
            yield b"01234"
            await asyncio.sleep(5)  # the client stops sending (the guard cuts it after 0.3 s)
            yield b"56789"

        response = await api.client.patch(
            location,
            content=stalls(),
            headers={
                **api.auth(),
                **TUS,
                "Upload-Offset": "0",
                "Content-Type": "application/offset+octet-stream",
            },
        )
        assert response.status_code == 408, response.text
        assert response.headers["Tus-Resumable"] == "1.0.0"
        assert response.text.startswith("body_timeout: ")
        offset = await api.client.head(location, headers={**api.auth(), **TUS})
        assert offset.headers["Upload-Offset"] == "5"  # the durable bytes stay


async def test_request_validation_names_the_field_in_every_dialect(make_api: MakeApi) -> None:
    """A request FastAPI refuses before the handler runs (an id past its length, a body field out
    of range) names the field in tus's plain text, the draft's problem details and the token
    API's seed shape, as the Files API does; it used to be a bare "invalid request"."""
    long_id = "a" * 65
    async with make_api() as api:
        tus = await api.client.patch(
            f"/files/{long_id}",
            content=b"x",
            headers={**api.auth(), **TUS, "Content-Type": "application/offset+octet-stream", "Upload-Offset": "0"},
        )
        assert tus.status_code == 400 and tus.headers["Tus-Resumable"] == "1.0.0", tus.text
        assert tus.text.startswith("invalid_input: file_id: "), tus.text

        draft = await api.client.head(f"/files/{long_id}", headers={**api.auth(), "Upload-Draft-Interop-Version": "6"})
        assert draft.status_code == 400 and draft.headers["Upload-Draft-Interop-Version"] == "6"
        created = await api.client.post(
            f"/files/{long_id}",
            headers={**api.auth(), "Upload-Draft-Interop-Version": "8", "X-HTTP-Method-Override": "DELETE"},
        )
        problem = created.json()
        assert created.status_code == 400 and problem["field"] == "file_id", problem
        assert problem["code"] == "invalid_input" and "file_id" in problem["detail"], problem

        seed = await api.client.post("/auth/token", json={"expiresIn": 0}, headers=api.auth())
        assert seed.status_code == 400, seed.text
        assert seed.json() == {"status": "error", "message": "expiresIn: Input should be greater than or equal to 1"}


async def test_the_seed_token_api_says_what_a_guard_refused(make_api: MakeApi) -> None:
    """The guards' refusals (too deep, rate limited) come in the seed shape with their message; a
    too-deep body used to read "invalid request", and a 429 came in the Files API's shape."""
    async with make_api(rate_limits=ONE_READ) as api:
        deep = b'{"a":' * 100 + b"1" + b"}" * 100
        refused = await api.client.post(
            "/auth/token", content=deep, headers={**api.auth(), "Content-Type": "application/json"}
        )
        assert refused.status_code == 400, refused.text
        assert refused.json() == {"status": "error", "message": "the JSON body is nested more than 64 levels deep"}
        for _ in range(2):
            limited = await api.client.post("/auth/token", json={}, headers=api.auth())
        assert limited.status_code == 429, limited.text
        body = limited.json()  # as the asset API (also seed 003) answers it, not the Files API's shape
        assert body["status"] == "error" and "rate limit" in body["message"] and "error" not in body, body
        assert int(limited.headers["Retry-After"]) >= 1


async def test_a_non_ascii_digit_as_the_draft_version_is_not_a_500(make_api: MakeApi) -> None:
    """``Upload-Draft-Interop-Version: ²`` (a Latin-1 byte a header may carry, which str.isdigit
    accepts and int() refuses) was a 500, on the public OPTIONS too; it is a version we do not
    speak: OPTIONS answers as usual, a draft request is a 400 naming the field."""
    async with make_api() as api:
        for raw in (b"\xb2", b"6\xb9"):
            version = (b"Upload-Draft-Interop-Version", raw)
            options = await api.client.options("/files", headers=[version])
            assert options.status_code == 204, options.text
            created = await api.client.post(
                "/files", headers=[version, (b"Authorization", api.auth()["Authorization"].encode())]
            )
            assert created.status_code == 400, created.text
            assert created.json()["field"] == "Upload-Draft-Interop-Version"


async def test_unknown_method_or_path_under_a_dialect_is_answered_in_its_shape(make_api: MakeApi) -> None:
    """Starlette's own 405 (a path served, not with this method) and 404 (no route) under a
    dialect's prefix come in that dialect's shape, with Allow on a 405; elsewhere the Files API's."""
    async with make_api() as api:
        pm = await api.client.put("/api/v2/pm/upload/", headers=api.auth())
        assert pm.status_code == 405 and "POST" in pm.headers["Allow"]
        assert pm.json()["success"] is False and pm.json()["code"] == "method_not_allowed"

        media = await api.client.put("/api/v2/media/upload/complete/", headers=api.auth())
        assert media.status_code == 405 and media.headers["Allow"] == "POST"
        assert media.json()["code"] == "method_not_allowed" and "detail" in media.json()

        asset = await api.client.get("/asset/complete", headers=api.auth())
        assert asset.status_code == 405 and asset.headers["Allow"] == "POST"
        assert asset.json()["status"] == "error" and asset.json()["message"]

        nothing = await api.client.get("/api/v2/media/no/such/route/", headers=api.auth())
        assert nothing.status_code == 404 and nothing.json()["code"] == "not_found"

        native = await api.client.put("/v1/files", headers=api.auth())
        assert native.status_code == 405 and native.json()["error"]["code"] == "method_not_allowed"
        assert set(native.headers["Allow"].split(", ")) >= {"GET", "POST"}
