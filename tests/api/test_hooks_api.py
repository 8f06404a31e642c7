"""Blocking hooks through the in-process app (SQLite and PostgreSQL) against a real hook service
process: pre-create refusals reach each dialect in its own error shape, pre-create metadata,
pre-finish refusals that leave the upload resumable, pre-finish results returned again on a
repeated complete, pre-download refusals, and the failure policy."""

from __future__ import annotations

import base64
import hashlib
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from chunkd.settings import Settings
from tests.conftest import Api, settings_with
from tests.support.hook_server import HookServer
from tests.support.server import free_port

TUS = {"Tus-Resumable": "1.0.0"}


@pytest.fixture
def hooks(tmp_path: Path) -> Iterator[HookServer]:
    with HookServer(tmp_path / "hooks", free_port()) as server:
        yield server


SECRET = "whsec_" + base64.b64encode(b"h" * 32).decode()


@pytest.fixture
def hook_secret() -> str | None:
    """Unsigned calls, unless a test parametrizes this."""
    return None


@pytest.fixture
def settings(settings: Settings, hooks: HookServer, hook_secret: str | None) -> Settings:
    # The hook service is a process of its own: on a loaded machine it may take seconds to answer, and
    # no test here relies on the timeout (the failure-policy test stops the service: refused at once).
    return settings_with(settings, hook_url=hooks.url, hook_timeout_seconds=120, hook_secret=hook_secret)


def b64(value: str) -> str:
    return base64.b64encode(value.encode()).decode()


async def test_pre_create_refusal_in_each_dialects_shape(api: Api, hooks: HookServer) -> None:
    hooks.rules({"pre-create": {"secret.exe": {"reject": True, "status": 403, "message": "no executables here"}}})
    native = await api.client.post("/v1/files", json={"filename": "secret.exe", "sizeBytes": 3}, headers=api.auth())
    assert native.status_code == 403
    assert native.json()["error"] == {"code": "rejected_by_hook", "message": "no executables here", "field": "hook"}
    tus = await api.client.post(
        "/files",
        headers={**TUS, **api.auth(), "Upload-Length": "3", "Upload-Metadata": f"filename {b64('secret.exe')}"},
    )
    assert tus.status_code == 403 and tus.text.strip() == "rejected_by_hook: no executables here"
    assert tus.headers["tus-resumable"] == "1.0.0"
    listed = await api.client.get("/v1/files", headers=api.auth())
    assert listed.json()["data"] == []  # nothing was created
    calls = hooks.calls()
    assert [c["hook"] for c in calls] == ["pre-create", "pre-create"]
    assert calls[0]["owner"] == "alice" and calls[0]["upload"]["filename"] == "secret.exe"
    assert {c["upload"]["frontend"] for c in calls} == {"native", "tus"}
    allowed = await api.client.post("/v1/files", json={"filename": "fine.txt", "sizeBytes": 3}, headers=api.auth())
    assert allowed.status_code == 201


async def test_a_hook_call_carries_the_request_id(api: Api, hooks: HookServer) -> None:
    """The hook service can name, in its own logs, the request it was asked about: the id of the
    request's access line and X-Request-Id (the client's, or the one chunkd made)."""
    given = await api.client.post(
        "/v1/files", json={"filename": "a.txt", "sizeBytes": 3}, headers={**api.auth(), "X-Request-Id": "trace-9"}
    )
    made = await api.client.post("/v1/files", json={"filename": "b.txt", "sizeBytes": 3}, headers=api.auth())
    assert given.status_code == made.status_code == 201
    assert [call["_request_id"] for call in hooks.calls()] == ["trace-9", made.headers["x-request-id"]]


async def test_hook_calls_are_unsigned_without_a_secret(api: Api, hooks: HookServer) -> None:
    made = await api.client.post("/v1/files", json={"filename": "a.txt", "sizeBytes": 3}, headers=api.auth())
    assert made.status_code == 201
    assert [call["_signed"] for call in hooks.calls()] == [{}]


