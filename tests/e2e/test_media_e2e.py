"""The media API's django-chunked-upload flow against a real ``chunkd serve``: the multipart
chunks cross a real socket (so the streaming form parser sees real network boundaries), and the
published files survive a server restart."""

from __future__ import annotations

import hashlib

import httpx
import pytest

from tests.support.media_files import chunked_upload, make_pdf, make_png
from tests.support.server import ChunkdServer


@pytest.mark.e2e
async def test_png_and_pdf_through_a_real_server(live_server: ChunkdServer) -> None:
    key = live_server.create_key("alice")
    auth = {"Authorization": f"Bearer {key}"}
    png, pdf = make_png(600, 400), make_pdf(padding=500_000)
    async with httpx.AsyncClient(base_url=live_server.url, timeout=60) as client:
        media = []
        for data, name, field in ((png, "photo.png", "image"), (pdf, "paper.pdf", "document")):
            upload_id = await chunked_upload(client, data, name, auth, field=field)
            done = await client.post(
                "/api/v2/media/upload/complete/",
                content=f"upload_id={upload_id}&md5={hashlib.md5(data).hexdigest()}",
                headers={**auth, "Content-Type": "application/x-www-form-urlencoded"},
            )
            assert done.status_code == 201, done.text
            media.append(done.json())
    assert [m["type"] for m in media] == ["image", "doc"]
    assert (media[0]["image_width"], media[0]["image_height"]) == (600, 400)
    live_server.restart()
    async with httpx.AsyncClient(base_url=live_server.url, timeout=60, headers=auth) as client:
        for item, data in zip(media, (png, pdf), strict=True):
            again = (await client.get(f"/api/v2/media/{item['id']}/")).json()
            assert {k: v for k, v in again.items() if k != "image"} == {k: v for k, v in item.items() if k != "image"}
            assert (await client.get(item["image"])).content == data
