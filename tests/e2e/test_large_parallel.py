"""A 200 MiB file in 8 MiB parts, sent by 6 threads in shuffled order to a real server."""

from __future__ import annotations

import random
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.support.files import FilesClient, MiB, random_file, read_slice
from tests.support.server import ChunkdServer

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

SIZE = 200 * MiB
PART = 8 * MiB
THREADS = 6


def test_200_mib_in_parallel_out_of_order(e2e_server: ChunkdServer, e2e_key: str, tmp_path: Path) -> None:
    source = tmp_path / "big.bin"
    md5 = random_file(source, SIZE)
    with FilesClient(e2e_server, e2e_key) as client:
        created = client.create(SIZE, PART, md5=md5)
        file_id = created["id"]
        assert created["partCount"] == 25
        order = list(range(1, 26))
        random.Random(2).shuffle(order)

        def send(number: int) -> tuple[int, dict[str, object]]:
            with FilesClient(e2e_server, e2e_key) as own:
                # Read the slice in the worker: at most THREADS parts are in memory at once.
                response = own.put_part(file_id, number, read_slice(source, (number - 1) * PART, PART))
                assert response.status_code == 200, response.text
                return number, response.json()

        with ThreadPoolExecutor(THREADS) as pool:
            acks = dict(pool.map(send, order))
        assert sorted(acks) == list(range(1, 26)) and order != sorted(order)
        assert acks[25]["sizeBytes"] == SIZE - 24 * PART

        state = client.get(file_id)
        assert state["bytesReceived"] == SIZE
        assert [p["partNumber"] for p in state["parts"]] == list(range(1, 26))
        assert {p["partNumber"]: p["etag"] for p in state["parts"]} == {n: a["etag"] for n, a in acks.items()}

        done = client.complete(file_id, md5)
        assert done.status_code == 200, done.text
        assert done.json()["status"] == "COMPLETED" and done.json()["sizeBytes"] == SIZE
        assert client.get(file_id)["md5"] == md5
        assert client.download_md5(file_id) == (SIZE, md5)
        # A range across a part boundary comes back exact.
        ranged = client.http.get(f"/v1/files/{file_id}/content", headers={"Range": f"bytes={PART - 10}-{PART + 9}"})
        assert ranged.status_code == 206
        assert ranged.content == read_slice(source, PART - 10, 20)
