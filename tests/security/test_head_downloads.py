"""HEAD on every download route answers as GET does (200 or 206, the same headers) without a body,
for download managers and ``curl -I``; every GET route of the app answers HEAD (the route list
comes from the app itself), the JSON ones too (a file object, a listing: RFC 9110 §9.3.2)."""

from __future__ import annotations

import hashlib
import re

import pytest

from chunkd.app import create_app
from chunkd.frontends.http.routes import DirectRoutes, RouteTable, walk_routes
from chunkd.settings import Settings
from tests.conftest import Api
from tests.support.media_files import chunked_upload, make_png

# Headers that legitimately differ between two responses (or belong to the body's transfer).
# Per-response headers: the request id is each request's own (echoed by the access log middleware).
_VARYING = {"date", "ratelimit-remaining", "ratelimit-reset", "transfer-encoding", "x-request-id"}


def _same_headers(get: dict[str, str], head: dict[str, str]) -> None:
    strip = {k: v for k, v in get.items() if k not in _VARYING}
    assert strip == {k: v for k, v in head.items() if k not in _VARYING}


async def _check(api: Api, url: str, headers: dict[str, str]) -> None:
    for extra in ({}, {"Range": "bytes=2-5"}):
        get = await api.client.get(url, headers={**headers, **extra})
        head = await api.client.head(url, headers={**headers, **extra})
        assert get.status_code in (200, 206), get.text
        assert head.status_code == get.status_code, head.text
        assert head.content == b""
        _same_headers(dict(get.headers), dict(head.headers))
        assert int(head.headers["Content-Length"]) == len(get.content)


async def test_native_content(api: Api) -> None:
    data = b"0123456789" * 100
    created = await api.client.post("/v1/files", json={"filename": "h.txt", "sizeBytes": len(data)}, headers=api.auth())
    file_id = created.json()["id"]
    assert (await api.client.put(f"/v1/files/{file_id}/content", content=data, headers=api.auth())).status_code == 200
    done = await api.client.post(f"/v1/files/{file_id}/complete", json={}, headers=api.auth())
    assert done.status_code == 200, done.text
    await _check(api, f"/v1/files/{file_id}/content", api.auth())


async def test_tus_download_and_tus_head_stay_apart(api: Api) -> None:
    data = b"abcdefghij" * 50
    tus = {**api.auth(), "Tus-Resumable": "1.0.0"}
    created = await api.client.post(
        "/files/",
        content=data,
        headers={**tus, "Upload-Length": str(len(data)), "Content-Type": "application/offset+octet-stream"},
    )
    assert created.status_code == 201, created.text
    location = created.headers["Location"]
    await _check(api, location, api.auth())
    # With Tus-Resumable, HEAD is still tus's offset retrieval.
    offset = await api.client.head(location, headers=tus)
    assert offset.status_code == 200 and offset.headers["Upload-Offset"] == str(len(data))
    assert offset.headers["Cache-Control"] == "no-store"


async def test_media_file(api: Api) -> None:
    png = make_png(40, 30)
    upload_id = await chunked_upload(api.client, png, "h.png", api.auth())
    completed = await api.client.post(
        "/api/v2/media/upload/complete/",
        data={"upload_id": upload_id, "md5": hashlib.md5(png).hexdigest()},
        headers=api.auth(),
    )
    assert completed.status_code == 201, completed.text
    media = completed.json()
    await _check(api, media["image"], {})  # the signed URL, no credentials
    await _check(api, f"/api/v2/media/{media['id']}/file/", api.auth())


async def test_pm_file(api: Api) -> None:
    data = b"pm-bytes" * 64
    response = await api.client.post(
        "/api/v2/pm/upload/",
        data={
            "qquuid": "0b9a4a4e-2f6e-4c55-9f8b-6f1f0d1f0c11",
            "qqfilename": "p.bin",
            "qqtotalfilesize": str(len(data)),
        },
        files={"qqfile": ("p.bin", data)},
        headers=api.auth(),
    )
    assert response.status_code == 200, response.text
    await _check(api, response.json()["file_url"].replace("http://testserver", ""), api.auth())


@pytest.mark.parametrize("path", ["/v1/files/{id}/content", "/files/{id}", "/api/v2/media/{id}/file/"])
def test_every_download_route_has_head(path: str, tmp_path: object) -> None:
    app = create_app(Settings(data_dir=tmp_path))  # type: ignore[arg-type]
    table = RouteTable(app.router.routes)
    sample = path.replace("{id}", "1" if "media" in path else "AAAAAAAAAAAAAAAAAAAAAA")
    found = table.match({"type": "http", "method": "HEAD", "path": sample, "root_path": ""})
    assert found is not None, f"HEAD {path} has no route"


async def test_json_get_routes_answer_head_as_get(api: Api) -> None:
    created = await api.client.post("/v1/files", json={"filename": "j.txt", "sizeBytes": 10}, headers=api.auth())
    file_id = created.json()["id"]
    for url in (f"/v1/files/{file_id}", "/v1/files", "/v1/usage"):
        get = await api.client.get(url, headers=api.auth())
        head = await api.client.head(url, headers=api.auth())
        assert get.status_code == head.status_code == 200, (url, head.status_code, head.text)
        assert head.content == b""
        _same_headers(dict(get.headers), dict(head.headers))
    # Another owner's file: the same 404 as its GET (headers included), no body.
    get = await api.client.get(f"/v1/files/{file_id}", headers=api.auth("bob"))
    head = await api.client.head(f"/v1/files/{file_id}", headers=api.auth("bob"))
    assert get.status_code == head.status_code == 404 and head.content == b""
    _same_headers(dict(get.headers), dict(head.headers))
    # No credentials: the GET's 401. A target with no GET route stays a 405.
    assert (await api.client.head(f"/v1/files/{file_id}")).status_code == 401
    assert (await api.client.head(f"/v1/files/{file_id}/complete", headers=api.auth())).status_code == 405
    # A 405 names HEAD among the methods of a target a GET route serves.
    put = await api.client.put(f"/v1/files/{file_id}", headers=api.auth())
    assert put.status_code == 405 and put.headers["Allow"] == "GET, HEAD, DELETE"


def test_every_get_route_takes_head(tmp_path: object) -> None:
    app = create_app(Settings(data_dir=tmp_path))  # type: ignore[arg-type]
    table = RouteTable(app.router.routes)
    direct = DirectRoutes(app.router, app.router.middleware_stack or app.router)
    gets = [r for r in walk_routes(app.router.routes) if "GET" in (getattr(r, "methods", None) or ())]
    assert len(gets) > 10
    for route in gets:
        # A value each parameter takes: a made-up id fits a plain segment; an upload link's id is hex.
        sample = re.sub(r"\{[^}:]+:linkid\}", "0" * 32, route.path)
        sample = re.sub(r"\{[^}]+\}", "1", sample)
        scope = {"type": "http", "method": "HEAD", "path": sample, "root_path": ""}
        if table.match(dict(scope)) is None:
            assert direct._as_get(scope) is not None, f"HEAD {route.path} has neither a route nor a GET to answer it"
