"""UploadService.rename: a display name (and media type) set after creation, owner-scoped."""

from __future__ import annotations

import pytest

from chunkd.domain import errors as e
from tests.conftest import Api


async def test_rename_cleans_persists_and_is_owner_scoped(api: Api) -> None:
    service = api.runtime.uploads
    upload = await service.create("alice", filename="blob", size_bytes=3, part_size=3)
    renamed = await service.rename("alice", upload.id, " report/2024.pdf ", mime_type="application/pdf")
    assert renamed.filename == "report_2024.pdf" and renamed.mime_type == "application/pdf"
    stored = await service.get("alice", upload.id)
    assert stored.filename == "report_2024.pdf" and stored.mime_type == "application/pdf"
    same = await service.rename("alice", upload.id, "report_2024.pdf")
    assert same.updated_at == stored.updated_at  # nothing changed, nothing written
    with pytest.raises(e.NotFound):
        await service.rename("bob", upload.id, "mine.pdf")
    with pytest.raises(e.InvalidInput) as bad_name:
        await service.rename("alice", upload.id, "..")
    assert bad_name.value.field == "filename"
    with pytest.raises(e.InvalidInput) as bad_type:
        await service.rename("alice", upload.id, "a.pdf", mime_type="text/\x00html")
    assert bad_type.value.field == "mimeType"