@pytest.mark.parametrize("hook_secret", [SECRET])
async def test_hook_calls_are_signed_with_the_hook_secret(api: Api, hooks: HookServer) -> None:
    """With CHUNKD_HOOK_SECRET each call is a Standard Webhooks message: a receiver's library verifies
    it with the secret, and refuses it with another secret or with the body changed."""
    for name in ("a.txt", "b.txt"):
        made = await api.client.post("/v1/files", json={"filename": name, "sizeBytes": 3}, headers=api.auth())
        assert made.status_code == 201
    calls = hooks.calls()
    assert [call["hook"] for call in calls] == ["pre-create", "pre-create"]
    for call in calls:
        assert Webhook(SECRET).verify(call["_body"], call["_signed"])["upload"] == call["upload"]
        with pytest.raises(WebhookVerificationError):
            Webhook("whsec_" + base64.b64encode(b"x" * 32).decode()).verify(call["_body"], call["_signed"])
        with pytest.raises(WebhookVerificationError):
            Webhook(SECRET).verify(call["_body"].replace("alice", "mallory"), call["_signed"])
    assert calls[0]["_signed"]["webhook-id"] != calls[1]["_signed"]["webhook-id"]


def test_a_hook_secret_not_in_the_standard_webhooks_form_is_refused_at_start(settings: Settings) -> None:
    with pytest.raises(ValueError, match="CHUNKD_HOOK_SECRET must be whsec_"):
        settings_with(settings, hook_secret="plain-password-of-enough-length-here")


async def test_pre_create_sets_metadata_and_status_maps(api: Api, hooks: HookServer) -> None:
    hooks.rules(
        {
            "pre-create": {
                "tagged.txt": {"metadata": {"project": "apollo"}},
                "bad.txt": {"reject": True, "status": 422, "message": "name not allowed"},
            }
        }
    )
    made = await api.client.post("/v1/files", json={"filename": "tagged.txt", "sizeBytes": 1}, headers=api.auth())
    upload = await api.runtime.repo.get(made.json()["id"])
    assert upload is not None and upload.metadata["project"] == "apollo"
    bad = await api.client.post("/v1/files", json={"filename": "bad.txt", "sizeBytes": 1}, headers=api.auth())
    assert bad.status_code == 400 and bad.json()["error"]["message"] == "name not allowed"


async def test_pre_finish_refusal_leaves_the_upload_resumable_and_the_result_is_kept(
    api: Api, hooks: HookServer
) -> None:
    data = b"quarterly report"
    made = await api.client.post("/v1/files", json={"filename": "r.txt", "sizeBytes": len(data)}, headers=api.auth())
    file_id = made.json()["id"]
    assert (await api.client.put(f"/v1/files/{file_id}/parts/1", content=data, headers=api.auth())).status_code == 200
    hooks.rules({"pre-finish": {"*": {"reject": True, "status": 409, "message": "still processing, retry"}}})
    refused = await api.client.post(f"/v1/files/{file_id}/complete", headers=api.auth())
    assert refused.status_code == 409 and refused.json()["error"]["message"] == "still processing, retry"
    pending = (await api.client.get(f"/v1/files/{file_id}", headers=api.auth())).json()
    assert pending["status"] == "PENDING" and pending["bytesReceived"] == len(data)

    hooks.rules({"pre-finish": {"*": {"result": {"thumbnail": "t/1.png", "pages": 3}}}})
    done = await api.client.post(f"/v1/files/{file_id}/complete", headers=api.auth())
    assert done.status_code == 200, done.text
    assert done.json()["status"] == "COMPLETED" and done.json()["preFinish"] == {"thumbnail": "t/1.png", "pages": 3}
    hooks.rules({"pre-finish": {"*": {"reject": True, "message": "would refuse now"}}})
    again = await api.client.post(f"/v1/files/{file_id}/complete", headers=api.auth())
    assert again.status_code == 200 and again.json() == done.json()  # stored, not asked again
    assert [c["hook"] for c in hooks.calls()].count("pre-finish") == 2
    content = await api.client.get(f"/v1/files/{file_id}/content", headers=api.auth())
    assert content.status_code == 200 and hashlib.md5(content.content).hexdigest() == hashlib.md5(data).hexdigest()


