"""Plain endpoints called without FastAPI's router and dependency solving (frontends.http.routes)
answer exactly as through FastAPI: the same route template in metrics, path parameters outside
their limits left to FastAPI's validation (in the dialect's error shape), errors rendered by the
dialect, and the hot paths really taken directly."""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path

import pytest
from fastapi import APIRouter, Depends, FastAPI
from fastapi.routing import APIRoute
from starlette.requests import Request
from starlette.responses import Response

from chunkd.app import create_app
from chunkd.frontends.http.routes import DirectCall, DirectRoutes, direct_call, walk_routes
from chunkd.settings import Settings
from tests.conftest import Api

TUS = {"Tus-Resumable": "1.0.0"}


def calls_by_route() -> dict[tuple[str, str], DirectCall | None]:
    app = create_app(Settings(data_dir=Path(tempfile.mkdtemp(prefix="chunkd-routes-"))))
    return {
        (method, route.path): direct_call(route)
        for route in walk_routes(app.router.routes)
        if isinstance(route, APIRoute)
        for method in route.methods
    }


def test_hot_paths_are_called_directly_and_body_models_are_not() -> None:
    calls = calls_by_route()
    for hot in (
        ("PATCH", "/files/{file_id}"),
        ("HEAD", "/files/{file_id}"),
        ("POST", "/files"),
        ("PUT", "/v1/files/{file_id}/parts/{part_number}"),
        ("POST", "/api/v2/pm/upload"),
    ):
        assert calls[hot] is not None, hot
    assert calls[("POST", "/v1/files")] is None  # a JSON body model: FastAPI parses it
    assert calls[("POST", "/v1/keys")] is None


@pytest.mark.parametrize(
    ("raw", "expected"),
    [("1", 1), ("10000", 10000), ("007", 7), ("0", None), ("10001", None), ("+1", None), ("١", None), ("1.0", None)],
)
def test_an_int_path_parameter_goes_direct_only_when_fastapi_would_pass_it_unchanged(
    raw: str, expected: int | None
) -> None:
    call = calls_by_route()[("PUT", "/v1/files/{file_id}/parts/{part_number}")]
    assert call is not None
    arguments = call.arguments({"file_id": "A" * 22, "part_number": raw})
    assert (arguments or {}).get("part_number") == expected


async def test_tus_answers_through_the_direct_path(api: Api, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="chunkd.access")
    created = await api.client.post("/files", headers={**TUS, **api.auth(), "Upload-Length": "5"})
    assert created.status_code == 201
    location = created.headers["location"].replace("http://testserver", "")
    patched = await api.client.patch(
        location,
        content=b"hello",
        headers={**TUS, **api.auth(), "Upload-Offset": "0", "Content-Type": "application/offset+octet-stream"},
    )
    assert patched.status_code == 204 and patched.headers["upload-offset"] == "5"
    head = await api.client.head(location, headers={**TUS, **api.auth()})
    assert head.status_code == 200 and head.headers["upload-offset"] == "5"
    # The dialect's own error (plain text, Tus-Resumable), from the direct path.
    missing = await api.client.head("/files/" + "A" * 22, headers={**TUS, **api.auth()})
    assert missing.status_code == 404 and missing.headers["tus-resumable"] == "1.0.0"
    # The access log (and the metrics beside it) name the route template, as when FastAPI routes.
    lines = [r.getMessage() for r in caplog.records if r.name == "chunkd.access"]
    assert any("method=PATCH route=/files/{file_id} status=204" in line for line in lines), lines


async def test_a_path_parameter_past_its_limit_gets_fastapis_validation_in_the_dialect(api: Api) -> None:
    too_long = await api.client.head("/files/" + "A" * 65, headers={**TUS, **api.auth()})
    assert too_long.status_code == 400 and too_long.headers["tus-resumable"] == "1.0.0"
    created = await api.client.post(
        "/v1/files", json={"filename": "a.bin", "sizeBytes": 4, "partSizeBytes": 4}, headers=api.auth()
    )
    file_id = created.json()["id"]
    for bad in ("0", "10001", "x"):
        answer = await api.client.put(f"/v1/files/{file_id}/parts/{bad}", content=b"abcd", headers=api.auth())
        assert answer.status_code == 400, (bad, answer.text)
        assert "part_number" in answer.text
    good = await api.client.put(f"/v1/files/{file_id}/parts/1", content=b"abcd", headers=api.auth())
    assert good.status_code == 200
    body = good.json()
    assert body["partNumber"] == 1 and body["sizeBytes"] == 4 and body["etag"].startswith('"')
    assert set(body) == {"partNumber", "sizeBytes", "etag"}  # the documented PartObject, nothing more


def test_a_router_included_with_a_prefix_or_dependencies_is_left_to_fastapi() -> None:
    def build(**include: object) -> DirectRoutes:
        inner = APIRouter()

        @inner.get("/thing/{name}")
        async def thing(request: Request, name: str) -> Response:
            return Response(name)

        app = FastAPI()
        app.include_router(inner, **include)  # type: ignore[arg-type]
        return DirectRoutes(app.router, app.router.middleware_stack)

    assert build().calls
    assert not build(prefix="/api").calls
    assert not build(dependencies=[Depends(lambda: None)]).calls
