"""Deleting through tus or the IETF draft with files:create only: allowed while the upload is
unfinished (ending one's own upload is part of uploading), refused once it is finished (that
needs files:delete). The status is judged under the upload's lock, where the delete happens: an
upload that a concurrent PATCH finishes between the DELETE's first look and its delete is kept.
It used to be deleted — a finished file lost to a credential without files:delete."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

import pytest

from chunkd.domain.upload import Status
from tests.security.conftest import MakeApi

TUS = {"Tus-Resumable": "1.0.0"}
DIALECTS = {
    "tus": TUS,
    "draft": {"Upload-Draft-Interop-Version": "6"},
}
KEYS = {"alice": ("alice", "files:create,files:read")}


async def _ten() -> AsyncIterator[bytes]:
    yield b"0123456789"


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
@pytest.mark.parametrize("dialect", sorted(DIALECTS))
async def test_an_upload_finished_during_a_delete_is_kept(
    make_api: MakeApi, monkeypatch: pytest.MonkeyPatch, dialect: str
) -> None:
    async with make_api(keys=KEYS) as api:
        made = await api.client.post("/files", headers={**api.auth(), **TUS, "Upload-Length": "10"})
        assert made.status_code == 201, made.text
        upload_id = made.headers["location"].rsplit("/", 1)[1]

        takeover = api.runtime.takeover
        real = takeover.take_over

        @asynccontextmanager
        async def finished_meanwhile(upload_id: str, **kwargs: Any) -> AsyncIterator[Any]:
            # The PATCH that fills the upload lands after the DELETE looked at it, before it deletes.
            await api.runtime.uploads.append("alice", upload_id, 0, _ten(), finish=True)
            manager: AbstractAsyncContextManager[Any] = real(upload_id, **kwargs)
            async with manager as writer:
                yield writer

        monkeypatch.setattr(takeover, "take_over", finished_meanwhile)
        refused = await api.client.delete(f"/files/{upload_id}", headers={**api.auth(), **DIALECTS[dialect]})
        monkeypatch.undo()

        assert refused.status_code == 403, refused.text
        assert "files:delete" in refused.text
        kept = await api.runtime.uploads.get("alice", upload_id)
        assert kept.status is Status.COMPLETED and kept.size_bytes == 10
        download = await api.client.get(f"/files/{upload_id}", headers=api.auth())
        assert download.status_code == 200 and download.content == b"0123456789"


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
@pytest.mark.parametrize("dialect", sorted(DIALECTS))
async def test_an_unfinished_upload_is_still_ended_with_files_create(make_api: MakeApi, dialect: str) -> None:
    async with make_api(keys=KEYS) as api:
        made = await api.client.post("/files", headers={**api.auth(), **TUS, "Upload-Length": "10"})
        upload_id = made.headers["location"].rsplit("/", 1)[1]
        ended = await api.client.delete(f"/files/{upload_id}", headers={**api.auth(), **DIALECTS[dialect]})
        assert ended.status_code == 204, ended.text
        assert await api.runtime.uploads.list_uploads("alice") == []
