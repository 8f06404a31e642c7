"""The asset API (seed 003) through the in-process app, with a 1,000-byte part size so that
multipart flows stay small: create, signed part PUTs answered with ETags, /asset/complete with the
seed's headers and body, cancel, and every documented error shape."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import os
from typing import Any

import pytest

from chunkd.auth.signing import Grant
from chunkd.settings import Settings
from tests.conftest import Api
from tests.support.held import Held
from tests.support.openapi import answer_schema

PART = 1000
RESULT_FIELDS = {"fileId", "filename", "action", "originalFileId", "uploadId", "s3Key", "status"}


@pytest.fixture
def settings(settings: Settings) -> Settings:
    settings.asset_part_size = PART
    return settings


def seed_headers(api: Api, who: str = "alice") -> dict[str, str]:
    """The seed's headers: X-API-Key, Authorization, AccessToken and Content-Type: application/json."""
    key = api.keys[who]
    return {
        "X-API-Key": key,
        "Authorization": f"Bearer {key}",
        "AccessToken": key,
        "Content-Type": "application/json",
    }


async def create(api: Api, data: bytes, filename: str = "2-vid.mp4", **extra: Any) -> dict[str, Any]:
    response = await api.client.post(
        "/asset", json={"filename": filename, "filesize": len(data), **extra}, headers={"X-API-Key": api.keys["alice"]}
    )
    assert response.status_code == 201, response.text
    return response.json()


async def put_parts(api: Api, asset: dict[str, Any], data: bytes) -> list[dict[str, Any]]:
    """PUT every part to its signed URL with no credentials at all; returns the S3-style parts list."""
    refs = []
    for part in asset["parts"]:
        n = part["partNumber"]
        chunk = data[(n - 1) * PART : n * PART]
        response = await api.client.put(part["uploadUrl"], content=chunk)
        assert response.status_code == 200, response.text
        assert response.headers["etag"] == f'"{hashlib.md5(chunk).hexdigest()}"'
        refs.append({"partNumber": n, "etag": response.headers["etag"]})
    return refs


def complete_body(asset: dict[str, Any], parts: list[dict[str, Any]], size: int, **extra: Any) -> dict[str, Any]:
    return {
        "fileId": asset["fileId"],
        "filename": asset["filename"],
        "filesize": size,
        "action": "complete",
        "originalFileId": asset["originalFileId"],
        "uploadId": asset["uploadId"],
        "parts": parts,
        **extra,
    }


async def test_multipart_asset_seed_flow(api: Api) -> None:
    data = os.urandom(2 * PART + 321)
    asset = await create(api, data, originalFileId="843ec17f-9491-4cfa-b840-faa299973207")
    assert asset["multipart"] is True and asset["partSize"] == PART and asset["partCount"] == 3
    assert [p["partNumber"] for p in asset["parts"]] == [1, 2, 3]
    assert isinstance(asset["uploadId"], str) and len(asset["uploadId"]) >= 64
    parts = await put_parts(api, asset, data)
    body = complete_body(asset, parts, len(data))
    response = await api.client.post("/asset/complete", json=body, headers=seed_headers(api))
    assert response.status_code == 200, response.text
    result = response.json()
    assert set(result) == RESULT_FIELDS
    assert result == {
        "fileId": asset["fileId"],
        "filename": "2-vid.mp4",
        "action": "complete",
        "originalFileId": "843ec17f-9491-4cfa-b840-faa299973207",
        "uploadId": asset["uploadId"],
        "s3Key": f"masters/{asset['fileId']}/2-vid.mp4",
        "status": "success",
    }
    assert all(isinstance(result[k], str) for k in RESULT_FIELDS)
    # An ordinary engine upload: visible, complete, downloadable through the Files API.
    native = (await api.client.get(f"/v1/files/{asset['fileId']}", headers=api.auth())).json()
    assert native["status"] == "COMPLETED" and native["md5"] == hashlib.md5(data).hexdigest()
    content = await api.client.get(f"/v1/files/{asset['fileId']}/content", headers=api.auth())
    assert content.content == data
    # Completing again (a retried request) answers the same; the trailing-slash path works too.
    again = await api.client.post("/asset/complete/", json=body, headers=seed_headers(api))
    assert again.status_code == 200 and again.json() == result
    # Only for the list that completed it: any other is refused as it would have been then.
    for wrong in ([{"partNumber": 1, "etag": "bogus"}], [], parts[:2], [{**parts[0], "partNumber": "1"}, *parts[1:]]):
        refused = await api.client.post(
            "/asset/complete", json=complete_body(asset, wrong, len(data)), headers=seed_headers(api)
        )
        assert refused.status_code == 400 and refused.json()["status"] == "error", (wrong, refused.text)
    without = {k: v for k, v in body.items() if k != "parts"}
    assert (await api.client.post("/asset/complete", json=without, headers=seed_headers(api))).status_code == 400


