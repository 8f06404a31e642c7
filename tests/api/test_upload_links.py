"""Upload links (``/v1/upload-links``): what the owner manages, what a link's token may do (create
and fill uploads through its own link, nothing else), the limits the server holds atomically, and
revocation and expiry taking effect at the next request, also in the middle of an upload."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import os
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import update

from chunkd.backends.repository.sqlalchemy.tables import upload_links
from chunkd.frontends.tus.creation import ONE_WRITE_BODY
from tests.conftest import Api

TUS = {"Tus-Resumable": "1.0.0"}
PATCH = {**TUS, "Content-Type": "application/offset+octet-stream"}


async def admin(api: Api, owner: str = "alice") -> dict[str, str]:
    _, key = await api.runtime.keys.create(owner, "files:create,files:read,files:delete,links:admin")
    return {"Authorization": f"Bearer {key}"}


async def make_link(api: Api, owner_auth: dict[str, str], **body: Any) -> tuple[dict[str, Any], dict[str, str]]:
    created = await api.client.post("/v1/upload-links", json=body, headers=owner_auth)
    assert created.status_code == 201, created.text
    link = created.json()
    token = link["url"].split("#link=", 1)[1]
    return link, {"Authorization": f"Bearer {token}"}


async def owner_files(api: Api, owner_auth: dict[str, str]) -> list[dict[str, Any]]:
    listed = await api.client.get("/v1/files", headers=owner_auth)
    assert listed.status_code == 200, listed.text
    return listed.json()["data"]  # type: ignore[no-any-return]


async def create_file(api: Api, auth: dict[str, str], size: int, name: str = "a.bin", **extra: Any) -> Any:
    return await api.client.post("/v1/files", json={"filename": name, "sizeBytes": size, **extra}, headers=auth)


async def test_owner_manages_links(api: Api) -> None:
    owner = await admin(api)
    link, _ = await make_link(
        api, owner, expiresIn=3600, maxBytes=1000, maxFiles=3, allowedMimeTypes=["image/*"], note="For ACME"
    )
    assert link["url"].startswith("http://testserver/#link=cl_")
    assert {k: link[k] for k in ("maxBytes", "maxFiles", "filesUploaded", "bytesUploaded", "note")} == {
        "maxBytes": 1000,
        "maxFiles": 3,
        "filesUploaded": 0,
        "bytesUploaded": 0,
        "note": "For ACME",
    }
    assert link["allowedMimeTypes"] == ["image/*"] and link["revokedAt"] is None
    expires = datetime.fromisoformat(link["expiresAt"].replace("Z", "+00:00"))
    assert timedelta(minutes=59) < expires - datetime.now(UTC) <= timedelta(hours=1)

    fetched = (await api.client.get(f"/v1/upload-links/{link['id']}", headers=owner)).json()
    assert fetched == {**link, "url": None}  # the token is shown once: only its hash is stored
    assert [x["id"] for x in (await api.client.get("/v1/upload-links", headers=owner)).json()["data"]] == [link["id"]]

    # Other owners see nothing; keys without links:admin are refused, naming the scope.
    bob = await admin(api, "bob")
    assert (await api.client.get(f"/v1/upload-links/{link['id']}", headers=bob)).status_code == 404
    assert (await api.client.delete(f"/v1/upload-links/{link['id']}", headers=bob)).status_code == 404
    assert (await api.client.get("/v1/upload-links", headers=bob)).json()["data"] == []
    refused = await api.client.post("/v1/upload-links", json={}, headers=api.auth("alice"))
    assert refused.status_code == 403 and refused.json()["error"]["scope"] == "links:admin"

    revoked = await api.client.delete(f"/v1/upload-links/{link['id']}", headers=owner)
    assert revoked.status_code == 200 and revoked.json()["revokedAt"] is not None
    again = await api.client.delete(f"/v1/upload-links/{link['id']}", headers=owner)
    assert again.status_code == 200 and again.json()["revokedAt"] == revoked.json()["revokedAt"]
    # Revoked is deleted: gone by id, kept in the list for the record.
    gone = await api.client.get(f"/v1/upload-links/{link['id']}", headers=owner)
    assert gone.status_code == 404 and "revoked" in gone.json()["error"]["message"]
    listed = (await api.client.get("/v1/upload-links", headers=owner)).json()["data"]
    assert [x["revokedAt"] for x in listed] == [revoked.json()["revokedAt"]]


async def test_a_credential_without_files_create_cannot_make_a_link(api: Api) -> None:
    """A link's token creates and fills uploads (files:create): a key that may manage links but
    not upload would otherwise grant itself that scope, through a link it then uses itself (the
    keys API never lets a key grant a scope it lacks either). Refused, naming files:create, and
    no link is made."""
    _, key = await api.runtime.keys.create("alice", "files:read,links:admin")
    manager = {"Authorization": f"Bearer {key}"}
    refused = await api.client.post("/v1/upload-links", json={"maxFiles": 1}, headers=manager)
    assert refused.status_code == 403, refused.text
    error = refused.json()["error"]
    assert error["code"] == "missing_scope" and error["scope"] == "files:create", error
    assert "files:create" in error["message"]
    assert (await api.client.get("/v1/upload-links", headers=manager)).json()["data"] == []


async def test_bad_link_requests_name_the_field(api: Api) -> None:
    owner = await admin(api)
    for body, field in [
        ({"expiresIn": 10**9}, "expiresIn"),
        ({"expiresIn": 0}, "expiresIn"),
        ({"maxBytes": 0}, "maxBytes"),
        ({"maxFiles": "3"}, "maxFiles"),
        ({"allowedMimeTypes": ["image/png", "not a type"]}, "allowedMimeTypes.1"),
        ({"allowedMimeTypes": []}, "allowedMimeTypes"),
        ({"note": "x" * 1025}, "note"),
        ({"note": "bell\x07"}, "note"),
    ]:
        response = await api.client.post("/v1/upload-links", json=body, headers=owner)
        assert response.status_code == 400, (body, response.text)
        assert response.json()["error"]["field"] == field, (body, response.text)
    assert (await api.client.get("/v1/upload-links", headers=owner)).json()["data"] == []
    # However far past the limit, the answer names the limit that holds (past 2**31 it named that).
    for seconds in (10**7, 10**11, 10**40):
        response = await api.client.post("/v1/upload-links", json={"expiresIn": seconds}, headers=owner)
        assert response.status_code == 400 and "between 1 and 7776000 seconds" in response.text, response.text


async def test_link_uploads_land_in_the_owners_files_tagged(api: Api) -> None:
    owner = await admin(api)
    link, partner = await make_link(api, owner, note="drop here")
    current = await api.client.get("/v1/upload-links/current", headers=partner)
    assert current.status_code == 200 and current.json()["note"] == "drop here" and current.json()["url"] is None

    data = bytes(range(256)) * 40  # 10,240 bytes in parts of 4,096
    created = await create_file(api, partner, len(data), "report.pdf", partSize=4096)
    assert created.status_code == 201, created.text
    body = created.json()
    assert body["uploadLink"] == link["id"] and body["mimeType"] == "application/pdf"
    assert body.get("uploadUrl") is None  # a signed URL would outlive a revocation of the link
    file_id = body["id"]
    for n in (1, 2, 3):
        part = await api.client.put(
            f"/v1/files/{file_id}/parts/{n}", content=data[(n - 1) * 4096 : n * 4096], headers=partner
        )
        assert part.status_code == 200, part.text
        if n == 2:  # resuming needs the parts list of the unfinished upload: allowed
            seen = await api.client.get(f"/v1/files/{file_id}", headers=partner)
            assert seen.status_code == 200 and [p["partNumber"] for p in seen.json()["parts"]] == [1, 2]
    done = await api.client.post(
        f"/v1/files/{file_id}/complete", json={"md5": hashlib.md5(data).hexdigest()}, headers=partner
    )
    assert done.status_code == 200 and done.json()["status"] == "COMPLETED", done.text

    mine = await api.client.get(f"/v1/files/{file_id}", headers=owner)
    assert mine.json()["uploadLink"] == link["id"] and mine.json()["md5"] == hashlib.md5(data).hexdigest()
    content = await api.client.get(f"/v1/files/{file_id}/content", headers=owner)
    assert content.content == data
    counted = (await api.client.get(f"/v1/upload-links/{link['id']}", headers=owner)).json()
    assert counted["filesUploaded"] == 1 and counted["bytesUploaded"] == len(data)
    # A file uploaded by the owner is not tagged.
    plain = await create_file(api, owner, 5)
    assert plain.json()["uploadLink"] is None


async def test_a_link_token_cannot_list_read_or_delete(api: Api) -> None:
    owner = await admin(api)
    _, partner = await make_link(api, owner)
    own = (await create_file(api, partner, 4, partSize=4)).json()["id"]
    await api.client.put(f"/v1/files/{own}/parts/1", content=b"abcd", headers=partner)
    assert (await api.client.post(f"/v1/files/{own}/complete", headers=partner)).status_code == 200
    others = (await create_file(api, owner, 4, partSize=4)).json()["id"]
    await api.client.put(f"/v1/files/{others}/parts/1", content=b"wxyz", headers=owner)
    pending_other = (await create_file(api, owner, 4, partSize=4)).json()["id"]

    c = api.client
    forbidden = [
        await c.get("/v1/files", headers=partner),
        await c.get(f"/v1/files/{own}/content", headers=partner),
        await c.delete(f"/v1/files/{own}", headers=partner),
        await c.get("/v1/upload-links", headers=partner),
        await c.post("/v1/upload-links", json={}, headers=partner),
        await c.get("/v1/keys", headers=partner),
        await c.post("/v1/auth/token", headers=partner),
        await c.post("/asset", json={"filename": "a.txt", "filesize": 4}, headers=partner),
        await c.get(f"/files/{own}", headers=partner),
    ]
    for response in forbidden:
        assert response.status_code == 403, (response.request.url, response.status_code, response.text)
    missing = [
        await c.get(f"/v1/files/{own}", headers=partner),  # its own, once finished: no longer readable
        await c.get(f"/v1/files/{others}", headers=partner),
        await c.put(f"/v1/files/{pending_other}/parts/1", content=b"evil", headers=partner),
        await c.post(f"/v1/files/{pending_other}/complete", headers=partner),
        await c.post(f"/v1/files/{pending_other}/cancel", headers=partner),
        await c.head(f"/files/{pending_other}", headers={**TUS, **partner}),
    ]
    for response in missing:
        assert response.status_code == 404, (response.request.url, response.status_code, response.text)
    held = (await c.get(f"/v1/files/{pending_other}", headers=owner)).json()
    assert held["status"] == "PENDING" and held["parts"] == []
    # A link token with another credential: refused outright (no mixing of powers).
    mixed = await c.get("/v1/files", headers={**partner, "X-API-Key": api.keys["alice"]})
    assert mixed.status_code == 401
    tampered = {"Authorization": partner["Authorization"][:-4] + "AAAA"}
    assert (await c.post("/v1/files", json={"filename": "a", "sizeBytes": 1}, headers=tampered)).status_code == 401


async def test_a_link_learns_its_own_upload_completed_only_by_completing_it_again(api: Api) -> None:
    """What the upload page relies on after a reload during a complete: a link reads none of its
    finished uploads, but the complete sent again with the same MD5 is answered as the first one was
    (other bytes: checksum_mismatch), nothing more is counted or stored, and no other link learns
    anything of it."""
    owner = await admin(api)
    link, partner = await make_link(api, owner)
    _, stranger = await make_link(api, owner)
    data = b"abcd"
    md5 = hashlib.md5(data).hexdigest()
    own = (await create_file(api, partner, 4, partSize=4)).json()["id"]
    await api.client.put(f"/v1/files/{own}/parts/1", content=data, headers=partner)
    first = await api.client.post(f"/v1/files/{own}/complete", json={"md5": md5}, headers=partner)
    assert first.status_code == 200, first.text
    assert (await api.client.get(f"/v1/files/{own}", headers=partner)).status_code == 404

    again = await api.client.post(f"/v1/files/{own}/complete", json={"md5": md5}, headers=partner)
    assert again.status_code == 200 and again.json() == first.json()
    other_bytes = await api.client.post(f"/v1/files/{own}/complete", json={"md5": "0" * 32}, headers=partner)
    assert other_bytes.status_code == 400 and other_bytes.json()["error"]["code"] == "checksum_mismatch"
    for body in ({"md5": md5}, {"md5": "0" * 32}, None):  # another link: as if there were no such upload
        foreign = await api.client.post(f"/v1/files/{own}/complete", json=body, headers=stranger)
        assert foreign.status_code == 404, foreign.text
    counted = (await api.client.get(f"/v1/upload-links/{link['id']}", headers=owner)).json()
    assert counted["filesUploaded"] == 1 and counted["bytesUploaded"] == 4
    assert [f["id"] for f in await owner_files(api, owner)] == [own]


async def test_limits_are_enforced_by_the_server_and_store_nothing(api: Api) -> None:
    owner = await admin(api)
    link, partner = await make_link(api, owner, maxBytes=100, maxFiles=3, allowedMimeTypes=["image/*", "text/plain"])
    assert (await create_file(api, partner, 60, "a.png")).status_code == 201
    over = await create_file(api, partner, 50, "b.png")
    assert over.status_code == 403
    error = over.json()["error"]
    assert error["code"] == "quota_exceeded" and error["limit"] == "link_max_bytes" and error["bytesLeft"] == 40
    assert "100 bytes" in error["message"] and error["field"] == "sizeBytes"
    wrong_type = await create_file(api, partner, 10, "c.exe", mimeType="application/x-msdownload")
    assert wrong_type.status_code == 403 and wrong_type.json()["error"]["code"] == "link_mime_type"
    guessed = await create_file(api, partner, 10, "virus.exe")  # the type guessed from the name is checked too
    assert guessed.status_code == 403 and guessed.json()["error"]["field"] == "mimeType"
    assert (await create_file(api, partner, 40, "d.txt")).status_code == 201
    bad = await create_file(api, partner, 0, "e.png", partSize=0)  # refused by the engine: not counted
    assert bad.status_code == 400
    assert (await create_file(api, partner, 0, "e.png")).status_code == 201
    fourth = await create_file(api, partner, 0, "f.png")
    assert fourth.status_code == 403 and fourth.json()["error"]["limit"] == "link_max_files"
    counted = (await api.client.get(f"/v1/upload-links/{link['id']}", headers=owner)).json()
    assert counted["filesUploaded"] == 3 and counted["bytesUploaded"] == 100
    assert sorted(f["filename"] for f in await owner_files(api, owner)) == ["a.png", "d.txt", "e.png"]


async def test_concurrent_creates_cannot_pass_max_files(api: Api) -> None:
    owner = await admin(api)
    link, partner = await make_link(api, owner, maxFiles=3, maxBytes=10**6)
    answers = await asyncio.gather(*(create_file(api, partner, 1000, f"{i}.bin") for i in range(10)))
    assert sorted(a.status_code for a in answers) == [201] * 3 + [403] * 7
    assert len(await owner_files(api, owner)) == 3
    counted = (await api.client.get(f"/v1/upload-links/{link['id']}", headers=owner)).json()
    assert counted["filesUploaded"] == 3 and counted["bytesUploaded"] == 3000


async def test_revocation_stops_an_upload_in_progress(api: Api) -> None:
    owner = await admin(api)
    link, partner = await make_link(api, owner)
    file_id = (await create_file(api, partner, 8, partSize=4)).json()["id"]
    assert (await api.client.put(f"/v1/files/{file_id}/parts/1", content=b"1234", headers=partner)).status_code == 200
    tus = await api.client.post("/files", headers={**TUS, **partner, "Upload-Length": "8"})
    assert tus.status_code == 201, tus.text
    tus_url = tus.headers["location"]
    first = await api.client.patch(tus_url, content=b"1234", headers={**PATCH, **partner, "Upload-Offset": "0"})
    assert first.status_code == 204

    assert (await api.client.delete(f"/v1/upload-links/{link['id']}", headers=owner)).status_code == 200
    refused = [
        await api.client.put(f"/v1/files/{file_id}/parts/2", content=b"5678", headers=partner),
        await api.client.post(f"/v1/files/{file_id}/complete", headers=partner),
        await api.client.patch(tus_url, content=b"5678", headers={**PATCH, **partner, "Upload-Offset": "4"}),
        await create_file(api, partner, 1),
        await api.client.get("/v1/upload-links/current", headers=partner),
    ]
    for response in refused:
        assert response.status_code == 401, (response.request.url, response.text)
    assert refused[0].json()["error"]["code"] == "link_revoked" and "revoked" in refused[0].json()["error"]["message"]
    held = (await api.client.get(f"/v1/files/{file_id}", headers=owner)).json()
    assert held["status"] == "PENDING" and held["bytesReceived"] == 4
    tus_id = tus_url.rsplit("/", 1)[1]
    assert (await api.client.get(f"/v1/files/{tus_id}", headers=owner)).json()["bytesReceived"] == 4
    assert len(await owner_files(api, owner)) == 2  # the refused create stored nothing


async def test_revoking_the_key_a_link_was_made_with_ends_the_link(api: Api) -> None:
    """A link is bound to the API key of the credential that made it (a key, or a chunkd token
    issued for one), as that key's tokens and signed URLs are: revoking a leaked key must not leave
    the links made with it open. The key's links show as revoked; links made with another key go
    on; nothing received is lost."""
    record, key = await api.runtime.keys.create("alice", "files:create,files:read,links:admin")
    key_id = record.id
    by_key = {"Authorization": f"Bearer {key}"}
    token = await api.client.post("/v1/auth/token", headers=by_key)
    assert token.status_code == 200, token.text
    by_token = {"Authorization": f"Bearer {token.json()['accessToken']}"}
    other_record, other = await api.runtime.keys.create("alice", "files:create,files:read,links:admin")
    other_id = other_record.id
    link, partner = await make_link(api, by_key)
    token_link, token_partner = await make_link(api, by_token)
    other_link, other_partner = await make_link(api, {"Authorization": f"Bearer {other}"})
    assert (link["keyId"], token_link["keyId"], other_link["keyId"]) == (key_id, key_id, other_id)
    file_id = (await create_file(api, partner, 8, partSize=4)).json()["id"]
    assert (await api.client.put(f"/v1/files/{file_id}/parts/1", content=b"1234", headers=partner)).status_code == 200

    await api.runtime.keys.revoke(key_id)  # as `chunkd keys revoke` does
    refused = [
        await api.client.put(f"/v1/files/{file_id}/parts/2", content=b"5678", headers=partner),
        await create_file(api, partner, 1),
        await create_file(api, token_partner, 1),
        await api.client.post("/files", headers={**TUS, **token_partner, "Upload-Length": "1"}),
    ]
    for response in refused:
        assert response.status_code == 401, (response.request.url, response.text)
    assert refused[0].json()["error"]["code"] == "link_revoked", refused[0].text
    assert (await create_file(api, other_partner, 1)).status_code == 201  # another key's link goes on
    owner = {"Authorization": f"Bearer {other}"}
    held = (await api.client.get(f"/v1/files/{file_id}", headers=owner)).json()
    assert held["status"] == "PENDING" and held["bytesReceived"] == 4
    listed = {x["id"]: x for x in (await api.client.get("/v1/upload-links", headers=owner)).json()["data"]}
    assert {i: x["keyId"] for i, x in listed.items()} == {
        link["id"]: key_id,
        token_link["id"]: key_id,
        other_link["id"]: other_id,
    }
    assert listed[link["id"]]["revokedAt"] and listed[token_link["id"]]["revokedAt"]
    assert listed[other_link["id"]]["revokedAt"] is None


async def test_a_link_bound_to_a_revoked_key_is_refused_even_if_the_revocation_missed_it(api: Api) -> None:
    """A node trusts a key it read up to a second ago: a link made there just after the key was
    revoked elsewhere is committed after the revocation's update of the key's links, and misses it.
    Such a link is refused all the same (its key is looked up on each request)."""
    record, _ = await api.runtime.keys.create("alice", "files:create,links:admin")
    await api.runtime.keys.revoke(record.id)
    link, token = await api.runtime.links.create("alice", key_id=record.id)  # as the late node makes it
    assert link.revoked_at is None
    refused = await create_file(api, {"Authorization": f"Bearer {token}"}, 1)
    assert refused.status_code == 401, refused.text
    error = refused.json()["error"]
    assert error["code"] == "link_revoked" and "API key" in error["message"], error


async def test_an_expired_link_is_refused(api: Api) -> None:
    owner = await admin(api)
    link, partner = await make_link(api, owner, expiresIn=3600)
    file_id = (await create_file(api, partner, 8, partSize=4)).json()["id"]
    async with api.runtime.links.repo.engine.begin() as conn:  # type: ignore[attr-defined]
        past = datetime.now(UTC) - timedelta(seconds=1)
        await conn.execute(update(upload_links).where(upload_links.c.id == link["id"]).values(expires_at=past))
    for response in [
        await create_file(api, partner, 1),
        await api.client.put(f"/v1/files/{file_id}/parts/1", content=b"1234", headers=partner),
        await api.client.get("/v1/upload-links/current", headers=partner),
    ]:
        assert response.status_code == 401 and response.json()["error"]["code"] == "link_expired", response.text
    assert [f["id"] for f in await owner_files(api, owner)] == [file_id]


async def test_tus_accepts_a_link_token(api: Api) -> None:
    owner = await admin(api)
    link, partner = await make_link(api, owner, maxBytes=10)
    headers = {**TUS, **partner, "Upload-Length": "10", "Upload-Metadata": "filename bm90ZXMudHh0"}
    created = await api.client.post("/files", headers=headers)
    assert created.status_code == 201, created.text
    url = created.headers["location"]
    assert (await api.client.head(url, headers={**TUS, **partner})).headers["upload-offset"] == "0"
    done = await api.client.patch(url, content=b"0123456789", headers={**PATCH, **partner, "Upload-Offset": "0"})
    assert done.status_code == 204
    file_id = url.rsplit("/", 1)[1]
    mine = (await api.client.get(f"/v1/files/{file_id}", headers=owner)).json()
    assert mine["status"] == "COMPLETED" and mine["uploadLink"] == link["id"] and mine["filename"] == "notes.txt"
    assert (await api.client.head(url, headers={**TUS, **partner})).status_code == 404  # finished: not readable
    over = await api.client.post("/files", headers={**TUS, **partner, "Upload-Length": "1"})
    assert over.status_code == 403
    deferred = await api.client.post("/files", headers={**TUS, **partner, "Upload-Defer-Length": "1"})
    assert deferred.status_code == 400 and "size" in deferred.text
    concat = await api.client.post(
        "/files", headers={**TUS, **partner, "Upload-Length": "1", "Upload-Concat": "partial"}
    )
    assert concat.status_code == 403


@pytest.mark.parametrize("size", [10, ONE_WRITE_BODY + 10], ids=["stored-with-its-bytes", "stored-first"])
async def test_a_refused_tus_creation_with_upload_does_not_count_against_the_link(api: Api, size: int) -> None:
    owner = await admin(api)
    link, partner = await make_link(api, owner, maxFiles=1, maxBytes=size)
    data = os.urandom(size)
    headers = {**PATCH, **partner, "Upload-Length": str(size), "Upload-Metadata": "filename bm90ZXMudHh0"}
    wrong = {"Upload-Checksum": "sha1 " + base64.b64encode(hashlib.sha1(b"other").digest()).decode()}
    refused = await api.client.post("/files", content=data, headers={**headers, **wrong})
    assert refused.status_code == 460, refused.text
    counted = (await api.client.get(f"/v1/upload-links/{link['id']}", headers=owner)).json()
    assert (counted["filesUploaded"], counted["bytesUploaded"]) == (0, 0)
    accepted = await api.client.post("/files", content=data, headers=headers)
    assert accepted.status_code == 201 and accepted.headers["upload-offset"] == str(size), accepted.text
    assert [f["status"] for f in await owner_files(api, owner)] == ["COMPLETED"]


async def test_an_ietf_draft_creation_through_a_link_is_held_to_its_limits(api: Api) -> None:
    """The draft creates uploads by a POST to the tus collection, which a link's token may call:
    the link's media types, byte and file limits hold there too, and the upload is the link's."""
    owner = await admin(api)
    link, partner = await make_link(api, owner, maxFiles=1, maxBytes=10, allowedMimeTypes=["text/plain"])
    draft = {**partner, "Upload-Draft-Interop-Version": "6", "Upload-Complete": "?1"}
    wrong_type = await api.client.post(
        "/files", content=b"abc", headers={**draft, "Content-Type": "application/x-msdownload"}
    )
    assert wrong_type.status_code == 403, wrong_type.text
    too_big = await api.client.post("/files", content=b"x" * 11, headers={**draft, "Content-Type": "text/plain"})
    assert too_big.status_code == 403, too_big.text
    wrong = base64.b64encode(hashlib.sha256(b"other").digest()).decode()
    corrupt = await api.client.post(
        "/files",
        content=b"hello",
        headers={**draft, "Content-Type": "text/plain", "Content-Digest": f"sha-256=:{wrong}:"},
    )
    assert corrupt.status_code == 400, corrupt.text
    counted = (await api.client.get(f"/v1/upload-links/{link['id']}", headers=owner)).json()
    assert (counted["filesUploaded"], counted["bytesUploaded"]) == (0, 0)
    made = await api.client.post("/files", content=b"hello", headers={**draft, "Content-Type": "text/plain"})
    assert made.status_code == 201, made.text
    [mine] = await owner_files(api, owner)
    assert mine["status"] == "COMPLETED" and mine["uploadLink"] == link["id"]
    again = await api.client.post("/files", content=b"x", headers={**draft, "Content-Type": "text/plain"})
    assert again.status_code == 403, again.text


async def test_current_link_is_for_link_tokens_only(api: Api) -> None:
    owner = await admin(api)
    assert (await api.client.get("/v1/upload-links/current")).status_code == 401
    refused = await api.client.get("/v1/upload-links/current", headers=owner)
    assert refused.status_code == 403 and refused.json()["error"]["code"] == "forbidden"


async def test_the_partner_sees_the_link_but_not_the_owners_key_id(api: Api) -> None:
    owner = await admin(api)
    link, partner = await make_link(api, owner, note="For ACME")
    assert link["keyId"]  # the owner sees which key the link hangs on
    seen = await api.client.get("/v1/upload-links/current", headers=partner)
    assert seen.status_code == 200, seen.text
    assert seen.json()["note"] == "For ACME" and seen.json()["keyId"] is None


async def test_a_create_sent_again_with_its_idempotency_key_makes_nothing_new(api: Api) -> None:
    """``Idempotency-Key`` on POST /v1/files: a create sent again (its answer lost) is answered with
    the upload the first one made; through a link it is not counted twice. The same key with
    another file, or from a credential that did not make the upload, is a 400 naming the header."""
    owner = await admin(api)
    key = {"Idempotency-Key": "8e03978e-40d5-43e8-bc93-6894a57f9324"}
    first = await create_file(api, {**owner, **key}, 10, "a.bin")
    again = await create_file(api, {**owner, "Idempotency-Key": f'"{key["Idempotency-Key"]}"'}, 10, "a.bin")
    assert first.status_code == again.status_code == 201, again.text
    assert again.json()["id"] == first.json()["id"] and "uploadUrl" in again.json()
    together = await asyncio.gather(*(create_file(api, {**owner, "Idempotency-Key": "k2"}, 5) for _ in range(4)))
    assert {r.status_code for r in together} == {201} and len({r.json()["id"] for r in together}) == 1
    assert len(await owner_files(api, owner)) == 2
    for other in ({"name": "b.bin"}, {"size": 11}, {"extra": {"partSize": 5 * 1024 * 1024 + 1}}):
        refused = await create_file(
            api, {**owner, **key}, other.get("size", 10), other.get("name", "a.bin"), **other.get("extra", {})
        )
        assert refused.status_code == 400 and refused.json()["error"]["field"] == "Idempotency-Key", refused.text
    bad = await create_file(api, {**owner, "Idempotency-Key": "x" * 129}, 10)
    assert bad.status_code == 400 and bad.json()["error"]["field"] == "Idempotency-Key"
    # Through a link: counted once; the owner's key is not the link's to reuse.
    _, via_link = await make_link(api, owner, maxFiles=1)
    made = await create_file(api, {**via_link, "Idempotency-Key": "k3"}, 3)
    assert made.status_code == 201, made.text
    assert (await create_file(api, {**via_link, "Idempotency-Key": "k3"}, 3)).json()["id"] == made.json()["id"]
    assert (await create_file(api, {**via_link, **key}, 10, "a.bin")).status_code == 400
    assert len(await owner_files(api, owner)) == 3
