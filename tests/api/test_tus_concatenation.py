"""tus concatenation-unfinished: a final upload made of partial uploads that are still running,
completed by the request that finishes the last of them, through the in-process app."""

from __future__ import annotations

import hashlib
import os
from datetime import timedelta

import httpx

from chunkd.domain.upload import Status
from tests.api.test_tus import create, h, head, patch
from tests.conftest import Api


async def final(api: Api, *ids: str, who: str = "alice") -> httpx.Response:
    value = "final;" + " ".join(f"/files/{i}" for i in ids)
    return await api.client.post("/files", headers=h(api, who, Upload_Concat=value))


def location_id(response: httpx.Response) -> str:
    assert response.status_code == 201, response.text
    return response.headers["location"].rsplit("/", 1)[1]


async def native(api: Api, upload_id: str) -> dict[str, object]:
    response = await api.client.get(f"/v1/files/{upload_id}", headers=api.auth())
    assert response.status_code == 200, response.text
    body: dict[str, object] = response.json()
    return body


async def test_the_final_completes_when_the_last_partial_finishes(api: Api) -> None:
    data = os.urandom(150_001)
    a, b = data[:70_000], data[70_000:]
    first = await create(api, len(a), Upload_Concat="partial")
    second = await create(api, len(b), Upload_Concat="partial")
    assert (await patch(api, first, 0, a[:1000])).status_code == 204
    made = await final(api, first, second)
    final_id = location_id(made)
    # "If the expiration is known at the creation, the Upload-Expires header MUST be included."
    assert made.headers["upload-expires"] == (await head(api, final_id)).headers["upload-expires"]

    waiting = await head(api, final_id)
    assert waiting.status_code == 200
    assert "upload-offset" not in waiting.headers  # not until the concatenation is complete
    assert waiting.headers["upload-length"] == str(len(data))
    assert waiting.headers["upload-concat"] == f"final;http://testserver/files/{first} http://testserver/files/{second}"
    assert (await native(api, final_id))["status"] == "PENDING"
    assert (await api.client.get(f"/files/{final_id}", headers=api.auth())).status_code == 409
    assert (await patch(api, final_id, 0, b"x")).status_code == 403

    # The partials go on as usual; the final waits for both.
    assert (await patch(api, second, 0, b)).status_code == 204
    assert "upload-offset" not in (await head(api, final_id)).headers
    assert (await patch(api, first, 1000, a[1000:])).status_code == 204  # the last one: completes the final

    done = await head(api, final_id)
    assert done.headers["upload-offset"] == done.headers["upload-length"] == str(len(data))
    view = await native(api, final_id)
    assert view["status"] == "COMPLETED" and view["md5"] == hashlib.md5(data).hexdigest()
    assert view["sizeBytes"] == len(data)
    assert (await api.client.get(f"/files/{final_id}", headers=api.auth())).content == data
    # The partials are untouched and stay the owner's to delete.
    assert (await native(api, first))["status"] == "COMPLETED"
    assert (await head(api, first)).headers["upload-offset"] == str(len(a))


async def test_a_deferred_partial_length_shows_once_declared(api: Api) -> None:
    data = os.urandom(5_000)
    first = await create(api, None, Upload_Concat="partial")
    second = await create(api, 2_000, Upload_Concat="partial")
    await patch(api, second, 0, data[3_000:])
    final_id = location_id(await final(api, first, second))
    described = await head(api, final_id)
    assert "upload-length" not in described.headers and "upload-offset" not in described.headers
    assert "upload-defer-length" not in described.headers
    assert (await patch(api, first, 0, data[:1_000])).status_code == 204
    assert "upload-length" not in (await head(api, final_id)).headers
    assert (await patch(api, first, 1_000, data[1_000:2_000], Upload_Length="3000")).status_code == 204
    assert (await head(api, final_id)).headers["upload-length"] == "5000"
    assert (await patch(api, first, 2_000, data[2_000:3_000])).status_code == 204
    done = await head(api, final_id)
    assert done.headers["upload-offset"] == done.headers["upload-length"] == "5000"
    assert (await native(api, final_id))["md5"] == hashlib.md5(data).hexdigest()