async def test_pre_download_refusal(api: Api, hooks: HookServer) -> None:
    made = await api.client.post("/v1/files", json={"filename": "d.txt", "sizeBytes": 2}, headers=api.auth())
    file_id = made.json()["id"]
    await api.client.put(f"/v1/files/{file_id}/parts/1", content=b"hi", headers=api.auth())
    assert (await api.client.post(f"/v1/files/{file_id}/complete", headers=api.auth())).status_code == 200
    hooks.rules({"pre-download": {"d.txt": {"reject": True, "status": 403, "message": "embargoed until Monday"}}})
    native = await api.client.get(f"/v1/files/{file_id}/content", headers=api.auth())
    assert native.status_code == 403 and native.json()["error"]["message"] == "embargoed until Monday"
    made_tus = await api.client.post(
        "/files", headers={**TUS, **api.auth(), "Upload-Length": "2", "Upload-Metadata": f"filename {b64('d.txt')}"}
    )
    location = made_tus.headers["location"]
    patched = await api.client.patch(
        location,
        content=b"hi",
        headers={**TUS, **api.auth(), "Upload-Offset": "0", "Content-Type": "application/offset+octet-stream"},
    )
    assert patched.status_code == 204, patched.text
    tus = await api.client.get(location, headers={**TUS, **api.auth()})
    assert tus.status_code == 403 and "embargoed" in tus.text


async def test_failure_policy_rejects_as_retryable(
    api: Api, hooks: HookServer, caplog: pytest.LogCaptureFixture
) -> None:
    hooks.rules({"pre-create": {"*": {"http_status": 500}}})
    with caplog.at_level(logging.WARNING, logger="chunkd.service.hooks"):
        response = await api.client.post(
            "/v1/files", json={"filename": "x.txt", "sizeBytes": 1}, headers={**api.auth(), "X-Request-Id": "trace-5"}
        )
    assert response.status_code == 409 and response.json()["error"]["code"] == "hook_unavailable"
    assert response.headers["retry-after"] == "1"
    # The warning names the request the client was refused (its answer's X-Request-Id).
    assert any(
        "pre-create hook failed" in r.getMessage() and "request id trace-5" in r.getMessage() for r in caplog.records
    )
    hooks.stop()
    down = await api.client.post("/v1/files", json={"filename": "x.txt", "sizeBytes": 1}, headers=api.auth())
    assert down.status_code == 409 and down.json()["error"]["code"] == "hook_unavailable"


async def test_tus_patch_that_fills_an_upload_keeps_its_bytes_when_pre_finish_refuses(
    api: Api, hooks: HookServer
) -> None:
    hooks.rules({"pre-finish": {"*": {"reject": True, "status": 403, "message": "not yet"}}})
    headers = {**TUS, **api.auth()}
    made = await api.client.post(
        "/files", headers={**headers, "Upload-Length": "10", "Upload-Metadata": f"filename {b64('t.txt')}"}
    )
    location = made.headers["location"]
    patch = {**headers, "Content-Type": "application/offset+octet-stream"}
    first = await api.client.patch(location, content=b"01234", headers={**patch, "Upload-Offset": "0"})
    assert first.status_code == 204
    last = await api.client.patch(location, content=b"56789", headers={**patch, "Upload-Offset": "5"})
    assert last.status_code == 403 and "not yet" in last.text
    head = await api.client.head(location, headers=headers)
    assert head.status_code == 200 and head.headers["upload-offset"] == "10"  # the refused PATCH's bytes are kept
    file_id = location.rsplit("/", 1)[1]
    assert (await api.client.get(f"/v1/files/{file_id}", headers=api.auth())).json()["status"] == "PENDING"

    hooks.rules({})
    finish = await api.client.patch(location, content=b"", headers={**patch, "Upload-Offset": "10"})
    assert finish.status_code == 204, finish.text
    done = await api.client.get(location, headers=headers)
    assert done.status_code == 200 and done.content == b"0123456789"
