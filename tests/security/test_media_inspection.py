"""Hostile PDFs and images are inspected in worker processes with limits: a page cap, a wall time
past which the worker is killed (the file refused with a 400 while the server carries on), and a
refusal recorded on the upload, so completing the same bytes again answers the same 400 at once
without parsing them again; a worker that dies idle does not stop inspections."""

from __future__ import annotations

import asyncio
import hashlib
import io
import itertools
import os
import signal
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from pypdf import PdfWriter

from chunkd.service import media as media_module
from chunkd.service.media import MediaService
from tests.conftest import Api
from tests.security.conftest import MakeApi
from tests.support.media_files import chunked_upload, make_png
from tests.support.waiting import until

pytestmark = pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)

COMPLETE = "/api/v2/media/upload/complete/"


def _pdf_pages(pages: int) -> bytes:
    writer = PdfWriter()
    for _ in range(pages):
        writer.add_blank_page(width=100, height=100)
    out = io.BytesIO()
    writer.write(out)
    return out.getvalue()


def _lying_pdf(pages: int, declared: int = 1) -> bytes:
    """A PDF whose page tree holds ``pages`` pages but declares ``declared`` (so a check of the
    declared count alone lets it through, and walking the tree is what costs)."""
    out = io.BytesIO()
    out.write(b"%PDF-1.4\n")
    offsets: list[int] = []

    def obj(body: bytes) -> None:
        offsets.append(out.tell())
        out.write(b"%d 0 obj\n%s\nendobj\n" % (len(offsets), body))

    kids = b" ".join(b"%d 0 R" % (3 + i) for i in range(pages))
    obj(b"<< /Type /Catalog /Pages 2 0 R >>")
    obj(b"<< /Type /Pages /Count %d /Kids [%s] >>" % (declared, kids))
    for _ in range(pages):
        obj(b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] >>")
    xref = out.tell()
    out.write(b"xref\n0 %d\n0000000000 65535 f \n" % (len(offsets) + 1))
    for offset in offsets:
        out.write(b"%010d 00000 n \n" % offset)
    out.write(b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(offsets) + 1, xref))
    return out.getvalue()


def _media(api: Api) -> MediaService:
    return api.runtime.media


async def _complete(api: Api, upload_id: str, data: bytes) -> httpx.Response:
    return await api.client.post(
        COMPLETE, data={"upload_id": upload_id, "md5": hashlib.md5(data).hexdigest()}, headers=api.auth()
    )


