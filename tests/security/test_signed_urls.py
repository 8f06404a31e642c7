"""Signed URLs (the native ``uploadUrl`` and download URL, the asset API's upload and part URLs, the media ``image``
URL): usable without credentials while valid, and refused with 403 when the signature is tampered
with, the expiry is changed or past, the URL of one object (or part) is used for another, or the
API key whose credential asked for the URL is named otherwise or has been revoked."""

from __future__ import annotations

import time
from dataclasses import replace
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from chunkd.auth.signing import Grant
from tests.conftest import Api
from tests.security.conftest import MakeApi
from tests.security.routes import TEN
from tests.security.test_isolation import make_target

pytestmark = pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)


def _split(url: str) -> tuple[str, dict[str, str]]:
    parts = urlsplit(url)
    return parts.path, {k: v[0] for k, v in parse_qs(parts.query).items()}


def _flip(text: str) -> str:
    last = text[-1]
    return text[:-1] + ("A" if last != "A" else "B")


async def _refusals(
    api: Api, grant: Grant, query: dict[str, str], other_path: str, content: bytes | None
) -> list[httpx.Response]:
    """The answers to every way a signed URL can be misused (none may get past the signature)."""
    c = api.client
    grant = replace(grant, key_id=query["key_id"])
    method, path = grant.method, grant.path
    extra = {k: v for k, v in query.items() if k not in ("expires", "key_id", "signature")}
    expired = {**extra, **api.runtime.signer.sign(grant, -60)}  # a genuine signature, past its expiry
    as_bob = {**extra, **api.runtime.signer.sign(replace(grant, owner="bob"), 600)}
    _, other_key = await api.runtime.keys.create("alice", "files:create,files:read")
    attempts = [
        {k: v for k, v in query.items() if k != "key_id"},  # the key it is bound to left out
        {**query, "key_id": other_key.split("_")[1]},  # or swapped for another key of the same owner
        {**query, "key_id": "../../etc"},
        {**query, "signature": _flip(query["signature"])},
        {**query, "expires": str(int(query["expires"]) + 3600)},
        {**query, "signature": ""},
        {"expires": query["expires"]},
        {**query, "expires": "soon"},
        # The same time written otherwise: a URL is honoured only as it was made.
        {**query, "expires": "+" + query["expires"]},
        {**query, "expires": " " + query["expires"]},
        {**query, "expires": "0" + query["expires"]},
        {**query, "expires": query["expires"] + " "},
        expired,
        as_bob,  # a genuine signature for the same path and upload, but another owner
    ]
    out = [await c.request(method, path, params=q, content=content) for q in attempts]
    out.append(await c.request(method, other_path, params=query, content=content))  # another object's URL
    return out


async def test_native_upload_url(make_api: MakeApi) -> None:
    async with make_api() as api:
        first, second = [
            (await api.client.post("/v1/files", json={"filename": "a.txt", "sizeBytes": 10}, headers=api.auth())).json()
            for _ in range(2)
        ]
        path, query = _split(first["uploadUrl"])
        other, _ = _split(second["uploadUrl"])
        grant = Grant("PUT", path, first["id"], "alice")
        for response in await _refusals(api, grant, query, other, TEN):
            assert response.status_code == 403, (response.request.url, response.text)
            assert response.json()["error"]["code"], response.text
        done = await api.client.put(path, params=query, content=TEN)
        assert done.status_code in (200, 201), done.text
        # A signed PUT URL is not a GET URL for the same path.
        assert (await api.client.get(path, params=query)).status_code in (401, 403)


