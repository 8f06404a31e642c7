"""The owner-isolation matrix: for every route of every frontend (rows in routes.py), no
credentials → 401, bad credentials → 401, a key without the route's scope → 403 naming it, another
owner's id → 404, each in the frontend's own error dialect, and the owner itself is let through (so
the matrix cannot pass against a route that refuses everyone).

The matrix runs on SQLite; ``test_matrix_postgres`` runs one row per frontend on PostgreSQL (the
owner checks are the same code over either repository, and the whole matrix twice would double the
suite's time for no new path)."""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from fastapi.routing import APIRoute
from starlette.routing import BaseRoute, Mount, WebSocketRoute
from starlette.routing import Route as StarletteRoute

from chunkd.auth.principal import ALL_SCOPES
from tests.conftest import Api
from tests.security.conftest import FULL, MakeApi
from tests.security.routes import (
    LINK_ALLOWED,
    LINK_ONLY,
    MULTIPART,
    NOT_ALLOWED,
    PNG,
    PNG_MD5,
    PUBLIC,
    ROUTES,
    TEN,
    TUS,
    Route,
    multipart,
)

# Small asset parts, so a multipart asset is two 5-byte parts.
# Webhook URLs on loopback are allowed here (the matrix is about who may call, not where to).
MATRIX_SETTINGS: dict[str, Any] = {"asset_part_size": 5, "webhook_block_private": False}


async def _ok(response: httpx.Response, *codes: int) -> httpx.Response:
    assert response.status_code in codes, (response.request.url, response.status_code, response.text)
    return response


async def make_target(api: Api, kind: str | None, who: str = "alice") -> str:
    """An object of ``who``'s that a route acts on, made through its frontend's own API."""
    auth = api.auth(who)
    c = api.client
    if kind in ("upload", "upload_done"):
        created = await _ok(
            await c.post("/v1/files", json={"filename": "a.txt", "sizeBytes": 10, "partSize": 10}, headers=auth), 201
        )
        file_id = str(created.json()["id"])
        if kind == "upload_done":
            await _ok(await c.put(f"/v1/files/{file_id}/parts/1", content=TEN, headers=auth), 200, 201)
            await _ok(await c.post(f"/v1/files/{file_id}/complete", headers=auth), 200)
        return file_id
    if kind == "key":
        record, _ = await api.runtime.keys.create(who, "files:read", name="victim")
        return record.id
    if kind in ("tus", "tus_done"):
        headers = {**auth, **TUS, "Upload-Length": "10", "Upload-Metadata": "filename YS50eHQ="}
        body = None
        if kind == "tus_done":
            headers["Content-Type"] = "application/offset+octet-stream"
            body = TEN
        created = await _ok(await c.post("/files", headers=headers, content=body), 201)
        return created.headers["location"].rsplit("/", 1)[1]
    if kind in ("pm", "pm_done"):
        file_uuid = f"matrix-{kind}-{who}"
        fields = [("qquuid", file_uuid), ("qqfilename", "a.txt")]
        if kind == "pm":  # one chunk of a one-chunk file: stored, waiting for ?done
            fields += [
                ("qqpartindex", "0"),
                ("qqpartbyteoffset", "0"),
                ("qqchunksize", "10"),
                ("qqtotalparts", "1"),
                ("qqtotalfilesize", "10"),
            ]
        body = multipart(fields, "qqfile", "blob", TEN)
        sent = await _ok(await c.post("/api/v2/pm/upload/", content=body, headers={**auth, **MULTIPART}), 200)
        assert sent.json()["file_uuid"] == file_uuid
        return file_uuid
    if kind in ("media_upload", "media"):
        body = multipart([], "image", "a.png", PNG)
        headers = {**auth, **MULTIPART, "Content-Range": f"bytes 0-{len(PNG) - 1}/{len(PNG)}"}
        upload_id = str(
            (await _ok(await c.post("/api/v2/media/upload/chunk/", content=body, headers=headers), 201)).json()[
                "upload_id"
            ]
        )
        if kind == "media_upload":
            return upload_id
        done = await c.post(
            "/api/v2/media/upload/complete/", data={"upload_id": upload_id, "md5": PNG_MD5}, headers=auth
        )
        return str((await _ok(done, 201)).json()["id"])
    if kind == "link":
        link, _ = await api.runtime.links.create(who)
        return link.id
    if kind in ("asset", "asset_multi"):
        size = 10 if kind == "asset_multi" else 5
        created = await _ok(await c.post("/asset", json={"filename": "a.txt", "filesize": size}, headers=auth), 201)
        return str(created.json()["fileId"])
    if kind in ("webhook", "webhook_delivery"):
        made = await _ok(await c.post("/v1/webhooks", json={"url": "http://127.0.0.1:9/hook"}, headers=auth), 201)
        endpoint_id = str(made.json()["id"])
        if kind == "webhook":
            return endpoint_id
        await make_target(api, "upload", who)  # an event, fanned out to the endpoint at once:
        await api.runtime.webhooks.repo.dispatch(api.runtime.uploads.clock(), 100)
        log = await _ok(await c.get(f"/v1/webhooks/{endpoint_id}/deliveries", headers=auth), 200)
        return f"{endpoint_id}|{log.json()['data'][0]['id']}"
    assert kind is None, kind
    return ""


