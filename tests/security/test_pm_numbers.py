"""Hostile numbers in the Fine Uploader fields (qqtotalparts, qqchunksize, qqpartbyteoffset, ...):
each is a 400 or 413 in Fine Uploader's error shape naming the field, and nothing is stored.

A qqtotalparts of 10**12 on chunk 0 used to be kept, and the done request then counted the missing
chunks one by one (the event loop blocked for good); a qqchunksize or qqpartbyteoffset past 2**63
was a 500 (the database cannot store it)."""

from __future__ import annotations

import pytest

from chunkd.domain.upload import Mode
from chunkd.frontends.pm.chunks import FRONTEND, TOTAL_PARTS
from tests.conftest import Api

BOUNDARY = "----qqHostileNumbers"
MULTIPART = {"Content-Type": f"multipart/form-data; boundary={BOUNDARY}"}
FORM = {"Content-Type": "application/x-www-form-urlencoded"}


def form(fields: list[tuple[str, str]], data: bytes = b"0123456789") -> bytes:
    out = b"".join(
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode()
        for name, value in fields
    )
    out += (
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="qqfile"; filename="blob"\r\n'
        "Content-Type: application/octet-stream\r\n\r\n"
    ).encode()
    return out + data + f"\r\n--{BOUNDARY}--\r\n".encode()


