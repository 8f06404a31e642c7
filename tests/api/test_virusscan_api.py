"""The built-in virus scan (CHUNKD_CLAMD) against a real clamd with an EICAR-only signature
database: an infected upload is refused naming the signature, its bytes are removed and
``upload.rejected`` is written; a clean file completes."""

from __future__ import annotations

import base64
import hashlib
import logging
import os
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select

from chunkd.app import create_app
from chunkd.backends.repository.sqlalchemy.tables import events
from chunkd.settings import Settings
from tests.conftest import Api, settings_with
from tests.support.clamd import EICAR, Clamd

TUS = {"Tus-Resumable": "1.0.0"}


@pytest.fixture
def settings(settings: Settings, clamd: Clamd) -> Settings:
    return settings_with(settings, clamd=str(clamd.socket))


async def upload(api: Api, data: bytes, part_size: int) -> str:
    made = await api.client.post(
        "/v1/files", json={"filename": "f.bin", "sizeBytes": len(data), "partSize": part_size}, headers=api.auth()
    )
    file_id: str = made.json()["id"]
    for number, start in enumerate(range(0, len(data), part_size), 1):
        chunk = data[start : start + part_size]
        put = await api.client.put(f"/v1/files/{file_id}/parts/{number}", content=chunk, headers=api.auth())
        assert put.status_code == 200, put.text
    return file_id


async def event_types(api: Api, file_id: str) -> list[str]:
    async with api.runtime.repo.engine.connect() as conn:
        rows = await conn.execute(select(events.c.type).where(events.c.upload_id == file_id).order_by(events.c.seq))
        return list(rows.scalars())


async def test_infected_upload_is_refused_and_removed(api: Api) -> None:
    # The EICAR bytes split over two parts: clamd sees the stored file, not one request.
    file_id = await upload(api, EICAR, 40)
    stored = await api.runtime.repo.get(file_id)
    assert stored is not None and len(stored.parts) == 2
    refused = await api.client.post(f"/v1/files/{file_id}/complete", headers=api.auth())
    assert refused.status_code == 400, refused.text
    error = refused.json()["error"]
    assert error["code"] == "content_rejected" and error["reason"] == "virus"
    assert error["signature"] == "Eicar-Test-Signature.UNOFFICIAL" and "Eicar-Test-Signature" in error["message"]
    view = (await api.client.get(f"/v1/files/{file_id}", headers=api.auth())).json()
    assert view["status"] == "CANCELLED" and view["parts"] == []
    assert await api.runtime.blobs.delete(stored) is None  # idempotent; nothing left to read:
    with pytest.raises(Exception):  # noqa: B017 - the store's own missing-blob error
        async for _ in api.runtime.blobs.read_part(stored, stored.parts[1]):
            pass
    assert await event_types(api, file_id) == ["upload.created", "upload.rejected"]
    async with api.runtime.repo.engine.connect() as conn:
        payload = (await conn.execute(select(events.c.payload).where(events.c.type == "upload.rejected"))).scalar_one()
    assert payload["data"]["rejection"] == {"reason": "virus", "signature": "Eicar-Test-Signature.UNOFFICIAL"}
    again = await api.client.post(f"/v1/files/{file_id}/complete", headers=api.auth())
    assert again.status_code == 409  # cancelled for good


async def test_clean_file_completes(api: Api) -> None:
    data = os.urandom(700 * 1024)  # several of the scanner's 256 KiB stream chunks
    file_id = await upload(api, data, 300 * 1024)
    done = await api.client.post(
        f"/v1/files/{file_id}/complete", json={"md5": hashlib.md5(data).hexdigest()}, headers=api.auth()
    )
    assert done.status_code == 200, done.text
    upload_row = await api.runtime.repo.get(file_id)
    assert upload_row is not None and upload_row.metadata["virusScan"] == {"scanner": "clamd", "result": "clean"}
    assert await event_types(api, file_id) == ["upload.created", "upload.completed"]


