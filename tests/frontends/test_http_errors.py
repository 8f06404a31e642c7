"""The status and headers every dialect gives an engine error come from one table
(``chunkd.frontends.http.errors``): each dialect keeps its own body shape and its own statuses
where its protocol says so, and all carry the same challenge and Retry-After."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from starlette.requests import Request
from starlette.responses import Response

from chunkd.domain import errors as e
from chunkd.frontends.assets.errors import render_error as assets_render
from chunkd.frontends.http import SHARED_STATUS, StatusTable, error_headers
from chunkd.frontends.media.errors import render_error as media_render
from chunkd.frontends.native.errors import render_error as native_render
from chunkd.frontends.pm.errors import render as pm_render
from chunkd.frontends.tus.draft_errors import render_problem
from chunkd.frontends.tus.errors import render_error as tus_render
from tests.conftest import Api


def _request() -> Request:
    return Request({"type": "http", "method": "PATCH", "path": "/files/x", "headers": [], "query_string": b""})


async def _pm(exc: Exception) -> Response | None:
    return await pm_render(_request(), exc)


DIALECTS: dict[str, Callable[[Exception], Response | None]] = {
    "native": native_render,
    "tus": tus_render,
    "draft": lambda exc: render_problem(_request(), exc),
    "media": media_render,
    "assets": assets_render,
}


async def _answer(dialect: str, exc: Exception) -> Response:
    response = await _pm(exc) if dialect == "pm" else DIALECTS[dialect](exc)
    assert response is not None
    return response


@pytest.mark.parametrize("dialect", [*DIALECTS, "pm"])
async def test_every_dialect_challenges_a_401_and_says_when_to_retry(dialect: str) -> None:
    unauthenticated = await _answer(dialect, e.Unauthenticated("no credentials"))
    assert unauthenticated.status_code == 401
    assert unauthenticated.headers["www-authenticate"] == 'Bearer realm="chunkd"'
    busy = await _answer(dialect, e.Busy("another request is writing this upload"))
    assert busy.headers["retry-after"] == "1"
    # The draft's newest interop version (8, which _request names by naming none) may resume after 5xx, not 423.
    assert busy.status_code == {"tus": 423, "draft": 503}.get(dialect, 409)
    down = await _answer(dialect, e.StorageError("the store does not answer"))
    assert down.status_code == 503 and down.headers["retry-after"] == "30"
    assert "retry-after" not in (await _answer(dialect, e.NotFound("no such upload"))).headers


@pytest.mark.parametrize(
    ("dialect", "expired", "invalid_state"),
    [("native", 409, 409), ("pm", 410, 409), ("media", 410, 400), ("assets", 400, 400), ("tus", 410, 409)],
)
async def test_dialects_keep_their_own_statuses(dialect: str, expired: int, invalid_state: int) -> None:
    assert (await _answer(dialect, e.Expired("gone"))).status_code == expired
    assert (await _answer(dialect, e.InvalidState("finished"))).status_code == invalid_state


def test_a_dialects_own_entries_come_before_the_shared_ones() -> None:
    table = StatusTable((e.Busy, 423))
    assert table.status(e.Busy("locked")) == 423
    assert table.status(e.InvalidState("done")) == 409  # the shared Conflict
    assert table.status(ValueError("not ours")) is None
    assert StatusTable().entries == SHARED_STATUS
    assert error_headers(None, 401) == {"WWW-Authenticate": 'Bearer realm="chunkd"'}
    assert error_headers(e.InvalidInput("bad"), 400) == {}


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
async def test_a_json_syntax_error_names_the_body_not_a_character_position(api: Api) -> None:
    """FastAPI reports a JSON syntax error at ``("body", <character>)``: the answer names the
    body as the field, not the number. A body that is not UTF-8 is the same error (FastAPI said
    "There was an error parsing the body")."""
    for raw in (b"{", b'{"filename": "a", }', b"\xff\xfe", b'{"filename": "\xff\xfe", "sizeBytes": 1}'):
        answer = await api.client.post(
            "/v1/files", content=raw, headers={**api.auth(), "Content-Type": "application/json"}
        )
        assert answer.status_code == 400, answer.text
        error = answer.json()["error"]
        assert error["field"] == "body" and "not valid JSON" in error["message"], error
