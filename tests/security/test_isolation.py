"""The owner-isolation matrix: for every route (rows in routes.py), no credentials → 401, bad
credentials → 401, a key without the route's scope → 403 naming it, another owner's id → 404, and
the owner itself is let through (so the matrix cannot pass against a route that refuses everyone)."""

from __future__ import annotations

import re

import httpx
import pytest

from chunkd.auth.principal import ALL_SCOPES
from tests.conftest import Api
from tests.security.conftest import FULL, MakeApi
from tests.security.routes import PUBLIC, ROUTES, Route


async def _target(api: Api, route: Route) -> str:
    """An object of alice's that the route acts on."""
    if route.target == "upload":
        created = await api.client.post(
            "/v1/files", json={"filename": "a.txt", "sizeBytes": 10, "partSize": 10}, headers=api.auth("alice")
        )
        assert created.status_code == 201, created.text
        file_id = created.json()["id"]
        if route.name == "GET /v1/files/{id}/content":
            await api.client.put(f"/v1/files/{file_id}/parts/1", content=b"0123456789", headers=api.auth("alice"))
            done = await api.client.post(f"/v1/files/{file_id}/complete", headers=api.auth("alice"))
            assert done.status_code == 200
        return str(file_id)
    if route.target == "key":
        record, _ = await api.runtime.keys.create("alice", "files:read", name="victim")
        return record.id
    return ""


async def _call(api: Api, route: Route, target: str, headers: dict[str, str]) -> httpx.Response:
    return await api.client.request(
        route.method,
        route.path.replace("{id}", target),
        json=route.json,
        content=route.content,
        headers={**route.headers, **headers},
    )


@pytest.mark.parametrize("route", ROUTES, ids=lambda r: r.name)
async def test_matrix(make_api: MakeApi, route: Route) -> None:
    lacking = ",".join(sorted(ALL_SCOPES - {route.scope})) if route.scope else FULL
    keys = {
        "alice": ("alice", ",".join(sorted(ALL_SCOPES))),
        "bob": ("bob", ",".join(sorted(ALL_SCOPES))),
        "lacking": ("alice", lacking),
    }
    async with make_api(keys=keys) as api:
        target = await _target(api, route)

        anonymous = await _call(api, route, target, {})
        assert anonymous.status_code == 401, (route.name, anonymous.text)

        forged = await _call(api, route, target, {"Authorization": "Bearer ck_0123456789abcdef_" + "A" * 43})
        assert forged.status_code == 401, (route.name, forged.text)

        if route.scope is not None:
            denied = await _call(api, route, target, api.auth("lacking"))
            assert denied.status_code == 403, (route.name, denied.text)
            assert route.scope in denied.text

        if route.target is not None:
            foreign = await _call(api, route, target, api.auth("bob"))
            assert foreign.status_code == 404, (route.name, foreign.text)

        own = await _call(api, route, target, api.auth("alice"))
        assert own.status_code not in (401, 403, 404), (route.name, own.status_code, own.text)


async def test_every_route_is_in_the_matrix(make_api: MakeApi) -> None:
    """Every operation in the OpenAPI document (every frontend's routes land there) has a row."""
    async with make_api() as api:
        schema = (await api.client.get("/openapi.json")).json()
        declared = {r.name for r in ROUTES} | PUBLIC
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