async def test_several_finals_may_wait_on_one_partial(api: Api) -> None:
    shared = await create(api, 3, Upload_Concat="partial")
    other = await create(api, 2, Upload_Concat="partial")
    await patch(api, other, 0, b"de")
    one = location_id(await final(api, shared, other))
    two = location_id(await final(api, other, shared))
    await patch(api, shared, 0, b"abc")
    assert (await api.client.get(f"/files/{one}", headers=api.auth())).content == b"abcde"
    assert (await api.client.get(f"/files/{two}", headers=api.auth())).content == b"deabc"


async def test_a_partial_deleted_before_it_finishes_ends_the_final(api: Api) -> None:
    first = await create(api, 10, Upload_Concat="partial")
    second = await create(api, 10, Upload_Concat="partial")
    await patch(api, second, 0, b"0123456789")
    final_id = location_id(await final(api, first, second))
    assert (await api.client.delete(f"/files/{first}", headers=h(api))).status_code == 204
    gone = await head(api, final_id)
    assert gone.status_code == 410  # a clear end, not a final waiting forever
    upload = await api.runtime.uploads.get("alice", final_id)
    assert upload.status is Status.CANCELLED and not upload.parts
    assert f"upload {first} was deleted" in upload.metadata["concatenation"]["failed"]
    assert (await api.client.get(f"/files/{final_id}", headers=api.auth())).status_code == 410
    # The other partial is not affected.
    assert (await head(api, second)).headers["upload-offset"] == "10"


async def test_a_partial_that_expires_ends_the_final(api: Api) -> None:
    service = api.runtime.uploads
    real_clock = service.clock
    first = await create(api, 10, Upload_Concat="partial")
    try:
        service.clock = lambda: real_clock() + timedelta(hours=12)
        final_id = location_id(await final(api, first))
        service.clock = lambda: real_clock() + timedelta(hours=25)  # the partial is idle past its expiry, not the final
        assert await service.expire_due() == 1
        upload = await service.get("alice", final_id)
        assert upload.status is Status.CANCELLED
        assert f"upload {first} was expired" in upload.metadata["concatenation"]["failed"]
        assert (await head(api, final_id)).status_code == 410
    finally:
        service.clock = real_clock


async def test_a_final_naming_partials_that_cannot_finish_is_refused(api: Api) -> None:
    mine = await create(api, 3, Upload_Concat="partial")
    bobs = await create(api, 3, "bob", Upload_Concat="partial")
    plain = await create(api, 3)
    before = len(await api.runtime.uploads.list_uploads("alice"))
    assert (await final(api, mine, bobs)).status_code == 404  # another owner's is as good as missing
    assert (await final(api, mine, plain)).status_code == 400
    cancelled = await create(api, 3, Upload_Concat="partial")
    await api.runtime.uploads.cancel("alice", cancelled)
    refused = await final(api, mine, cancelled)
    assert refused.status_code == 400 and "cancelled" in refused.text
    assert len(await api.runtime.uploads.list_uploads("alice")) == before + 1  # only the cancelled partial
    # A partial of a concatenation that could not start is free to finish on its own.
    assert (await patch(api, mine, 0, b"abc")).status_code == 204