async def test_small_asset_single_put_completes(api: Api) -> None:
    data = os.urandom(PART)  # exactly the part size: one PUT, no complete call
    asset = await create(api, data, filename="clip 1 (final).mov")
    assert asset["multipart"] is False and "uploadId" not in asset and "parts" not in asset
    assert asset["s3Key"] == f"masters/{asset['fileId']}/clip-1-final.mov"
    response = await api.client.put(asset["uploadUrl"], content=data)
    assert response.status_code == 200, response.text
    assert response.headers["etag"] == f'"{hashlib.md5(data).hexdigest()}"'
    assert response.json()["status"] == "success" and response.json()["s3Key"] == asset["s3Key"]
    native = (await api.client.get(f"/v1/files/{asset['fileId']}", headers=api.auth())).json()
    assert native["status"] == "COMPLETED" and native["filename"] == "clip 1 (final).mov"
    # The same body again (its answer was lost) is answered as before; other bytes are refused,
    # not dropped under a "success", and the asset keeps its own.
    again = await api.client.put(asset["uploadUrl"], content=data)
    assert again.status_code == 200 and again.headers["etag"] == response.headers["etag"], again.text
    other_bytes = await api.client.put(asset["uploadUrl"], content=os.urandom(PART))
    assert other_bytes.status_code == 400 and "cannot be replaced" in other_bytes.json()["message"], other_bytes.text
    stored = await api.client.get(f"/v1/files/{asset['fileId']}/content", headers=api.auth())
    assert stored.content == data
    # The upload URL is for this asset only, and for PUT only.
    other = await create(api, data)
    moved = asset["uploadUrl"].replace(asset["fileId"], other["fileId"])
    assert (await api.client.put(moved, content=data)).status_code == 403
    # A wrong body length is refused before anything is stored.
    short = await api.client.put(other["uploadUrl"], content=data[:-1])
    assert short.status_code == 400 and short.json()["status"] == "error"