async def test_native_download_url(make_api: MakeApi) -> None:
    """``POST /v1/files/{id}/download-url``: a GET URL of the file's content alone, for a reader of
    its owner's (what the browser page follows to stream a download to disk)."""
    async with make_api() as api:
        c = api.client
        first, second = [await make_target(api, "upload_done") for _ in range(2)]
        made = await c.post(f"/v1/files/{first}/download-url", headers=api.auth("reader"))
        assert made.status_code == 200 and made.json()["expiresIn"] == 60, made.text
        path, query = _split(made.json()["url"])
        assert path == f"/v1/files/{first}/content" and api.keys["reader"] not in made.json()["url"]
        grant = Grant("GET", path, first, "alice")
        for response in await _refusals(api, grant, query, f"/v1/files/{second}/content", None):
            assert response.status_code == 403, (response.request.url, response.text)
            assert response.json()["error"]["code"], response.text
        fine = await c.get(path, params=query)  # no credentials
        assert fine.status_code == 200 and fine.content == TEN, fine.text
        assert (
            fine.headers["content-disposition"].startswith("attachment")
            and "a.txt" in fine.headers["content-disposition"]
        )
        assert (await c.head(path, params=query)).status_code == 200
        assert (await c.get(path, params=query, headers={"Range": "bytes=2-4"})).content == TEN[2:5]
        assert int(query["expires"]) <= time.time() + 60
        # A GET URL is no PUT URL for the same path.
        assert (await c.put(path, params=query, content=TEN)).status_code == 403
        # Only the owner's readers get one, and only of a completed file.
        assert (await c.post(f"/v1/files/{first}/download-url", headers=api.auth("bob"))).status_code == 404
        assert (await c.post(f"/v1/files/{first}/download-url")).status_code == 401
        pending = await make_target(api, "upload")
        refused = await c.post(f"/v1/files/{pending}/download-url", headers=api.auth())
        assert refused.status_code == 409 and refused.json()["error"]["code"] == "invalid_state", refused.text
        # The file deleted: its URL answers 404, whatever its id comes to name.
        assert (await c.delete(f"/v1/files/{first}", headers=api.auth())).status_code == 204
        assert (await c.get(path, params=query)).status_code == 404


async def test_asset_part_and_content_urls(make_api: MakeApi) -> None:
    async with make_api(asset_part_size=5) as api:
        created = await api.client.post("/asset", json={"filename": "a.txt", "filesize": 10}, headers=api.auth())
        parts = created.json()["parts"]
        other = await api.client.post("/asset", json={"filename": "b.txt", "filesize": 10}, headers=api.auth())
        path1, query1 = _split(parts[0]["uploadUrl"])
        path2, _ = _split(parts[1]["uploadUrl"])
        other1, _ = _split(other.json()["parts"][0]["uploadUrl"])
        file_id = created.json()["fileId"]
        refusals = await _refusals(api, Grant("PUT", path1, file_id, "alice"), query1, path2, TEN[:5])  # for part 2
        refusals.append(await api.client.put(other1, params=query1, content=TEN[:5]))  # for another asset
        for response in refusals:
            assert response.status_code == 403, (response.request.url, response.text)
            body = response.json()
            assert isinstance(body["message"], str) and isinstance(body["detail"], str), body
        assert (await api.client.put(path1, params=query1, content=TEN[:5])).status_code == 200
        # Nothing was written to part 2 or to the other asset by the refused requests.
        for file_id, received in ((created.json()["fileId"], 5), (other.json()["fileId"], 0)):
            status = await api.client.get(f"/v1/files/{file_id}", headers=api.auth())
            assert status.json()["bytesReceived"] == received, status.text

        single = [
            (await api.client.post("/asset", json={"filename": "c.txt", "filesize": 3}, headers=api.auth())).json()
            for _ in range(2)
        ]
        path, query = _split(single[0]["uploadUrl"])
        other_path, _ = _split(single[1]["uploadUrl"])
        grant = Grant("PUT", path, single[0]["fileId"], "alice")
        for response in await _refusals(api, grant, query, other_path, b"abc"):
            assert response.status_code == 403, (response.request.url, response.text)
        assert (await api.client.put(path, params=query, content=b"abc")).status_code == 200


