"""The shared middleware reaches routes it was never told about: a frontend added to the app later
(as tus and the seed APIs are) gets rate limits, CORS and the body guard without cooperating."""

from __future__ import annotations

import asyncio

import httpx
from fastapi import APIRouter, Request

from chunkd.app import create_app
from chunkd.frontends.http import principal
from chunkd.settings import Settings


async def test_a_later_frontend_is_guarded(settings: Settings) -> None:
    app = create_app(
        settings.model_copy(
            update={
                "rate_limits": "read=2/minute;write=2/minute",
                "cors_origins": "https://app.example",
                "body_idle_timeout_seconds": 0.3,
            }
        )
    )
    extra = APIRouter(prefix="/later")  # not /files: tus is mounted there now
    hits: list[str] = []

    @extra.get("/{upload_id}")
    async def head_like(request: Request, upload_id: str) -> dict[str, str]:
        who = await principal(request, "files:read")
        hits.append(who.owner)
        return {"id": upload_id}

    @extra.patch("/{upload_id}")
    async def patch(request: Request, upload_id: str) -> dict[str, int]:
        await principal(request, "files:create")
        total = 0
        async for chunk in request.stream():
            total += len(chunk)
        return {"received": total}

    app.include_router(extra)
    async with app.router.lifespan_context(app):
        _, key = await app.state.chunkd.keys.create("carol", "files:read,files:create")
        auth = {"Authorization": f"Bearer {key}", "Origin": "https://app.example"}
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client:
            first = await client.get("/later/abc", headers=auth)
            assert first.status_code == 200 and first.headers["RateLimit-Limit"] == "2"
            assert first.headers["access-control-allow-origin"] == "https://app.example"
            assert "upload-offset" in first.headers["access-control-expose-headers"].lower()
            assert (await client.get("/later/abc", headers=auth)).status_code == 200
            limited = await client.get("/later/abc", headers=auth)
            assert limited.status_code == 429 and int(limited.headers["Retry-After"]) >= 1
            assert hits == ["carol", "carol"]

            async def stalling() -> object:
                yield b"x" * 100
                await asyncio.sleep(2)
                yield b"never"

            cut = await client.patch("/later/abc", content=stalling(), headers=auth)
            assert cut.status_code == 408 and cut.json()["error"]["code"] == "body_timeout"
