"""``GET /v1/usage``: an owner's holdings as the quotas count them, beside the quotas; only the
owner's own (never another owner's), refused to an upload link's token and to a key without
files:read."""

from __future__ import annotations

from typing import Any

from tests.security.conftest import MakeApi


async def _usage(api: Any, who: str = "alice") -> Any:
    answer = await api.client.get("/v1/usage", headers=api.auth(who))
    assert answer.status_code == 200, answer.text
    return answer.json()


async def test_usage_counts_what_the_quotas_count_and_names_them(make_api: MakeApi) -> None:
    async with make_api(max_pending_uploads=5, max_stored_bytes=100_000) as api:
        empty = await _usage(api)
        assert empty == {
            "pendingUploads": 0,
            "pendingBytes": 0,
            "storedBytes": 0,
            "limits": {"maxPendingUploads": 5, "maxPendingBytes": None, "maxStoredBytes": 100_000},
        }
        done = await api.client.post("/v1/files", json={"filename": "a", "sizeBytes": 3}, headers=api.auth())
        await api.client.put(f"/v1/files/{done.json()['id']}/parts/1", content=b"abc", headers=api.auth())
        assert (await api.client.post(f"/v1/files/{done.json()['id']}/complete", headers=api.auth())).status_code == 200
        await api.client.post("/v1/files", json={"filename": "b", "sizeBytes": 40_000}, headers=api.auth())
        deferred = await api.client.post(
            "/files",
            content=b"12345",
            headers={
                **api.auth(),
                "Tus-Resumable": "1.0.0",
                "Upload-Defer-Length": "1",
                "Content-Type": "application/offset+octet-stream",
            },
        )
        assert deferred.status_code == 201, deferred.text
        counted = await _usage(api)
        # Pending: the declared 40,000 and the 5 bytes received by the one whose length is not known yet.
        assert (counted["pendingUploads"], counted["pendingBytes"], counted["storedBytes"]) == (2, 40_005, 3)
        assert await _usage(api, "bob") == empty  # another owner's holdings are not counted, nor shown


async def test_without_quotas_the_limits_are_null(make_api: MakeApi) -> None:
    async with make_api() as api:
        assert (await _usage(api))["limits"] == {
            "maxPendingUploads": None,
            "maxPendingBytes": None,
            "maxStoredBytes": None,
        }


async def test_a_link_token_and_a_key_without_files_read_are_refused(make_api: MakeApi) -> None:
    async with make_api() as api:
        _, admin = await api.runtime.keys.create("alice", "files:create,links:admin")
        link = await api.client.post("/v1/upload-links", json={}, headers={"Authorization": f"Bearer {admin}"})
        token = link.json()["url"].split("#link=", 1)[1]
        for key in (token, admin):
            refused = await api.client.get("/v1/usage", headers={"Authorization": f"Bearer {key}"})
            assert refused.status_code == 403, refused.text
            assert refused.json()["error"]["code"] in ("forbidden", "missing_scope")
        assert (await api.client.get("/v1/usage")).status_code == 401