async def test_media_image_url(make_api: MakeApi) -> None:
    async with make_api() as api:
        ids = [await make_target(api, "media") for _ in range(2)]
        media = (await api.client.get(f"/api/v2/media/{ids[0]}/", headers=api.auth())).json()
        path, query = _split(media["image"])
        other = f"/api/v2/media/{ids[1]}/file/"
        grant = Grant("GET", path, query["upload"], "alice")
        for response in await _refusals(api, grant, query, other, None):
            assert response.status_code == 403, (response.request.url, response.text)
            assert isinstance(response.json()["detail"], str), response.text
        fine = await api.client.get(path, params=query)
        assert fine.status_code == 200 and fine.content.startswith(b"\x89PNG"), fine.text[:200]
        # The image URL does not survive the media's deletion.
        assert (await api.client.delete(f"/api/v2/media/{ids[0]}/", headers=api.auth())).status_code == 204
        assert (await api.client.get(path, params=query)).status_code == 404
        assert int(query["expires"]) > time.time()


async def test_upload_url_only_for_writers_and_never_minted_by_a_signed_request(make_api: MakeApi) -> None:
    """The uploadUrl is a write grant: a files:read credential never gets one (it could PUT bytes
    the owner later completes), and a PUT through the URL does not hand out a fresh, later one."""
    async with make_api() as api:
        created = await api.client.post("/v1/files", json={"filename": "a.txt", "sizeBytes": 10}, headers=api.auth())
        assert created.status_code == 201 and created.json()["uploadUrl"], created.text
        file_id = created.json()["id"]
        write_fields = ("uploadUrl", "uploadMethod", "uploadHeaders")
        as_reader = await api.client.get(f"/v1/files/{file_id}", headers=api.auth("reader"))
        listed = await api.client.get("/v1/files", headers=api.auth("reader"))
        assert as_reader.status_code == 200 and listed.status_code == 200
        for view in (as_reader.json(), *listed.json()["data"]):
            assert all(view.get(name) is None for name in write_fields), view
        # The owner's writer credential still sees it, on the object and in the list.
        assert (await api.client.get(f"/v1/files/{file_id}", headers=api.auth())).json()["uploadUrl"]
        assert all(v["uploadUrl"] for v in (await api.client.get("/v1/files", headers=api.auth())).json()["data"])

        path, query = _split(created.json()["uploadUrl"])
        sent = await api.client.put(path, params=query, content=TEN)
        assert sent.status_code == 200 and sent.json()["status"] == "PENDING", sent.text
        assert all(sent.json().get(name) is None for name in write_fields), sent.json()


async def _signed_urls(api: Api, auth: dict[str, str]) -> dict[str, tuple[str, str, bytes | None]]:
    """One URL of each kind asked for with ``auth``: name → (method, URL, body)."""
    c = api.client
    native = await c.post("/v1/files", json={"filename": "a.txt", "sizeBytes": 10}, headers=auth)
    asset = await c.post("/asset", json={"filename": "a.txt", "filesize": 10}, headers=auth)
    media_id = await make_target(api, "media")
    media = await c.get(f"/api/v2/media/{media_id}/", headers=auth)
    assert native.status_code == asset.status_code == 201 and media.status_code == 200, asset.text
    download = await c.post(f"/v1/files/{await make_target(api, 'upload_done')}/download-url", headers=auth)
    assert download.status_code == 200, download.text
    return {
        "native": ("PUT", native.json()["uploadUrl"], TEN),
        "download": ("GET", download.json()["url"], None),
        "asset": ("PUT", asset.json()["uploadUrl"], TEN),
        "media": ("GET", media.json()["image"], None),
    }