def _fill(value: Any, target: str) -> Any:
    if isinstance(value, str):
        return value.replace("{id}", target)
    if isinstance(value, dict):
        return {k: _fill(v, target) for k, v in value.items()}
    if isinstance(value, list):
        return [_fill(v, target) for v in value]
    return value


async def call(api: Api, route: Route, target: str, headers: dict[str, str]) -> httpx.Response:
    path = route.path
    for part in target.split("|"):  # several ids: one per {id}, in order
        path = path.replace("{id}", quote(part, safe=""), 1)
    return await api.client.request(
        route.method,
        path,
        json=_fill(route.json, target),
        content=route.content.replace(b"{id}", target.encode()) if route.content is not None else None,
        headers={**route.headers, **headers},
    )


def assert_dialect(route: Route, response: httpx.Response) -> None:
    """The error is in the frontend's own shape (HEAD answers carry no body)."""
    status = response.status_code
    if route.dialect == "tus":
        assert response.headers.get("tus-resumable") == "1.0.0", (route.id, response.headers)
        if route.method != "HEAD":
            assert response.headers["content-type"].startswith("text/plain"), (route.id, response.headers)
        return
    if route.method == "HEAD":
        return
    body = response.json()
    if route.dialect == "native":
        assert isinstance(body["error"]["code"], str) and isinstance(body["error"]["message"], str), body
    elif route.dialect == "pm":
        assert body["success"] is False and isinstance(body["error"], str), body
    elif route.dialect == "media":
        assert isinstance(body["detail"], str) and isinstance(body["code"], str), body
    elif route.dialect in ("asset", "seed"):
        if status in (401, 403):
            assert isinstance(body["message"], str) and isinstance(body["detail"], str), body
        else:
            assert body["status"] == "error" and isinstance(body["message"], str), body
    if status == 401:
        assert response.headers.get("www-authenticate", "").startswith("Bearer"), (route.id, response.headers)


async def run_row(api: Api, route: Route) -> None:
    target = await make_target(api, route.target)

    anonymous = await call(api, route, target, {})
    assert anonymous.status_code == 401, (route.id, anonymous.text)
    assert_dialect(route, anonymous)

    forged = await call(api, route, target, {"Authorization": "Bearer ck_0123456789abcdef_" + "A" * 43})
    assert forged.status_code == 401, (route.id, forged.text)

    if route.scope is not None:
        denied = await call(api, route, target, api.auth("lacking"))
        assert denied.status_code == 403, (route.id, denied.text)
        assert_dialect(route, denied)
        if route.method != "HEAD":
            assert route.scope in denied.text, (route.id, denied.text)

    if route.target is not None:
        foreign = await call(api, route, target, api.auth("bob"))
        # Seed 003 lists no 404: its complete says an unknown fileId in its 400.
        missing = 400 if route.id == "POST /asset/complete" else 404
        assert foreign.status_code == missing, (route.id, foreign.text)
        if missing != 404:
            assert "no asset with fileId" in foreign.text, (route.id, foreign.text)
        assert_dialect(route, foreign)
        # bob's own object of the same kind is untouched by alice's requests below, and alice's by bob's.
        still = await call(api, route, target, api.auth("alice"))
        assert still.status_code not in (401, 403, 404), (route.id, still.status_code, still.text)
        assert "no asset with fileId" not in still.text, (route.id, still.text)
        return

    own = await call(api, route, target, api.auth("alice"))
    assert own.status_code not in (401, 403, 404), (route.id, own.status_code, own.text)


def _keys(route: Route) -> dict[str, tuple[str, str]]:
    lacking = ",".join(sorted(ALL_SCOPES - {route.scope} - route.also)) if route.scope else FULL
    return {
        "alice": ("alice", ",".join(sorted(ALL_SCOPES))),
        "bob": ("bob", ",".join(sorted(ALL_SCOPES))),
        "lacking": ("alice", lacking),
    }


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
@pytest.mark.parametrize("route", ROUTES, ids=lambda r: r.id)
async def test_matrix(make_api: MakeApi, route: Route) -> None:
    async with make_api(keys=_keys(route), **MATRIX_SETTINGS) as api:
        await run_row(api, route)


# One row per frontend (and the key routes), on PostgreSQL.
PG_ROWS = [
    r
    for r in ROUTES
    if r.id
    in {
        "GET /v1/files/{id}",
        "DELETE /v1/keys/{id}",
        "PATCH /files/{id}",
        "GET /api/v2/pm/upload/{id}/info",
        "GET /api/v2/media/{id}/",
        "POST /asset/complete",
    }
]


@pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)
@pytest.mark.parametrize("route", PG_ROWS, ids=lambda r: r.id)
async def test_matrix_postgres(make_api: MakeApi, route: Route) -> None:
    async with make_api(keys=_keys(route), **MATRIX_SETTINGS) as api:
        await run_row(api, route)


def _declared() -> set[str]:
    return {r.name for r in ROUTES} | PUBLIC | NOT_ALLOWED | LINK_ONLY


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
@pytest.mark.parametrize("route", ROUTES, ids=lambda r: r.id)
async def test_link_token_matrix(make_api: MakeApi, route: Route) -> None:
    """An upload link's token of alice's, on every route and alice's own objects (none made
    through the link): refused (403) or not found (404), except creating an upload, which it may."""
    async with make_api(keys=_keys(route), **MATRIX_SETTINGS) as api:
        target = await make_target(api, route.target)
        _, token = await api.runtime.links.create("alice")
        answer = await call(api, route, target, {"Authorization": f"Bearer {token}"})
        if route.target is None and route.name in LINK_ALLOWED:
            assert answer.status_code == 201, (route.id, answer.status_code, answer.text)
        else:
            assert answer.status_code in (403, 404), (route.id, answer.status_code, answer.text)
            assert_dialect(route, answer)


async def test_every_route_is_in_the_matrix(make_api: MakeApi) -> None:
    """Every operation in the OpenAPI document (every frontend's routes land there) has a row."""
    async with make_api() as api:
        schema = (await api.client.get("/openapi.json")).json()
        declared = _declared()
        missing = []
        for path, operations in schema["paths"].items():
            normal = re.sub(r"\{[^}]+\}", "{id}", path)
            if path.endswith("/parts/{part_number}"):
                normal = normal.rsplit("/", 1)[0] + "/1"
            for method in operations:
                name = f"{method.upper()} {normal}"
                if name not in declared:
                    missing.append(name)
        assert len(schema["paths"]) >= 8
        assert not missing, f"routes missing from tests/security/routes.py: {missing}"


def app_routes(routes: Iterable[BaseRoute], prefix: str = "") -> Iterator[tuple[str, str]]:
    """(method, path) of every route the app answers, found by walking its routing tree: routes,
    mounted apps and included routers at any depth. Recent FastAPI keeps an included router as one
    branch object in ``app.routes`` (its routes are not copied there), so looking only for
    ``APIRoute`` in ``app.routes`` sees almost nothing. A kind of route this walk does not know
    fails the test rather than being passed over."""
    for route in routes:
        branch = getattr(route, "original_router", None)  # FastAPI's included-router branch
        if branch is not None:
            inner = prefix + getattr(getattr(route, "include_context", None), "prefix", "")
            yield from app_routes([*branch.routes, *getattr(branch, "_low_priority_routes", [])], inner)
        elif isinstance(route, Mount):
            children = route.routes
            if children:
                yield from app_routes(children, prefix + route.path)
            else:  # a mounted ASGI app (static files, another framework): one entry for all of it
                yield "MOUNT", prefix + route.path
        elif isinstance(route, (APIRoute, StarletteRoute)):
            methods = set(route.methods or ())
            if not isinstance(route, APIRoute) and "GET" in methods:
                methods.discard("HEAD")  # Starlette adds HEAD to a plain GET route: the same handler
            for method in sorted(methods):
                yield method, prefix + route.path
        elif isinstance(route, WebSocketRoute):
            yield "WEBSOCKET", prefix + route.path
        else:
            raise AssertionError(f"unknown kind of route {type(route).__name__}: teach app_routes about it")


def _normal(path: str) -> str:
    normal = re.sub(r"\{[^}]+\}", "{id}", path)
    return normal.rsplit("/", 1)[0] + "/1" if normal.endswith("/parts/{id}") else normal


async def test_every_route_of_the_app_is_in_the_matrix(make_api: MakeApi) -> None:
    """Every route the app answers has a row, whether or not the OpenAPI document shows it (tus,
    trailing-slash twins, the docs pages): a twin counts as covered by the row of its slash-less or
    slashed form, which runs the same handler."""
    async with make_api() as api:
        app = api.client._transport.app  # type: ignore[attr-defined]
        declared = _declared()
        found = sorted(set(app_routes(app.routes)))
        missing = []
        for method, path in found:
            normal = _normal(path)
            names = {f"{method} {normal}", f"{method} {normal.rstrip('/')}", f"{method} {normal}/"}
            if not names & declared:
                missing.append(f"{method} {normal}")
        # The walk reaches into every frontend (a walk that sees only /healthz proves nothing).
        for prefix in ("/v1/files", "/files", "/api/v2/pm/upload", "/api/v2/media", "/asset", "/v1/keys"):
            assert any(path.startswith(prefix) for _, path in found), f"no route under {prefix} found"
        assert not missing, f"routes missing from tests/security/routes.py: {missing}"
