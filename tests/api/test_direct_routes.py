"""Plain endpoints called without FastAPI's router and dependency solving (frontends.http.routes)
answer exactly as through FastAPI: the same route template in metrics, path parameters outside
their limits left to FastAPI's validation (in the dialect's error shape), errors rendered by the
dialect, and the hot paths really taken directly."""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path
from typing import Annotated

import httpx
import pytest
from fastapi import APIRouter, Body, Depends, FastAPI
from fastapi.routing import APIRoute
from pydantic import BaseModel
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Message, Receive, Scope, Send

from chunkd.app import create_app
from chunkd.frontends.http import json_body
from chunkd.frontends.http.routes import DirectCall, DirectRoutes, direct_call, walk_routes
from chunkd.settings import Settings
from tests.conftest import Api

TUS = {"Tus-Resumable": "1.0.0"}


def calls_by_route() -> dict[tuple[str, str], DirectCall | None]:
    with tempfile.TemporaryDirectory(prefix="chunkd-routes-") as data_dir:  # never opened: no runtime starts
        app = create_app(Settings(data_dir=Path(data_dir)))
    return {
        (method, route.path): direct_call(route)
        for route in walk_routes(app.router.routes)
        if isinstance(route, APIRoute)
        for method in route.methods
    }


def test_hot_paths_are_called_directly_and_answers_fastapi_serialises_are_not() -> None:
    calls = calls_by_route()
    for hot in (
        ("PATCH", "/files/{file_id}"),
        ("HEAD", "/files/{file_id}"),
        ("POST", "/files"),
        ("POST", "/v1/files"),
        ("PUT", "/v1/files/{file_id}/parts/{part_number}"),
        ("POST", "/v1/files/{file_id}/complete"),
        ("POST", "/api/v2/pm/upload"),
    ):
        assert calls[hot] is not None, hot
    assert calls[("POST", "/v1/files")].body is not None  # type: ignore[union-attr]
    assert calls[("POST", "/v1/keys")] is None  # returns a dict for FastAPI to serialise


# Bodies and content types FastAPI treats differently: not JSON, no content type (FastAPI is strict),
# ``+json``, parameters, broken and deep JSON, JSON that is not an object, wrong types, extra fields.
JSON_TYPES = [None, "application/json", "Application/JSON; charset=utf-8", "application/vnd.x+json", "text/plain"]
CREATE_BODIES = [
    b"",
    b"null",
    b"[]",
    b"{",
    b"\xff",
    b"[" * 100 + b"]" * 100,
    b'{"filename":"a.txt","sizeBytes":5}',
    b'{"filename":"a.txt","sizeBytes":5.0,"extra":1}',
    b'{"filename":"","sizeBytes":5}',
    b'{"sizeBytes":5,"md5":"zz"}',
]
COMPLETE_BODIES = [b"", b"null", b"{}", b"[]", b"{", b'{"md5":5}', b'{"md5":"zz"}', b'{"md5":null}']


def _comparable(answer: httpx.Response) -> tuple[int, str | None, object]:
    body = answer.json()
    if answer.is_success:  # a new upload each time: compare its shape and the values a request sets
        body = {key: value for key, value in body.items() if key not in {"id", "createdAt", "expiresAt", "completedAt"}}
        body.pop("uploadUrl", None)
    return answer.status_code, answer.headers.get("content-type"), body