async def test_urls_stop_with_the_key_that_asked_for_them(make_api: MakeApi) -> None:
    """Revoking an API key ends the URLs made for it, directly or through a token issued for it
    (as deleting an S3 access key ends its presigned URLs); another key's URLs go on working."""
    async with make_api() as api:
        c = api.client
        record, key = await api.runtime.keys.create("alice", "files:create,files:read")
        issued = await c.post("/v1/auth/token", headers={"Authorization": f"Bearer {key}"})
        assert issued.status_code == 200, issued.text
        doomed = {
            **await _signed_urls(api, {"Authorization": f"Bearer {key}"}),
            **{
                f"{name} by token": url
                for name, url in (
                    await _signed_urls(api, {"Authorization": f"Bearer {issued.json()['accessToken']}"})
                ).items()
            },
        }
        kept = await _signed_urls(api, api.auth())
        for urls, key_id in ((doomed, record.id), (kept, api.keys["alice"].split("_")[1])):
            assert all(_split(url)[1]["key_id"] == key_id for _, url, _ in urls.values()), urls

        await api.runtime.keys.revoke(record.id, "alice")
        for name, (method, url, body) in doomed.items():
            refused = await c.request(method, url, content=body)
            assert refused.status_code == 403, (name, refused.text)
            assert "revoked" in refused.text, (name, refused.text)
            if method == "PUT":  # nothing of the body was stored
                file_id = _split(url)[0].split("/")[-2]
                got = await c.get(f"/v1/files/{file_id}", headers=api.auth())
                assert got.json()["bytesReceived"] == 0, (name, got.text)
        for name, (method, url, body) in kept.items():
            assert (await c.request(method, url, content=body)).status_code == 200, name


async def test_a_url_made_before_urls_were_bound_to_keys_still_works_until_it_expires(make_api: MakeApi) -> None:
    async with make_api() as api:
        created = await api.client.post("/v1/files", json={"filename": "a.txt", "sizeBytes": 10}, headers=api.auth())
        path, _ = _split(created.json()["uploadUrl"])
        unbound = api.runtime.signer.sign(Grant("PUT", path, created.json()["id"], "alice"), 600)
        assert "key_id" not in unbound
        assert (await api.client.put(path, params=unbound, content=TEN)).status_code == 200


async def test_a_url_never_outlives_the_credential_that_asked_for_it(make_api: MakeApi) -> None:
    """A 2-minute access token was handed a day-long uploadUrl (and a download URL outliving it),
    as URLs presigned with temporary credentials must not be."""
    async with make_api() as api:
        issued = await api.client.post("/v1/auth/token", json={"expiresIn": 30}, headers=api.auth("alice"))
        token = {"Authorization": f"Bearer {issued.json()['accessToken']}"}
        ends = int(time.time()) + 30
        created = await api.client.post("/v1/files", json={"filename": "a", "sizeBytes": 10}, headers=token)
        assert created.status_code == 201, created.text
        _, query = _split(created.json()["uploadUrl"])
        assert int(query["expires"]) <= ends
        done = await make_target(api, "upload_done")
        download = await api.client.post(f"/v1/files/{done}/download-url", headers=token)
        assert download.status_code == 200 and download.json()["expiresIn"] <= 30, download.text
        assert int(_split(download.json()["url"])[1]["expires"]) <= ends
        # A key that never expires still gets the full lifetimes.
        own = await api.client.post("/v1/files", json={"filename": "a", "sizeBytes": 10}, headers=api.auth("alice"))
        assert int(_split(own.json()["uploadUrl"])[1]["expires"]) > ends + 3600


async def test_asset_urls_outlive_the_token_that_asked_for_them(make_api: MakeApi) -> None:
    """An asset's part URLs are handed out once: cut at the token's end, an asset sent for longer
    than a token lives could never be finished."""
    async with make_api() as api:
        issued = await api.client.post("/auth/token", json={"expiresIn": 30}, headers=api.auth("alice"))
        token = {"AccessToken": issued.json()["accessToken"]}
        created = await api.client.post("/asset", json={"filename": "a.txt", "filesize": 5}, headers=token)
        assert created.status_code == 201, created.text
        assert int(_split(created.json()["uploadUrl"])[1]["expires"]) > time.time() + 60
