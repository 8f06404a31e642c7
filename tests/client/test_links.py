"""Upload links through the SDK: made with limits, listed without their URL, used by a partner's
client (the link's token as its key) within those limits, and revoked, after which the token is
refused at once."""

from __future__ import annotations

from pathlib import Path

import pytest

from chunkd.client import AuthenticationError, PermissionDenied
from tests.client.conftest import Sdk


async def test_a_link_made_listed_used_within_its_limits_and_revoked(sdk: Sdk, tmp_path: Path) -> None:
    _, admin = await sdk.runtime.keys.create("alice", "links:admin,files:create,files:read")
    async with sdk.client(key=admin) as owner:
        link = await owner.create_upload_link(
            expires_in=3600, max_files=1, max_bytes=10_000, allowed_mime_types=["text/plain"], note="for the May issue"
        )
        assert link.url is not None and "#link=cl_" in link.url
        assert (link.max_files, link.max_bytes, link.allowed_mime_types) == (1, 10_000, ("text/plain",))
        assert link.note == "for the May issue" and link.revoked_at is None and link.expires_at is not None
        listed = await owner.upload_links()
        assert [(item.id, item.url) for item in listed] == [(link.id, None)]  # the URL is shown once

        token = link.url.split("#link=", 1)[1]
        source = tmp_path / "notes.txt"
        source.write_bytes(b"a partner's file\n" * 100)
        async with sdk.client(key=token, remember=False) as partner:
            done = await partner.upload(source)
            assert done.status == "COMPLETED" and done.size_bytes == source.stat().st_size
            with pytest.raises(PermissionDenied):  # maxFiles: 1
                await partner.upload(source)

        [counted] = await owner.upload_links()
        assert (counted.files_uploaded, counted.bytes_uploaded) == (1, source.stat().st_size)
        landed = await owner.get(done.id)  # in the owner's files, tagged with the link
        assert landed.status == "COMPLETED" and landed.raw["uploadLink"] == link.id

        revoked = await owner.revoke_upload_link(link.id)
        assert revoked.id == link.id and revoked.revoked_at is not None
        async with sdk.client(key=token, remember=False) as partner:
            with pytest.raises(AuthenticationError):
                await partner.create("late.txt", 3)


async def test_a_key_without_links_admin_cannot_make_one(sdk: Sdk) -> None:
    async with sdk.client("alice") as client:
        with pytest.raises(PermissionDenied) as refused:
            await client.create_upload_link()
    assert refused.value.code == "missing_scope"