async def test_two_single_puts_at_once_each_answered_for_its_own_bytes(
    api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An asset's single PUT sent again with other bytes while the first is completing: the first
    is answered for its own bytes (its ETag) and the asset keeps them; the second is the 400 of
    other bytes for a completed asset. It used to store its bytes under the first's complete, which
    then completed them and answered 200 with the second body's ETag."""
    data, other = os.urandom(PART), os.urandom(PART)
    asset = await create(api, data)
    completing = Held(monkeypatch, api.runtime.uploads, "_hash_idle")  # the complete's first step, before its lock
    first = asyncio.create_task(api.client.put(asset["uploadUrl"], content=data))
    await completing.reached.wait()
    locks = api.runtime.takeover.locks
    real_hold, asked = locks.hold, asyncio.Event()

    def hold(upload_id: str, *, timeout: float) -> Any:
        asked.set()  # the second PUT waits its turn here (or, before, stored its part)
        return real_hold(upload_id, timeout=timeout)

    monkeypatch.setattr(locks, "hold", hold)
    second = asyncio.create_task(api.client.put(asset["uploadUrl"], content=other))
    await asked.wait()
    completing.gate.set()
    done, refused = await first, await second
    assert done.status_code == 200 and done.headers["etag"] == f'"{hashlib.md5(data).hexdigest()}"', done.text
    assert refused.status_code == 400 and "cannot be replaced" in refused.json()["message"], refused.text
    stored = await api.client.get(f"/v1/files/{asset['fileId']}/content", headers=api.auth())
    assert stored.content == data


async def test_complete_of_a_one_part_asset(api: Api) -> None:
    """Seed 003: "For files 100MB or less in size this operation is not needed." A client that
    calls it anyway is told what to do before the PUT (the asset has no parts to list, so "parts
    must list every part" misled), and gets the asset's result after it."""
    data = os.urandom(PART)
    asset = await create(api, data)
    body = {"fileId": asset["fileId"], "action": "complete", "filesize": len(data)}
    early = await api.client.post("/asset/complete", json=body, headers=seed_headers(api))
    await assert_error(early, words="PUT the whole file to its uploadUrl")
    assert (await api.client.put(asset["uploadUrl"], content=data)).status_code == 200
    done = await api.client.post("/asset/complete", json=body, headers=seed_headers(api))
    assert done.status_code == 200, done.text
    assert set(done.json()) == RESULT_FIELDS and done.json()["status"] == "success"
    # Seed 003 types every field of the answer a string: none is "", not null.
    assert done.json()["action"] == "complete" and done.json()["uploadId"] == ""
    assert done.json()["originalFileId"] == ""


async def test_empty_asset(api: Api) -> None:
    asset = await create(api, b"")
    response = await api.client.put(asset["uploadUrl"], content=b"")
    assert response.status_code == 200, response.text
    assert response.headers["etag"] == f'"{hashlib.md5(b"").hexdigest()}"'


async def test_signed_urls_tampered_or_expired_are_403(api: Api) -> None:
    data = os.urandom(2 * PART)
    asset = await create(api, data)
    url = asset["parts"][0]["uploadUrl"]
    tampered = url.replace("signature=", "signature=x")
    response = await api.client.put(tampered, content=data[:PART])
    assert response.status_code == 403 and set(response.json()) == {"message", "detail"}
    other_part = url.replace("/parts/1?", "/parts/2?")
    assert (await api.client.put(other_part, content=data[PART:])).status_code == 403
    path = f"/asset/{asset['fileId']}/parts/1"
    old = api.runtime.signer.sign(Grant("PUT", path, asset["fileId"], "alice"), -1)
    expired = await api.client.put(f"{path}?expires={old['expires']}&signature={old['signature']}", content=data[:PART])
    assert expired.status_code == 403 and "expired" in expired.json()["detail"]
    no_signature = await api.client.put(path, content=data[:PART])
    assert no_signature.status_code == 401 and set(no_signature.json()) == {"message", "detail"}
    # With credentials instead of a signature, the owner may PUT.
    with_key = await api.client.put(path, content=data[:PART], headers={"X-API-Key": api.keys["alice"]})
    assert with_key.status_code == 200
    assert (await api.client.put(path, content=data[:PART], headers=api.auth("bob"))).status_code == 404


async def test_part_size_rules_at_put(api: Api) -> None:
    data = os.urandom(2 * PART + 10)
    asset = await create(api, data)
    short = await api.client.put(asset["parts"][0]["uploadUrl"], content=data[: PART - 1])
    assert short.status_code == 400 and short.json()["status"] == "error" and str(PART) in short.json()["message"]
    last_long = await api.client.put(asset["parts"][2]["uploadUrl"], content=data[2 * PART :] + b"x")
    assert last_long.status_code == 400
    got = (await api.client.get(f"/v1/files/{asset['fileId']}", headers=api.auth())).json()
    assert got["bytesReceived"] == 0


def content_md5_of(data: bytes) -> str:
    return base64.b64encode(hashlib.md5(data).digest()).decode()


async def test_a_part_or_body_is_checked_against_its_content_md5(api: Api) -> None:
    """As S3's UploadPart and PutObject: a Content-MD5 sent with the bytes is checked before they
    are kept (400, nothing kept), a malformed one is refused before any byte is read, and a
    matching one is accepted. The header was ignored: bytes corrupted on the way were stored and
    answered 200 with their own ETag."""
    data = os.urandom(2 * PART + 10)
    asset = await create(api, data)
    url = asset["parts"][0]["uploadUrl"]
    wrong = await api.client.put(url, content=data[:PART], headers={"Content-MD5": content_md5_of(b"other")})
    await assert_error(wrong, words="Content-MD5")
    malformed = await api.client.put(url, content=data[:PART], headers={"Content-MD5": "not-an-md5"})
    await assert_error(malformed, words="Content-MD5")
    assert (await api.client.get(f"/v1/files/{asset['fileId']}", headers=api.auth())).json()["bytesReceived"] == 0
    right = await api.client.put(url, content=data[:PART], headers={"Content-MD5": content_md5_of(data[:PART])})
    assert right.status_code == 200 and right.headers["etag"] == f'"{hashlib.md5(data[:PART]).hexdigest()}"'
    # A single-PUT asset: a body that does not match its Content-MD5 leaves the asset unfinished,
    # and the right body PUT again completes it.
    small = os.urandom(PART // 2)
    single = await create(api, small)
    refused = await api.client.put(single["uploadUrl"], content=small, headers={"Content-MD5": content_md5_of(b"x")})
    await assert_error(refused, words="Content-MD5")
    native = (await api.client.get(f"/v1/files/{single['fileId']}", headers=api.auth())).json()
    assert native["status"] == "PENDING" and native["bytesReceived"] == 0  # nothing of it recorded
    done = await api.client.put(single["uploadUrl"], content=small, headers={"Content-MD5": content_md5_of(small)})
    assert done.status_code == 200 and done.json()["status"] == "success", done.text
    # Sent again once complete: a Content-MD5 that is not the asset's is refused too.
    again = await api.client.put(single["uploadUrl"], content=small, headers={"Content-MD5": content_md5_of(b"y")})
    await assert_error(again, words="Content-MD5")


async def assert_error(response: Any, status: int = 400, words: str = "") -> None:
    assert response.status_code == status, response.text
    assert set(response.json()) == {"status", "message"} and response.json()["status"] == "error"
    assert words in response.json()["message"]


async def test_complete_errors_leave_asset_pending(api: Api) -> None:
    data = os.urandom(3 * PART + 5)
    asset = await create(api, data)
    parts = await put_parts(api, asset, data)
    post = api.client.post
    url = "/asset/complete"
    h = seed_headers(api)
    body = complete_body(asset, parts, len(data))
    for action in ("Complete", "CANCEL", "finish", ""):
        await assert_error(await post(url, json={**body, "action": action}, headers=h), words="action")
    await assert_error(await post(url, json={**body, "parts": parts[::-1]}, headers=h), words="ascending")
    await assert_error(await post(url, json={**body, "parts": [parts[0], parts[0], *parts[1:]]}, headers=h))
    wrong_etag = [parts[0], {**parts[1], "etag": '"' + "0" * 32 + '"'}, *parts[2:]]
    await assert_error(await post(url, json={**body, "parts": wrong_etag}, headers=h), words="etag of part 2")
    await assert_error(
        await post(url, json={**body, "parts": parts[:2] + parts[3:]}, headers=h), words="missing part 3"
    )
    await assert_error(await post(url, json={**body, "parts": parts[:3]}, headers=h), words="missing part 4")
    beyond = [*parts, {"partNumber": 5, "etag": parts[0]["etag"]}]
    await assert_error(await post(url, json={**body, "parts": beyond}, headers=h), words="beyond")
    await assert_error(await post(url, json={**body, "parts": []}, headers=h), words="parts")
    await assert_error(await post(url, json={**body, "filesize": len(data) + 1}, headers=h), words="filesize")
    await assert_error(
        await post(
            url,
            json={**body, "uploadId": ("A" if asset["uploadId"][0] != "A" else "B") + asset["uploadId"][1:]},
            headers=h,
        ),
        words="uploadId",
    )
    await assert_error(await post(url, json={**body, "uploadId": None}, headers=h), words="uploadId")
    await assert_error(await post(url, json={**body, "filename": "other.mp4"}, headers=h), words="filename")
    await assert_error(await post(url, json={**body, "parts": [{"partNumber": "one", "etag": "x"}]}, headers=h))
    await assert_error(await post(url, json={**body, "filesize": -1}, headers=h), words="filesize")
    await assert_error(await post(url, content=b"[1, 2]", headers=h), words="JSON object")
    await assert_error(await post(url, content=b"{oops", headers=h), words="JSON object")
    await assert_error(
        await post(url, json={k: v for k, v in body.items() if k != "fileId"}, headers=h), words="fileId"
    )
    # An unknown fileId is named as the seed's field, as a fileId of another API already was, with
    # the seed's 400 (it lists no 404).
    await assert_error(
        await post(url, json={**body, "fileId": "A" * 22}, headers=h),
        status=400,
        words=f"no asset with fileId {'A' * 22!r}",
    )
    # "Content-Type (string, required) Enum: "application/json"": anything else is refused.
    raw = json.dumps(body).encode()
    for content_type in ("text/plain", "application/x-www-form-urlencoded", None):
        headers = {k: v for k, v in h.items() if k.lower() != "content-type"}
        if content_type is not None:
            headers["Content-Type"] = content_type
        await assert_error(await post(url, content=raw, headers=headers), words="Content-Type")
    got = (await api.client.get(f"/v1/files/{asset['fileId']}", headers=api.auth())).json()
    assert got["status"] == "PENDING" and got["bytesReceived"] == len(data)
    # Etags are compared with or without their quotes.
    unquoted = [{**p, "etag": p["etag"].strip('"')} for p in parts]
    response = await post(url, json={**body, "parts": unquoted}, headers=h)
    assert response.status_code == 200 and response.json()["status"] == "success"


async def test_a_part_put_again_during_a_complete_is_not_completed_under_the_old_etag(
    api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The parts list is checked against the parts the file is made of: a part PUT again with other
    bytes while the complete waits for the upload's lock is not completed under the etag listed
    for the old bytes (the complete is refused, the asset stays pending with the new part)."""
    data = os.urandom(2 * PART + 7)
    asset = await create(api, data)
    parts = await put_parts(api, asset, data)
    completing = Held(monkeypatch, api.runtime.uploads, "_hash_idle")  # the complete's first step, before its lock
    body = complete_body(asset, parts, len(data))
    complete = asyncio.create_task(api.client.post("/asset/complete", json=body, headers=seed_headers(api)))
    await completing.reached.wait()
    other = os.urandom(PART)
    assert (await api.client.put(asset["parts"][1]["uploadUrl"], content=other)).status_code == 200
    completing.gate.set()
    await assert_error(await complete, words="etag of part 2")
    got = (await api.client.get(f"/v1/files/{asset['fileId']}", headers=api.auth())).json()
    assert got["status"] == "PENDING"
    relisted = [parts[0], {"partNumber": 2, "etag": f'"{hashlib.md5(other).hexdigest()}"'}, parts[2]]
    done = await api.client.post(
        "/asset/complete", json=complete_body(asset, relisted, len(data)), headers=seed_headers(api)
    )
    assert done.status_code == 200, done.text
    served = await api.client.get(f"/v1/files/{asset['fileId']}/content", headers=api.auth())
    assert served.content == data[:PART] + other + data[2 * PART :]


async def test_complete_with_a_part_not_uploaded(api: Api) -> None:
    data = os.urandom(2 * PART)
    asset = await create(api, data)
    first = await api.client.put(asset["parts"][0]["uploadUrl"], content=data[:PART])
    parts = [{"partNumber": 1, "etag": first.headers["etag"]}, {"partNumber": 2, "etag": first.headers["etag"]}]
    response = await api.client.post(
        "/asset/complete", json=complete_body(asset, parts, len(data)), headers=seed_headers(api)
    )
    await assert_error(response, words="part 2 has not been uploaded")


async def test_cancel_frees_parts(api: Api) -> None:
    data = os.urandom(2 * PART + 1)
    asset = await create(api, data)
    parts = await put_parts(api, asset, data)
    blob_dir = api.runtime.settings.data_dir
    stored = [p for p in blob_dir.rglob("*.part")]
    assert len(stored) == 3
    body = {**complete_body(asset, [], len(data)), "action": "cancel"}
    response = await api.client.post("/asset/complete", json=body, headers=seed_headers(api))
    assert response.status_code == 200, response.text
    assert set(response.json()) == RESULT_FIELDS
    assert response.json()["action"] == "cancel" and response.json()["status"] == "success"
    assert not [p for p in blob_dir.rglob("*.part")]
    native = (await api.client.get(f"/v1/files/{asset['fileId']}", headers=api.auth())).json()
    assert native["status"] == "CANCELLED" and native["parts"] == []
    again = await api.client.post("/asset/complete", json=body, headers=seed_headers(api))
    assert again.status_code == 200
    late = await api.client.put(asset["parts"][0]["uploadUrl"], content=data[:PART])
    await assert_error(late, words="CANCELLED")
    complete = await api.client.post(
        "/asset/complete", json=complete_body(asset, parts, len(data)), headers=seed_headers(api)
    )
    await assert_error(complete, words="CANCELLED")


async def test_authentication_and_rights(api: Api) -> None:
    data = os.urandom(2 * PART)
    asset = await create(api, data)
    body = complete_body(asset, await put_parts(api, asset, data), len(data))
    cases = [
        ({}, 401),
        ({"X-API-Key": "ck_nope"}, 401),
        ({"Authorization": "Basic !!!"}, 401),
        ({"AccessToken": "not-a-jwt"}, 401),
        ({"X-API-Key": api.keys["alice"], "Authorization": f"Bearer {api.keys['bob']}"}, 401),  # two owners
        ({"X-API-Key": api.keys["reader"]}, 403),
    ]
    for headers, status in cases:
        response = await api.client.post("/asset/complete", json=body, headers=headers)
        assert response.status_code == status, (headers, response.text)
        assert set(response.json()) == {"message", "detail"} and response.json()["detail"]
    bob = await api.client.post("/asset/complete", json=body, headers=seed_headers(api, "bob"))
    # Another owner's fileId reads as a missing one, said in the seed's words (fileId, not "upload id").
    await assert_error(bob, status=400, words=f"no asset with fileId {asset['fileId']!r}")
    denied = await api.client.post(
        "/asset", json={"filename": "a", "filesize": 1}, headers={"X-API-Key": api.keys["reader"]}
    )
    assert denied.status_code == 403 and set(denied.json()) == {"message", "detail"}
    ok = await api.client.post("/asset/complete", json=body, headers={"AccessToken": api.keys["alice"]})
    assert ok.status_code == 200


async def test_create_validation(api: Api) -> None:
    h = {"X-API-Key": api.keys["alice"]}
    for bad in (
        {"filename": "a"},
        {"filesize": 1},
        {"filename": "a", "filesize": -1},
        {"filename": "", "filesize": 1},
        {"filename": "..", "filesize": 1},
        {"filename": 5, "filesize": 1},
    ):
        await assert_error(await api.client.post("/asset/", json=bad, headers=h))
    huge = await api.client.post("/asset", json={"filename": "a", "filesize": 10**16}, headers=h)
    assert huge.status_code == 413 and huge.json()["status"] == "error"
    assert "filesize" in huge.json()["message"] and "sizeBytes" not in huge.json()["message"]
    # Past the parts an asset can have (10,000 of the asset part size): said with the API's own field.
    many = await api.client.post("/asset", json={"filename": "a", "filesize": 10_000 * PART + 1}, headers=h)
    assert many.status_code == 400 and "filesize" in many.json()["message"], many.text
    assert "partSize" not in many.json()["message"]


async def test_part_numbers_are_numbers_as_clients_write_them(api: Api) -> None:
    """Seed 003: ``parts.partNumber (number)``. 1.0 is how a client that holds numbers as floats
    (Python's json, Java's double) writes 1; it was refused as "not a valid integer". "1", true and
    1.5 are still no part number."""
    data = os.urandom(2 * PART + 7)
    asset = await create(api, data)
    parts = await put_parts(api, asset, data)
    for wrong in ("1", True, 1.5):
        body = complete_body(asset, [{**parts[0], "partNumber": wrong}, *parts[1:]], len(data))
        refused = await api.client.post("/asset/complete", json=body, headers=seed_headers(api))
        assert refused.status_code == 400 and "partNumber" in refused.json()["message"], (wrong, refused.text)
    floats = [{**part, "partNumber": float(part["partNumber"])} for part in parts]
    response = await api.client.post(
        "/asset/complete", json=complete_body(asset, floats, len(data)), headers=seed_headers(api)
    )
    assert response.status_code == 200 and response.json()["status"] == "success", response.text


def test_an_s3_key_keeps_the_extension_of_a_name_of_other_scripts() -> None:
    from chunkd.frontends.assets.router import s3_key

    assert s3_key("f", "видео 报告 📄.mp4") == "masters/f/file.mp4"  # was masters/f/mp4
    assert s3_key("f", "2 vid.mp4") == "masters/f/2-vid.mp4"
    assert s3_key("f", "..") == "masters/f/file"
    assert s3_key("f", "отчёт") == "masters/f/file"


async def test_openapi_lists_the_seeds_actions(api: Api) -> None:
    """Seed 003: ``action`` is "Enum: "complete", "cancel"" (case-sensitive); the published schema
    says so too, not just "a string"."""
    schemas = (await api.client.get("/openapi.json")).json()["components"]["schemas"]
    assert schemas["CompleteAsset"]["properties"]["action"]["enum"] == ["complete", "cancel"]


async def test_openapi_types_the_seeds_answers(api: Api) -> None:
    """Seed 003's 200 fields (every one a string) and the created asset are typed in the published
    document, as the Files API's answers are; they were untyped objects, so a generated client
    handed back bare dicts."""
    document = (await api.client.get("/openapi.json")).json()

    for method, path in (("post", "/asset/complete"), ("put", "/asset/{file_id}/content")):
        result = answer_schema(document, method, path, "200")
        assert set(result["required"]) == RESULT_FIELDS
        assert {name: field["type"] for name, field in result["properties"].items()} == dict.fromkeys(
            RESULT_FIELDS, "string"
        )
    created = answer_schema(document, "post", "/asset", "201")
    assert {"fileId", "filename", "filesize", "s3Key", "multipart", "expiresAt"} <= set(created["required"])
    assert created["properties"]["filesize"]["type"] == "integer"
    assert created["properties"]["expiresAt"]["format"] == "date-time"


async def test_openapi_lists_no_410_the_asset_api_never_answers(api: Api) -> None:
    """An expired asset is a 400 in this dialect (seed 003 lists 400, 401 and 403): the document
    does not promise a 410 Gone that no asset operation sends."""
    paths = (await api.client.get("/openapi.json")).json()["paths"]
    operations = [op for path, item in paths.items() if path.startswith("/asset") for op in item.values()]
    assert operations and all("410" not in op["responses"] for op in operations)