async def test_upload_concat_names_upload_urls_and_nothing_looser(api: Api) -> None:
    """Each URL of ``final;`` is one of this mount point's upload URLs, absolute or its path. A
    comma for the space once made a final of the last partial alone; a broken host was a 500."""
    first = await create(api, 3, Upload_Concat="partial")
    second = await create(api, 3, Upload_Concat="partial")
    await patch(api, first, 0, b"AAA")
    await patch(api, second, 0, b"BBB")
    before = len(await api.runtime.uploads.list_uploads("alice"))
    for value in (
        f"final;/files/{first},/files/{second}",
        f"final;/files/{first}/../files/{second}",
        f"final;/files/{first}%20/files/{second}",
        f"final;/v1/files/{first}",
        f"final;/elsewhere/files/{first}",
        f"final;ftp://testserver/files/{first}",
        f"final;/files/{first}?x=1",
        "final;http://[::1/files/x",
        "final;http://[zz]/files/x",
    ):
        refused = await api.client.post("/files", headers=h(api, Upload_Concat=value))
        assert refused.status_code == 400, (value, refused.status_code, refused.text)
        assert refused.headers["tus-resumable"] == "1.0.0"
        assert "Upload-Concat" in refused.text, value
    assert len(await api.runtime.uploads.list_uploads("alice")) == before
    value = f"final;http://testserver/files/{first} /files/{second}/"
    final_id = location_id(await api.client.post("/files", headers=h(api, Upload_Concat=value)))
    assert (await api.client.get(f"/files/{final_id}", headers=api.auth())).content == b"AAABBB"


async def test_a_final_made_of_finished_partials_is_complete_at_once(api: Api) -> None:
    first = await create(api, 3, Upload_Concat="partial")
    await patch(api, first, 0, b"abc")
    made = await final(api, first)
    final_id = location_id(made)
    assert "upload-expires" not in made.headers
    assert (await native(api, final_id))["status"] == "COMPLETED"
    assert (await head(api, final_id)).headers["upload-offset"] == "3"


async def test_concatenation_state_changes_go_through_the_aggregate(api: Api) -> None:
    """The final's offset, parts and hash frontier agree with its bytes (set by ``Upload`` methods)."""
    data = os.urandom(30_000)
    first = await create(api, 10_000, Upload_Concat="partial")
    second = await create(api, 20_000, Upload_Concat="partial")
    final_id = location_id(await final(api, first, second))
    await patch(api, first, 0, data[:10_000])
    await patch(api, second, 0, data[10_000:])
    upload = await api.runtime.uploads.get("alice", final_id)
    assert upload.bytes_received == upload.hash_offset == upload.size_bytes == len(data)
    assert upload.parts_received == len(upload.parts)
    assert [p.offset for p in upload.sorted_parts()] == [0, 10_000]
    assert "concatenation" not in upload.metadata  # only while waiting (or once failed)


async def test_a_final_whose_settling_was_missed_is_settled_by_a_native_get(api: Api) -> None:
    """The request that finishes the last partial settles the final. If its node stopped in between
    (here: the settling listener is taken away), a client polling the Files API used to see the
    final PENDING until a tus HEAD or its expiry came; the GET settles it as a HEAD does."""
    settle = api.runtime.uploads._source_ended
    api.runtime.uploads.listeners.remove(settle)
    data = os.urandom(20_000)
    first = await create(api, 10_000, Upload_Concat="partial")
    second = await create(api, 10_000, Upload_Concat="partial")
    final_id = location_id(await final(api, first, second))
    assert (await patch(api, first, 0, data[:10_000])).status_code == 204
    assert (await patch(api, second, 0, data[10_000:])).status_code == 204
    assert (await api.runtime.uploads.get("alice", final_id)).status is Status.PENDING  # missed

    view = await native(api, final_id)
    assert view["status"] == "COMPLETED" and view["md5"] == hashlib.md5(data).hexdigest(), view
    assert (await api.client.get(f"/v1/files/{final_id}/content", headers=api.auth())).content == data


async def test_a_final_past_the_size_limit_names_upload_concat_not_a_length_it_never_sent(api: Api) -> None:
    half = api.runtime.settings.max_file_size // 2 + 1
    first = await create(api, half, Upload_Concat="partial")
    second = await create(api, half, Upload_Concat="partial")
    refused = await final(api, first, second)
    assert refused.status_code == 413, refused.text
    assert "Upload-Length" not in refused.text and "partial uploads' total length" in refused.text