HUGE = "9" * 4000  # int() still takes it (its limit is 4300 digits)
CASES = [
    pytest.param([("qqpartindex", "0"), ("qqtotalparts", "1000000000000"), ("qqchunksize", "10")], 400,
                 "qqtotalparts", id="total-parts-past-max-parts"),
    pytest.param([("qqpartindex", "0"), ("qqtotalparts", HUGE), ("qqchunksize", "10")], 400,
                 "qqtotalparts", id="total-parts-huge"),
    pytest.param([("qqpartindex", "10000"), ("qqtotalparts", "2"), ("qqchunksize", "10")], 400,
                 "qqpartindex", id="part-index-past-max-parts"),
    pytest.param([("qqpartindex", "0"), ("qqtotalparts", "2"), ("qqchunksize", HUGE)], 400,
                 "qqchunksize", id="chunk-size-huge"),
    pytest.param([("qqpartindex", "0"), ("qqtotalparts", "2"), ("qqchunksize", "9223372036854775808")], 400,
                 "qqchunksize", id="chunk-size-past-int64"),
    pytest.param([("qqpartindex", "0"), ("qqtotalparts", "2"), ("qqchunksize", str(2**62))], 413,
                 "qqchunksize", id="chunk-size-past-max-file-size"),
    pytest.param([("qqpartindex", "1"), ("qqtotalparts", "2"), ("qqpartbyteoffset", HUGE)], 400,
                 "qqpartbyteoffset", id="offset-huge"),
    pytest.param([("qqpartindex", "1"), ("qqtotalparts", "3"), ("qqpartbyteoffset", str(2**62))], 413,
                 "qqpartbyteoffset", id="offset-past-max-file-size"),
    pytest.param([("qqtotalfilesize", HUGE)], 400, "qqtotalfilesize", id="whole-file-size-huge"),
    # Digits Python's int() reads but no client sends: an Arabic-Indic three, a digit separator, a sign.
    pytest.param([("qqpartindex", "\u0663"), ("qqtotalparts", "5")], 400, "qqpartindex", id="index-non-ascii-digit"),
    pytest.param([("qqpartindex", "0"), ("qqtotalparts", "1_0")], 400, "qqtotalparts", id="total-with-underscore"),
    pytest.param([("qqpartindex", "+1"), ("qqtotalparts", "2")], 400, "qqpartindex", id="index-with-plus"),
]  # fmt: skip


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
@pytest.mark.parametrize(("fields", "status", "field"), CASES)
async def test_hostile_chunk_numbers_are_refused_naming_the_field(
    api: Api, fields: list[tuple[str, str]], status: int, field: str
) -> None:
    body = form([("qquuid", "hostile-1"), *fields])
    answer = await api.client.post("/api/v2/pm/upload/", content=body, headers={**api.auth(), **MULTIPART})
    assert answer.status_code == status, answer.text
    error = answer.json()
    assert error["success"] is False and error["field"] == field, error
    assert field in error["error"]
    assert await api.runtime.uploads.find("alice", FRONTEND, "hostile-1") is None
    assert await api.runtime.uploads.list_uploads("alice") == []


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
async def test_done_with_a_huge_recorded_chunk_count_answers_at_once(api: Api) -> None:
    """An upload whose chunk count was recorded before counts were bounded (straight into the
    engine here): the done request lists at most 1000 missing chunks instead of counting them all."""
    await api.runtime.uploads.create(
        "alice",
        filename="a.bin",
        size_bytes=None,
        part_size=10,
        mode=Mode.PARTS,
        frontend=FRONTEND,
        client_ref="counted-1",
        defer_size=True,
        metadata={TOTAL_PARTS: 10**12},
        strict_part_size=False,
    )
    # Before the bound this request never ended (the loop was blocked; only the test timeout ends it).
    answer = await api.client.post(
        "/api/v2/pm/upload/?done", content=b"qquuid=counted-1&qqfilename=a.bin", headers={**api.auth(), **FORM}
    )
    assert answer.status_code == 409, answer.text
    error = answer.json()
    assert error["success"] is False and error["code"] == "missing_parts", error
    assert error["missingParts"] == list(range(1000))  # chunk indexes, from 0


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
async def test_a_size_declared_late_cannot_give_more_than_max_parts(api: Api) -> None:
    """Chunk 0 of 1-byte chunks, sent without a size; the done request then says the file has
    5 TB: that is 5e12 chunks, refused naming qqtotalfilesize (it used to be recorded, and the
    completion then listed the missing chunks one by one, blocking the event loop for good)."""
    fields = [("qquuid", "late-1"), ("qqpartindex", "0"), ("qqtotalparts", "2"), ("qqchunksize", "1")]
    sent = await api.client.post("/api/v2/pm/upload/", content=form(fields, b"x"), headers={**api.auth(), **MULTIPART})
    assert sent.status_code == 200, sent.text
    done = await api.client.post(
        "/api/v2/pm/upload/?done",
        content=b"qquuid=late-1&qqfilename=a.bin&qqtotalfilesize=5000000000000",
        headers={**api.auth(), **FORM},
    )
    assert done.status_code == 400, done.text
    error = done.json()
    assert error["success"] is False and error["field"] == "qqtotalfilesize", error
    upload = await api.runtime.uploads.find("alice", FRONTEND, "late-1")
    assert upload is not None and upload.size_bytes is None  # nothing recorded


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
async def test_completing_a_row_with_a_huge_part_count_answers_at_once(api: Api) -> None:
    """A row whose late-declared size gives ~10**12 parts (written before that was refused):
    completing it lists the first 1000 missing parts instead of all of them."""
    upload = await api.runtime.uploads.create(
        "alice", filename="a.bin", size_bytes=None, part_size=1, defer_size=True, strict_part_size=False
    )
    upload.size_bytes = 10**12
    await api.runtime.repo.save(upload)
    answer = await api.client.post(f"/v1/files/{upload.id}/complete", headers=api.auth())
    assert answer.status_code == 409, answer.text
    assert answer.json()["error"]["missingParts"] == list(range(1, 1001))


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
async def test_a_refused_first_chunk_leaves_no_upload_behind(api: Api) -> None:
    """A chunk 0 of the wrong size starts the file's upload and is refused (400, preventRetry):
    the upload it made is removed again (it used to stay, empty, until it expired). An upload
    holding a stored chunk is kept when a later chunk is refused."""
    geometry = [("qqpartindex", "0"), ("qqtotalparts", "2"), ("qqchunksize", "10"), ("qqtotalfilesize", "20")]
    refused = await api.client.post(
        "/api/v2/pm/upload/",
        content=form([("qquuid", "short-0"), *geometry], b"01234"),
        headers={**api.auth(), **MULTIPART},
    )
    assert refused.status_code == 400 and refused.json()["field"] == "qqfile", refused.text
    assert await api.runtime.uploads.find("alice", FRONTEND, "short-0") is None
    assert await api.runtime.uploads.list_uploads("alice") == []

    stored = await api.client.post(
        "/api/v2/pm/upload/", content=form([("qquuid", "short-0"), *geometry]), headers={**api.auth(), **MULTIPART}
    )
    assert stored.status_code == 200, stored.text
    again = await api.client.post(
        "/api/v2/pm/upload/",
        content=form([("qquuid", "short-0"), *geometry], b"0"),
        headers={**api.auth(), **MULTIPART},
    )
    assert again.status_code == 400, again.text
    kept = await api.runtime.uploads.find("alice", FRONTEND, "short-0")
    assert kept is not None and kept.bytes_received == 10