def pdfs_spooled_to_fifos(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Every PDF spooled for inspection is swapped for a FIFO of its own that nobody writes: its
    worker blocks on it until the wall-time limit kills it, whatever the parser's speed."""
    spool = media_module.spool_to_file
    fifos = itertools.count()

    async def spool_pdf_to_fifo(chunks: AsyncIterator[bytes]) -> str:
        path = await spool(chunks)
        with open(path, "rb") as spooled:
            if spooled.read(5) != b"%PDF-":
                return path
        os.unlink(path)
        stuck = tmp_path / f"stuck-{next(fifos)}.pdf"
        os.mkfifo(stuck)
        return str(stuck)

    monkeypatch.setattr(media_module, "spool_to_file", spool_pdf_to_fifo)


async def test_page_cap_refuses_a_pdf_with_too_many_pages_once(make_api: MakeApi) -> None:
    async with make_api(media_max_pdf_pages=10) as api:
        for data, pages in ((_pdf_pages(50), 50), (_lying_pdf(30), 30)):
            upload_id = await chunked_upload(api.client, data, "book.pdf", api.auth(), field="document")
            refused = await _complete(api, upload_id, data)
            assert refused.status_code == 400, refused.text
            assert f"{pages} pages" in refused.json()["detail"] and "10" in refused.json()["detail"]
            status = await api.client.get(f"/v1/files/{upload_id}", headers=api.auth())
            assert status.json()["status"] == "PENDING"
            # The same bytes again: the same answer, and no worker parses them a second time.
            jobs = _media(api).inspector.jobs_started
            again = await _complete(api, upload_id, data)
            assert again.status_code == 400 and again.json()["detail"] == refused.json()["detail"]
            assert _media(api).inspector.jobs_started == jobs
        # A document under the cap is still published.
        fine = _pdf_pages(3)
        upload_id = await chunked_upload(api.client, fine, "ok.pdf", api.auth(), field="document")
        assert (await _complete(api, upload_id, fine)).status_code == 201


async def test_an_inspection_past_its_wall_time_is_killed_and_refused(
    make_api: MakeApi, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # A worker that never finishes, whatever the parser's speed: the document's spooled copy is
    # swapped for a FIFO nobody writes to, so the worker blocks opening it. (A PDF whose page tree
    # took pypdf long to walk did this until pypdf 7 bounded the walk: its 60,000 pages took 3.9 s,
    # under the limit, on 2026-12-02.) The limit is 5 s, not 1, so that the PNG inspected meanwhile
    # (a fresh worker importing Pillow) stays within it on a loaded machine.
    hostile = _lying_pdf(30)
    pdfs_spooled_to_fifos(monkeypatch, tmp_path)
    async with make_api(media_inspect_timeout_seconds=5, media_max_chunk_bytes=1024 * 1024) as api:
        inspector = _media(api).inspector
        upload_id = await chunked_upload(api.client, hostile, "slow.pdf", api.auth(), field="document", chunk=2**20)
        before = inspector.jobs_started
        slow = asyncio.create_task(_complete(api, upload_id, hostile))
        while inspector.jobs_started == before and not slow.done():  # the job is in a worker now
            await asyncio.sleep(0.01)

        # Meanwhile the server answers: a native upload, and an image inspected by another worker.
        created = await api.client.post("/v1/files", json={"filename": "a", "sizeBytes": 3}, headers=api.auth())
        assert created.status_code == 201
        file_id = created.json()["id"]
        assert (await api.client.put(f"/v1/files/{file_id}/content", content=b"abc", headers=api.auth())).is_success
        png = make_png(16, 16)
        png_id = await chunked_upload(api.client, png, "a.png", api.auth())
        assert (await _complete(api, png_id, png)).status_code == 201

        refused = await slow
        assert refused.status_code == 400, refused.text
        assert "longer than the 5 seconds" in refused.json()["detail"]
        jobs = inspector.jobs_started
        again = await _complete(api, upload_id, hostile)
        assert again.status_code == 400 and again.json()["detail"] == refused.json()["detail"]
        assert inspector.jobs_started == jobs
        # The pool replaced the killed worker: inspections go on.
        png_id = await chunked_upload(api.client, png, "b.png", api.auth())
        assert (await _complete(api, png_id, png)).status_code == 201


async def test_waiting_inspections_take_turns_by_owner_and_are_bounded(
    make_api: MakeApi, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # Alice's PDFs each hold the one worker until the wall time (spooled to a FIFO each, as above).
    # Pebble's own queue was first come, first served and unbounded: 20 completes of one owner's
    # 3.6 KB PDF held another owner's 70-byte PNG back 46 s.
    pdfs_spooled_to_fifos(monkeypatch, tmp_path)
    settings = {"media_inspect_workers": 1, "media_inspect_timeout_seconds": 3, "media_inspect_queue": 3}
    async with make_api(**settings) as api:
        inspector = _media(api).inspector
        pdf = _lying_pdf(3)
        alice = [await chunked_upload(api.client, pdf, "a.pdf", api.auth(), field="document") for _ in range(4)]
        png = make_png(16, 16)
        bob = await chunked_upload(api.client, png, "b.png", api.auth("bob"))
        before = inspector.jobs_started
        first = asyncio.create_task(_complete(api, alice[0], pdf))
        while inspector.jobs_started == before and not first.done():  # alice's first holds the worker
            await asyncio.sleep(0.01)
        waiting = [asyncio.create_task(_complete(api, upload_id, pdf)) for upload_id in alice[1:3]]
        await asyncio.sleep(0.3)
        bobs = asyncio.create_task(
            api.client.post(
                COMPLETE, data={"upload_id": bob, "md5": hashlib.md5(png).hexdigest()}, headers=api.auth("bob")
            )
        )
        await asyncio.sleep(0.3)

        # Three wait already: one more is refused at once, in the media dialect, and recorded nowhere.
        refused = await _complete(api, alice[3], pdf)
        assert refused.status_code == 429, refused.text
        assert refused.headers["Retry-After"] == "1"
        assert refused.json()["code"] == "rate_limited" and refused.json()["field"] == "upload_id"
        status = await api.client.get(f"/v1/files/{alice[3]}", headers=api.auth())
        assert status.json()["status"] == "PENDING"

        # Bob's PNG takes the worker next, before alice's second and third.
        assert (await bobs).status_code == 201
        assert not waiting[1].done()
        assert all(response.status_code == 400 for response in await asyncio.gather(first, *waiting))
        # The queue drained: alice's fourth is inspected now (its 429 was not recorded as a refusal).
        jobs = inspector.jobs_started
        assert (await _complete(api, alice[3], pdf)).status_code == 400
        assert inspector.jobs_started == jobs + 1


async def test_a_worker_killed_while_idle_leaves_inspections_working(make_api: MakeApi) -> None:
    # A worker that died with no job (the OOM killer, a stray kill) made Pebble give up on the whole
    # pool, and every media complete after it was a 500 until a restart (seen under load).
    async with make_api(media_inspect_workers=1) as api:
        png = make_png(16, 16)
        first = await chunked_upload(api.client, png, "a.png", api.auth())
        assert (await _complete(api, first, png)).status_code == 201
        pool = _media(api).inspector._pool
        assert pool is not None
        for pid in list(pool._pool_manager.worker_manager.workers):
            os.kill(pid, signal.SIGKILL)
        await until(lambda: not pool.active, what="Pebble to give up on the pool")

        second = await chunked_upload(api.client, png, "b.png", api.auth())
        answer = await _complete(api, second, png)
        assert answer.status_code == 201, answer.text
        third = await chunked_upload(api.client, png, "c.png", api.auth())
        assert (await _complete(api, third, png)).status_code == 201
