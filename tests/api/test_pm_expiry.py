"""A pm upload is an ordinary engine upload: left idle past its TTL it expires, and Fine Uploader
is told not to retry."""

from __future__ import annotations

import os
import uuid
from datetime import timedelta

import pytest

from chunkd.settings import Settings
from tests.api.test_pm_api import assert_fine_uploader_error, send_chunk
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
    body = assert_fine_uploader_error(await send_chunk(api, data, 1, file_uuid), 410, field="qquuid")
    assert body["code"] == "upload_expired"
    # Said with the qquuid the client knows, never the engine's id of the file.
    assert body["error"] == f"the file with qquuid {file_uuid} has expired" and upload.id not in body["error"]
    done = await api.client.post(
        "/api/v2/pm/upload/?done", data={"qquuid": file_uuid, "qqfilename": "x"}, headers=api.auth()
    )
    assert assert_fine_uploader_error(done, 410, field="qquuid")["code"] == "upload_expired"
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
        assert assert_fine_uploader_error(done, 410, field="qquuid")["code"] == "upload_expired", done.text
    download = await api.client.get(f"/api/v2/pm/upload/{file_uuid}", headers=api.auth())
    assert download.status_code == 410 and file_uuid in download.text, download.text