async def test_json_body_routes_answer_directly_exactly_as_through_fastapi(tmp_path: Path) -> None:
    app = create_app(Settings(data_dir=tmp_path))
    async with app.router.lifespan_context(app):
        _, key = await app.state.chunkd.keys.create("alice", "files:create,files:read")
        auth = {"Authorization": f"Bearer {key}"}
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client:
            assert (await client.get("/healthz")).status_code == 200  # the stack is built at the first request
            direct = app.router.middleware_stack
            assert isinstance(direct, DirectRoutes)
            calls = direct.calls

            async def both(method: str, path: str, body: bytes, content_type: str | None) -> list[object]:
                headers = {**auth, **({"Content-Type": content_type} if content_type else {})}
                answers = []
                for routed_by in (calls, {}):  # directly, then by FastAPI
                    direct.calls = routed_by
                    target = path
                    if "{id}" in path:  # a fresh upload each time, ready to complete
                        made = await client.post("/v1/files", json={"filename": "e", "sizeBytes": 0}, headers=auth)
                        target = path.format(id=made.json()["id"])
                        assert (await client.put(f"{target[:-9]}/parts/1", headers=auth)).status_code == 200
                    answers.append(_comparable(await client.request(method, target, content=body, headers=headers)))
                direct.calls = calls
                return answers

            for content_type in JSON_TYPES:
                for body in CREATE_BODIES:
                    first, second = await both("POST", "/v1/files", body, content_type)
                    assert first == second, (content_type, body)
                for body in COMPLETE_BODIES:
                    first, second = await both("POST", "/v1/files/{id}/complete", body, content_type)
                    assert first == second, (content_type, body)


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
    created = await api.client.post("/v1/files", json={"filename": "a.bin", "sizeBytes": 4}, headers=api.auth())
    file_id = created.json()["id"]
    for bad in ("0", "10001", "x"):
        answer = await api.client.put(f"/v1/files/{file_id}/parts/{bad}", content=b"abcd", headers=api.auth())
        assert answer.status_code == 400, (bad, answer.text)
        assert answer.json()["error"]["field"] == "partNumber"  # as the answers name it
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


class Thing(BaseModel):
    name: str


# Endpoints at module level: their annotations (strings here) must resolve, as in the app's routers.
bodies = APIRouter()


@bodies.post("/model")
async def model_body(request: Request, body: Thing) -> Response:
    return Response(body.name)


@bodies.post("/optional")
async def optional_body(request: Request, body: Annotated[Thing | None, Body()] = None) -> Response:
    return Response(body.name if body else "")


@bodies.post("/embedded")
async def embedded_body(request: Request, body: Annotated[Thing, Body(embed=True)]) -> Response:
    return Response(body.name)


@bodies.post("/two")
async def two_bodies(request: Request, first: Thing, second: Thing) -> Response:
    return Response(first.name + second.name)


@bodies.post("/scalar")
async def scalar_body(request: Request, name: Annotated[str, Body()]) -> Response:
    return Response(name)


@bodies.post("/dict")
async def dict_answer(request: Request, body: Thing) -> dict[str, str]:  # FastAPI serialises it: not direct
    return {"name": body.name}


def test_only_a_single_unembedded_json_model_body_is_read_directly() -> None:
    app = FastAPI()
    app.include_router(bodies)
    calls = {route.path: direct_call(route) for route in walk_routes(app.router.routes) if isinstance(route, APIRoute)}
    for direct in ("/model", "/optional"):
        call = calls[direct]
        assert call is not None and call.body is not None, direct
    for left in ("/embedded", "/two", "/scalar", "/dict"):
        assert calls[left] is None, left


async def test_an_app_with_fastapis_body_limit_leaves_json_bodies_to_fastapi() -> None:
    app = FastAPI()
    app.include_router(bodies)
    direct = DirectRoutes(app.router, app.router.middleware_stack)
    assert direct.calls
    taken: list[str] = []

    async def fastapi(scope: Scope, receive: Receive, send: Send) -> None:
        taken.append(scope["path"])

    direct.dispatch = fastapi
    scope = {"type": "http", "method": "POST", "path": "/model", "headers": [], "starlette.max_body_size": 10}
    await direct(scope, _no_body, _discard)
    assert taken == ["/model"]


async def _no_body() -> Message:
    return {"type": "http.request", "body": b"", "more_body": False}


async def _discard(message: Message) -> None:
    return None


def test_a_fastapi_whose_body_validation_changed_leaves_json_bodies_to_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(json_body, "_VALIDATES", False)
    app = FastAPI()
    app.include_router(bodies)
    calls = {route.path: direct_call(route) for route in walk_routes(app.router.routes) if isinstance(route, APIRoute)}
    assert calls["/model"] is None and calls["/optional"] is None
