"""Races between the requests that end an upload, each held at a step (no sleeps): a cancel that
meets a complete under way, a complete that meets a cancel under way, a complete retried while the
first is still running. Whatever the order, the outcome is one of the serial ones, and a retried
complete gets the first one's answer."""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import os
from typing import Any

import pytest

from tests.conftest import Api
from tests.support.held import Held


async def uploaded(api: Api, data: bytes) -> str:
    created = await api.client.post(
        "/v1/files", json={"filename": "f.bin", "sizeBytes": len(data), "partSize": 100_000}, headers=api.auth()
    )
    file_id: str = created.json()["id"]
    for number in range(1, -(-len(data) // 100_000) + 1):
        piece = data[(number - 1) * 100_000 : number * 100_000]
        sent = await api.client.put(f"/v1/files/{file_id}/parts/{number}", content=piece, headers=api.auth())
        assert sent.status_code == 200, sent.text
    return file_id


async def test_a_cancel_during_a_complete_is_refused_and_the_file_kept(
    api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = os.urandom(250_000)
    file_id = await uploaded(api, data)
    finishing = Held(monkeypatch, api.runtime.uploads.blobs, "complete")
    complete = asyncio.create_task(api.client.post(f"/v1/files/{file_id}/complete", json={}, headers=api.auth()))
    await finishing.reached.wait()
    cancel = asyncio.create_task(api.client.post(f"/v1/files/{file_id}/cancel", headers=api.auth()))
    finishing.gate.set()
    done, refused = await complete, await cancel
    assert done.status_code == 200 and done.json()["status"] == "COMPLETED", done.text
    assert refused.status_code == 409 and refused.json()["error"]["code"] == "invalid_state", refused.text
    state = (await api.client.get(f"/v1/files/{file_id}", headers=api.auth())).json()
    assert state["status"] == "COMPLETED"
    assert (await api.client.get(f"/v1/files/{file_id}/content", headers=api.auth())).content == data


async def test_a_complete_during_a_cancel_is_refused_and_nothing_is_left(
    api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = os.urandom(250_000)
    file_id = await uploaded(api, data)
    freeing = Held(monkeypatch, api.runtime.uploads.blobs, "delete")  # after the CANCELLED commit
    cancel = asyncio.create_task(api.client.post(f"/v1/files/{file_id}/cancel", headers=api.auth()))
    await freeing.reached.wait()
    complete = asyncio.create_task(api.client.post(f"/v1/files/{file_id}/complete", json={}, headers=api.auth()))
    freeing.gate.set()
    cancelled, refused = await cancel, await complete
    assert cancelled.status_code == 200 and cancelled.json()["status"] == "CANCELLED", cancelled.text
    assert refused.status_code == 409, refused.text
    state = (await api.client.get(f"/v1/files/{file_id}", headers=api.auth())).json()
    assert (state["status"], state["parts"]) == ("CANCELLED", [])
    again = await api.client.post(f"/v1/files/{file_id}/cancel", headers=api.auth())
    assert again.status_code == 200 and again.json() == cancelled.json()  # a cancel sent again: its answer


async def test_a_complete_retried_while_the_first_runs_gets_the_same_answer(
    api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The client gave up on the first complete (a timeout) and sends it again while the server
    still works on it: the retry waits its turn and answers as the first did (or says busy, with
    Retry-After, when the first outlasts the lock wait); never a second, different result."""
    data = os.urandom(250_000)
    md5 = hashlib.md5(data).hexdigest()
    file_id = await uploaded(api, data)
    finishing = Held(monkeypatch, api.runtime.uploads.blobs, "complete")
    first = asyncio.create_task(api.client.post(f"/v1/files/{file_id}/complete", json={"md5": md5}, headers=api.auth()))
    await finishing.reached.wait()
    retry = asyncio.create_task(api.client.post(f"/v1/files/{file_id}/complete", json={"md5": md5}, headers=api.auth()))
    finishing.gate.set()
    answers = [await first, await retry]
    assert [a.status_code for a in answers] == [200, 200], answers[1].text
    assert answers[0].json() == answers[1].json()
    assert (await api.client.get(f"/v1/files/{file_id}", headers=api.auth())).json()["md5"] == md5
    later = await api.client.post(f"/v1/files/{file_id}/complete", json={"md5": md5}, headers=api.auth())
    assert later.status_code == 200 and later.json() == answers[0].json()


async def test_a_complete_retried_past_the_lock_wait_is_busy_with_retry_after(
    api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = os.urandom(250_000)
    file_id = await uploaded(api, data)
    service = api.runtime.uploads
    monkeypatch.setattr(service, "config", dataclasses.replace(service.config, lock_timeout=0.05))
    finishing = Held(monkeypatch, api.runtime.uploads.blobs, "complete")
    first = asyncio.create_task(api.client.post(f"/v1/files/{file_id}/complete", json={}, headers=api.auth()))
    await finishing.reached.wait()
    busy = await api.client.post(f"/v1/files/{file_id}/complete", json={}, headers=api.auth())
    assert busy.status_code == 409 and busy.json()["error"]["code"] == "upload_busy", busy.text
    assert int(busy.headers["retry-after"]) > 0
    finishing.gate.set()
    done = await first
    assert done.status_code == 200, done.text
    again = await api.client.post(f"/v1/files/{file_id}/complete", json={}, headers=api.auth())
    assert again.status_code == 200 and again.json() == done.json()


async def test_a_create_retried_while_the_first_runs_through_a_full_link_gets_its_upload(
    api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same create (same Idempotency-Key) sent again while the first is still being stored,
    through a link that takes one file: the retry is answered with the first one's upload, not
    refused for the link's maxFiles the first one took; the link counts one file."""
    _, key = await api.runtime.keys.create("alice", "files:create,files:read,links:admin")
    owner = {"Authorization": f"Bearer {key}"}
    link = (await api.client.post("/v1/upload-links", json={"maxFiles": 1}, headers=owner)).json()
    partner = {"Authorization": f"Bearer {link['url'].split('#link=', 1)[1]}", "Idempotency-Key": "k1"}
    storing = Held(monkeypatch, api.runtime.uploads.repo, "create")
    locks = api.runtime.uploads.locks
    real_hold = locks.hold
    waited = asyncio.Event()

    def hold(upload_id: str, *, timeout: float) -> Any:
        waited.set()  # only the retry asks for a lock while the first is held
        return real_hold(upload_id, timeout=timeout)

    body = {"filename": "a.bin", "sizeBytes": 10}
    first = asyncio.create_task(api.client.post("/v1/files", json=body, headers=partner))
    await storing.reached.wait()
    monkeypatch.setattr(locks, "hold", hold)
    retry = asyncio.create_task(api.client.post("/v1/files", json=body, headers=partner))
    settled = asyncio.create_task(waited.wait())
    await asyncio.wait({retry, settled}, return_when=asyncio.FIRST_COMPLETED)  # refused, or waiting its turn
    settled.cancel()
    storing.gate.set()
    made, again = await first, await retry
    assert made.status_code == 201, made.text
    assert again.status_code == 201 and again.json()["id"] == made.json()["id"], again.text
    counted = (await api.client.get(f"/v1/upload-links/{link['id']}", headers=owner)).json()
    assert counted["filesUploaded"] == 1