async def test_tus_client_sees_the_refusal_in_its_shape(api: Api) -> None:
    made = await api.client.post(
        "/files",
        headers={
            **TUS,
            **api.auth(),
            "Upload-Length": str(len(EICAR)),
            "Upload-Metadata": "filename " + base64.b64encode(b"eicar.com").decode(),
        },
    )
    location = made.headers["location"]
    patched = await api.client.patch(
        location,
        content=EICAR,
        headers={**TUS, **api.auth(), "Upload-Offset": "0", "Content-Type": "application/offset+octet-stream"},
    )
    assert patched.status_code == 400 and "Eicar-Test-Signature" in patched.text
    head = await api.client.head(location, headers={**TUS, **api.auth()})
    assert head.status_code in (404, 410)


async def test_the_start_says_whether_clamd_answers(
    settings: Settings, clamd: Clamd, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A scanner set to the wrong place showed only when the first completion was refused; the
    start now says so, and starts all the same (clamd may come up after chunkd)."""
    nowhere = tmp_path / "no-clamd.sock"
    for address, said in (
        (str(clamd.socket), f"virus scan: clamd at {clamd.socket} answers"),
        (str(nowhere), f"virus scan: clamd at {nowhere} does not answer ("),
    ):
        caplog.clear()
        app = create_app(settings_with(settings, clamd=address))
        with caplog.at_level(logging.INFO, logger="chunkd.startup"):
            async with app.router.lifespan_context(app):
                pass
        lines = [r for r in caplog.records if r.name == "chunkd.startup" and "virus scan" in r.getMessage()]
        assert len(lines) == 1 and lines[0].getMessage().startswith(said), [r.getMessage() for r in lines]
    assert lines[0].levelno == logging.WARNING and "refused (409 scan_unavailable)" in lines[0].getMessage()


async def test_clamd_away_refuses_completions_as_retryable_and_they_complete_once_it_is_back(
    settings: Settings, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """clamd stops (a restart, a crash) while uploads are being finished: each completion is
    refused as retryable, nothing received is lost, and once clamd answers again the same
    completions go through with the file's MD5. Every refused completion wrote a warning (its
    clients retry each second: a line per client per second for the whole outage); the outage is
    now said when it begins and when it ends."""
    caplog.set_level(logging.INFO, logger="chunkd.service.virusscan")
    own = Clamd(tmp_path / "own-clamd").start()
    try:
        app = create_app(settings_with(settings, clamd=str(own.socket)))
        async with app.router.lifespan_context(app):
            _, key = await app.state.chunkd.keys.create("alice", "files:create,files:read")
            auth = {"Authorization": f"Bearer {key}"}
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://testserver", headers=auth) as client:
                api = Api(client, app.state.chunkd, {"alice": key})
                data = os.urandom(3000)
                native = await upload(api, data, 1000)
                tus = (await client.post("/files", headers={**TUS, "Upload-Length": str(len(data))})).headers[
                    "location"
                ]
                own.stop()
                caplog.clear()
                for _ in range(3):
                    refused = await client.post(f"/v1/files/{native}/complete")
                    assert refused.status_code == 409 and refused.headers["retry-after"], refused.text
                    assert refused.json()["error"]["code"] == "scan_unavailable"
                append = {**TUS, "Content-Type": "application/offset+octet-stream", "Upload-Offset": "0"}
                last = await client.patch(tus, content=data, headers=append)
                assert last.status_code == 423 and "scan_unavailable" in last.text, last.text  # tus: try again
                own.start()
                done = await client.post(f"/v1/files/{native}/complete")
                assert done.status_code == 200, done.text
                head = await client.head(tus, headers=TUS)  # completes what the PATCH received
                assert head.status_code == 200 and head.headers["upload-offset"] == str(len(data))
                for file_id in (native, tus.rsplit("/", 1)[1]):
                    found = (await client.get(f"/v1/files/{file_id}")).json()
                    assert found["status"] == "COMPLETED" and found["md5"] == hashlib.md5(data).hexdigest()
    finally:
        own.stop()
    said = [
        r.getMessage() for r in caplog.records if r.name == "chunkd.service.virusscan" and r.levelno >= logging.INFO
    ]
    assert len(said) == 2, said
    assert said[0].startswith(f"virus scan of {native} failed: cannot reach clamd"), said
    assert said[1] == f"virus scan: clamd at {own.socket} answering again", said
