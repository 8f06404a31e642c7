"""A media ``image`` URL serves the file it was made for or nothing: media ids are never handed
out twice, and the signature binds the upload and owner behind the id, so a URL kept past its
media's deletion never serves another owner's file (on SQLite and PostgreSQL). A media file is
served only as the type its content was inspected to be, never as its name says."""

from __future__ import annotations

import dataclasses
import hashlib
import io
import zlib
from datetime import UTC, datetime

from PIL import Image

from chunkd.domain.media import MediaRecord, MediaType
from chunkd.service.media import served_type
from tests.conftest import Api
from tests.support.media_files import chunked_upload, make_png

COMPLETE = "/api/v2/media/upload/complete/"


async def _publish(api: Api, data: bytes, name: str, who: str) -> dict[str, object]:
    upload_id = await chunked_upload(api.client, data, name, api.auth(who))
    response = await api.client.post(
        COMPLETE, data={"upload_id": upload_id, "md5": hashlib.md5(data).hexdigest()}, headers=api.auth(who)
    )
    assert response.status_code == 201, response.text
    body: dict[str, object] = response.json()
    return body


async def test_a_kept_image_url_never_serves_the_next_owners_file(api: Api) -> None:
    alice_png, bob_png = make_png(12, 12), make_png(13, 13)
    alice = await _publish(api, alice_png, "alice.png", "alice")
    kept = str(alice["image"])
    assert (await api.client.get(kept)).content == alice_png
    assert (await api.client.delete(f"/api/v2/media/{alice['id']}/", headers=api.auth("alice"))).status_code == 204

    bob = await _publish(api, bob_png, "bob.png", "bob")
    assert isinstance(bob["id"], int) and isinstance(alice["id"], int)
    assert bob["id"] > alice["id"], "a deleted media id was handed out again"
    old = await api.client.get(kept)
    assert old.status_code in (403, 404), old.status_code
    assert bob_png not in old.content
    # Alice's URL pointed at Bob's id (what an id reuse would have given) still refuses.
    moved = kept.replace(f"/media/{alice['id']}/", f"/media/{bob['id']}/")
    refused = await api.client.get(moved)
    assert refused.status_code in (403, 404) and bob_png not in refused.content
    assert (await api.client.get(str(bob["image"]))).content == bob_png


def _png_html_polyglot() -> bytes:
    """A real PNG (Pillow opens and verifies it) whose bytes also hold an HTML document: a browser
    told ``text/html`` would run its script."""
    out = io.BytesIO()
    Image.new("RGB", (4, 4), "red").save(out, format="PNG")
    png = out.getvalue()
    html = b"<html><body><script>document.title='pwned'</script></body></html>"
    kind = b"tEXt"
    body = b"comment\x00" + html
    chunk = len(body).to_bytes(4, "big") + kind + body + (zlib.crc32(kind + body) & 0xFFFFFFFF).to_bytes(4, "big")
    return png[:33] + chunk + png[33:]  # after the 8-byte signature and the 25-byte IHDR chunk


async def test_png_html_polyglot_named_html_is_served_as_png(api: Api) -> None:
    data = _png_html_polyglot()
    Image.open(io.BytesIO(data)).verify()  # it really is a PNG
    upload_id = await chunked_upload(api.client, data, "page.html", api.auth())
    # Completed through the native API (no media check), then published through the media API.
    done = await api.client.post(f"/v1/files/{upload_id}/complete", headers=api.auth())
    assert done.status_code == 200 and done.json()["mimeType"] == "text/html", done.text
    response = await api.client.post(
        COMPLETE, data={"upload_id": upload_id, "md5": hashlib.md5(data).hexdigest()}, headers=api.auth()
    )
    assert response.status_code == 201, response.text
    media = response.json()
    for served in (
        await api.client.get(media["image"]),
        await api.client.get(f"/api/v2/media/{media['id']}/file/", headers=api.auth()),
    ):
        assert served.status_code == 200 and served.content == data
        assert served.headers["content-type"] == "image/png"
        assert served.headers["content-security-policy"] == "sandbox"
        assert served.headers["x-content-type-options"] == "nosniff"


def test_served_type_never_comes_from_the_name() -> None:
    """Records from before the inspected type was kept fall back to their upload's type only when
    it is an inspected type (the old media check set it from the content), never to e.g. text/html."""
    now = datetime.now(UTC)
    image = MediaRecord(1, "u", "alice", MediaType.IMAGE, 1, 1, 0, now)
    doc = MediaRecord(2, "v", "alice", MediaType.DOC, 1, 1, 0, now)
    assert served_type(dataclasses.replace(image, mime_type="image/png"), "text/html") == "image/png"
    assert served_type(image, "image/jpeg") == "image/jpeg"
    assert served_type(image, "text/html") == "application/octet-stream"
    assert served_type(dataclasses.replace(image, mime_type="text/html"), None) == "application/octet-stream"
    assert served_type(doc, "text/html") == "application/pdf"


async def test_a_create_only_key_gets_no_image_url(api: Api) -> None:
    """The ``image`` URL reads the file without credentials: an uploader's files:create key that
    completes a media must not get one (it was handed a signed GET for what it may not read)."""
    _, uploader = await api.runtime.keys.create("alice", "files:create")
    writer = {"Authorization": f"Bearer {uploader}"}
    png = make_png(9, 9)
    upload_id = await chunked_upload(api.client, png, "dot.png", writer)
    done = await api.client.post(
        COMPLETE, data={"upload_id": upload_id, "md5": hashlib.md5(png).hexdigest()}, headers=writer
    )
    assert done.status_code == 201, done.text
    assert done.json()["image"] is None
    assert (await api.client.get(f"/api/v2/media/{done.json()['id']}/file/", headers=writer)).status_code == 403
    # The owner's reading credential gets the URL, and it serves the file.
    read = await api.client.get(f"/api/v2/media/{done.json()['id']}/", headers=api.auth("alice"))
    assert read.status_code == 200 and (await api.client.get(read.json()["image"])).content == png
