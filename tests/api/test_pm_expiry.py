"""A pm upload is an ordinary engine upload: left idle past its TTL it expires, and Fine Uploader
is told to start the file over ("reset"), which makes it anew under the same qquuid."""

from __future__ import annotations

import os
import uuid
from datetime import timedelta

import pytest

from chunkd.settings import Settings
from tests.api.test_pm_api import CHUNK, assert_reset, finished, send_chunk, upload_chunks
from tests.conftest import Api

TTL = 60.0


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return settings.model_copy(update={"upload_ttl_seconds": TTL})


async def test_idle_pm_upload_expires(api: Api) -> None:
    data = os.urandom(4000)
    file_uuid = str(uuid.uuid4())
    assert (await send_chunk(api, data, 0, file_uuid)).status_code == 200
    # The engine's clock moves past the TTL (a real wait would race a loaded machine).
    real_clock = api.runtime.uploads.clock
    api.runtime.uploads.clock = lambda: real_clock() + timedelta(seconds=TTL + 1)
    assert await api.runtime.uploads.expire_due() == 1
    upload = await api.runtime.uploads.find("alice", "pm", file_uuid)
    assert upload is not None and upload.status.value == "EXPIRED"
    body = assert_reset(await send_chunk(api, data, 1, file_uuid), 410)
    assert body["code"] == "upload_expired"
    # Said with the qquuid the client knows, never the engine's id of the file.
    assert body["error"] == f"the file with qquuid {file_uuid} has expired" and upload.id not in body["error"]
    done = await api.client.post(
        "/api/v2/pm/upload/?done", data={"qquuid": file_uuid, "qqfilename": "x"}, headers=api.auth()
    )
    assert assert_reset(done, 410)["code"] == "upload_expired"
    assert done.json()["error"] == f"the file with qquuid {file_uuid} has expired"


async def test_a_pm_upload_past_its_expiry_is_expired_before_the_reaper_records_it(api: Api) -> None:
    """Every answer about it says so at once (as the chunk and DELETE answers did): its info shows
    EXPIRED, not PENDING; done and the download are a 410, not "chunks not received" or "PENDING".
    A file whose size no chunk told is no exception."""
    data = os.urandom(4000)
    file_uuid = str(uuid.uuid4())
    assert (await send_chunk(api, data, 0, file_uuid)).status_code == 200
    real_clock = api.runtime.uploads.clock
    api.runtime.uploads.clock = lambda: real_clock() + timedelta(seconds=TTL + 1)  # no reaper run
    info = await api.client.get(f"/api/v2/pm/upload/{file_uuid}/info", headers=api.auth())
    assert info.status_code == 200 and info.json()["status"] == "EXPIRED"
    for form in (
        {"qquuid": file_uuid, "qqfilename": "x"},
        {"qquuid": file_uuid, "qqfilename": "x", "qqtotalfilesize": "9"},
    ):
        done = await api.client.post("/api/v2/pm/upload/?done", data=form, headers=api.auth())
        assert assert_reset(done, 410)["code"] == "upload_expired", done.text
    download = await api.client.get(f"/api/v2/pm/upload/{file_uuid}", headers=api.auth())
    assert download.status_code == 410 and file_uuid in download.text, download.text


@pytest.mark.parametrize("end", ["expired", "due", "cancelled"])
async def test_a_dead_file_started_over_from_chunk_0_is_made_anew_under_its_qquuid(api: Api, end: str) -> None:
    """What Fine Uploader does after a reset: chunk 0 again, same qquuid, then the rest and done."""
    data = os.urandom(3 * CHUNK)
    file_uuid = str(uuid.uuid4())
    await upload_chunks(api, data, file_uuid, order=[0, 1])
    old = await api.runtime.uploads.find("alice", "pm", file_uuid)
    assert old is not None
    if end == "cancelled":
        await api.runtime.uploads.cancel("alice", old.id)
    else:
        real_clock = api.runtime.uploads.clock
        api.runtime.uploads.clock = lambda: real_clock() + timedelta(seconds=TTL + 1)
        if end == "expired":
            assert await api.runtime.uploads.expire_due() == 1
    assert_reset(await send_chunk(api, data, 2, file_uuid), 409 if end == "cancelled" else 410)
    await upload_chunks(api, data, file_uuid)  # from chunk 0
    assert await finished(api, file_uuid, "again.bin") == data
    new = await api.runtime.uploads.find("alice", "pm", file_uuid)
    assert new is not None and new.id != old.id and new.status.value == "COMPLETED"
