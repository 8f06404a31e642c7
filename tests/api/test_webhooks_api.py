"""Events and webhooks through the in-process app (SQLite and PostgreSQL), delivered by the app's own
background worker to a real receiver process that verifies every Standard Webhooks signature."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import logging
import os
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from chunkd.app import create_app
from chunkd.backends.repository.sqlalchemy.tables import events
from chunkd.settings import Settings
from tests.conftest import Api, settings_with
from tests.support.media_files import chunked_upload, make_png
from tests.support.server import free_port
from tests.support.waiting import until
from tests.support.webhook_receiver import WebhookReceiver

OPERATOR_SECRET = "whsec_" + base64.b64encode(b"operator-secret-of-32-bytes-long").decode()
ADMIN = "files:create,files:read,files:delete,webhooks:admin"


@pytest.fixture
def receiver(tmp_path: Path) -> Iterator[WebhookReceiver]:
    server = WebhookReceiver(tmp_path / "receiver", free_port())
    server.set_secret("/operator", OPERATOR_SECRET)
    with server:
        yield server


@pytest.fixture
def settings(settings: Settings, receiver: WebhookReceiver) -> Settings:
    return settings_with(
        settings,
        webhook_urls=receiver.url("/operator"),
        webhook_secret=OPERATOR_SECRET,
        webhook_poll_seconds=0.05,
        webhook_retry_base_seconds=0.05,
        webhook_retry_max_delay_seconds=0.2,
        webhook_disable_after_seconds=0.5,
        webhook_block_private=False,  # the receiver is on loopback; the refusal has its own test
    )


async def admin(api: Api, owner: str) -> dict[str, str]:
    _, token = await api.runtime.keys.create(owner, ADMIN)
    return {"Authorization": f"Bearer {token}"}


async def upload_file(api: Api, auth: dict[str, str], data: bytes, *, complete: bool = True) -> str:
    created = await api.client.post("/v1/files", json={"filename": "a.bin", "sizeBytes": len(data)}, headers=auth)
    assert created.status_code == 201, created.text
    file_id: str = created.json()["id"]
    assert (await api.client.put(f"/v1/files/{file_id}/parts/1", content=data, headers=auth)).status_code == 200
    if complete:
        done = await api.client.post(f"/v1/files/{file_id}/complete", headers=auth)
        assert done.status_code == 200, done.text
    return file_id


def types_for(messages: list[dict[str, Any]], file_id: str) -> list[str]:
    """The types of the events about ``file_id``, sorted (deliveries are concurrent: no order is promised)."""
    return sorted(m["payload"]["type"] for m in messages if m["payload"]["data"]["id"] == file_id)


async def test_lifecycle_events_reach_the_operator_endpoint_signed(api: Api, receiver: WebhookReceiver) -> None:
    auth = api.auth()
    data = os.urandom(3000)
    kept = await upload_file(api, auth, data)
    view = (await api.client.get(f"/v1/files/{kept}", headers=auth)).json()
    cancelled = await upload_file(api, auth, b"x", complete=False)
    assert (await api.client.post(f"/v1/files/{cancelled}/cancel", headers=auth)).status_code == 200
    assert (await api.client.delete(f"/v1/files/{kept}", headers=auth)).status_code == 204

    got = await receiver.arrived(lambda ms: len(ms) >= 5, path="/operator")
    assert all(m["verified"] for m in got)
    assert types_for(got, kept) == ["upload.completed", "upload.created", "upload.deleted"]
    assert types_for(got, cancelled) == ["upload.cancelled", "upload.created"]
    ids = [m["id"] for m in got]
    assert len(set(ids)) == 5 and all(i.startswith("evt_") for i in ids)
    completed = next(m["payload"] for m in got if m["payload"]["type"] == "upload.completed")
    # The file object exactly as GET /v1/files/{id} shows it (but its upload URL, a grant for whoever
    # asked: never in an event), plus the frontend; the upload link it came through too (an id, no grant).
    upload_url = {"uploadUrl", "uploadMethod", "uploadHeaders"}
    assert {k for k in view if k not in completed["data"]} == upload_url
    assert completed["data"] == {**{k: v for k, v in view.items() if k not in upload_url}, "frontend": "native"}
    assert "uploadLink" in completed["data"]
    assert completed["data"]["md5"] == hashlib.md5(data).hexdigest() and completed["timestamp"].endswith("Z")
    cancel = next(m["payload"] for m in got if m["payload"]["type"] == "upload.cancelled")
    assert cancel["data"]["status"] == "CANCELLED" and cancel["data"]["parts"] == []


async def test_a_failed_change_writes_no_event(api: Api) -> None:
    """The event is committed with the state change or not at all: a refused complete adds none."""
    auth = api.auth()
    file_id = await upload_file(api, auth, b"abc", complete=False)
    wrong = await api.client.post(f"/v1/files/{file_id}/complete", json={"md5": "0" * 32}, headers=auth)
    assert wrong.status_code == 400
    async with api.runtime.repo.engine.connect() as conn:
        written = (await conn.execute(select(events.c.type).where(events.c.upload_id == file_id))).scalars().all()
    assert written == ["upload.created"]


async def test_expiry_and_media_publication_are_events(api: Api, receiver: WebhookReceiver) -> None:
    auth = api.auth()
    pending = await upload_file(api, auth, b"abc", complete=False)
    later = api.runtime.uploads.clock() + timedelta(days=2)
    service = api.runtime.uploads
    clock = service.clock
    service.clock = lambda: later
    try:
        assert await service.expire_due() == 1
    finally:
        service.clock = clock
    png = make_png(8, 8)
    media_upload = await chunked_upload(api.client, png, "a.png", auth)
    published = await api.client.post(
        "/api/v2/media/upload/complete/",
        data={"upload_id": media_upload, "md5": hashlib.md5(png).hexdigest()},
        headers=auth,
    )
    assert published.status_code == 201, published.text
    # Every event of both uploads: deliveries are sent concurrently, so one event's arrival says
    # nothing about the others' (waiting for media.published alone failed once under load).
    got = await receiver.arrived(
        lambda ms: len(types_for(ms, pending)) >= 2 and len(types_for(ms, media_upload)) >= 3, path="/operator"
    )
    assert types_for(got, pending) == ["upload.created", "upload.expired"]
    assert types_for(got, media_upload) == ["media.published", "upload.completed", "upload.created"]
    media = next(m["payload"]["data"] for m in got if m["payload"]["type"] == "media.published")
    assert media["frontend"] == "media" and media["media"]["id"] == published.json()["id"]
    assert media["media"]["type"] == "image" and media["media"]["width"] == 8


async def test_owner_endpoints_get_only_their_owners_events(api: Api, receiver: WebhookReceiver) -> None:
    alice, bob = await admin(api, "alice"), await admin(api, "bob")
    made = await api.client.post("/v1/webhooks", json={"url": receiver.url("/alice")}, headers=alice)
    assert made.status_code == 201, made.text
    endpoint = made.json()
    assert endpoint["secret"].startswith("whsec_") and endpoint["events"] is None
    receiver.set_secret("/alice", endpoint["secret"])
    only_done = await api.client.post(
        "/v1/webhooks", json={"url": receiver.url("/bob"), "events": ["upload.completed"]}, headers=bob
    )
    assert only_done.status_code == 201
    receiver.set_secret("/bob", only_done.json()["secret"])

    mine = await upload_file(api, alice, b"alice's")
    theirs = await upload_file(api, bob, b"bob's")
    await receiver.arrived(lambda ms: len(ms) >= 4, path="/operator")  # both uploads' events went out
    alice_got = await receiver.arrived(lambda ms: len(ms) >= 2, path="/alice")
    bob_got = await receiver.arrived(lambda ms: len(ms) >= 1, path="/bob")
    assert all(m["verified"] for m in alice_got + bob_got)
    assert types_for(alice_got, mine) == ["upload.completed", "upload.created"] and len(alice_got) == 2
    assert types_for(bob_got, theirs) == ["upload.completed"] and len(bob_got) == 1

    # The endpoint and its log are the owner's alone; the secret is not shown again.
    listed = (await api.client.get("/v1/webhooks", headers=alice)).json()["data"]
    assert [e["id"] for e in listed] == [endpoint["id"]] and listed[0].get("secret") is None
    for path in (f"/v1/webhooks/{endpoint['id']}", f"/v1/webhooks/{endpoint['id']}/deliveries"):
        assert (await api.client.get(path, headers=bob)).status_code == 404
    assert (await api.client.delete(f"/v1/webhooks/{endpoint['id']}", headers=bob)).status_code == 404
    while True:  # each success is recorded once the receiver's answer is back: after it arrived
        log = (await api.client.get(f"/v1/webhooks/{endpoint['id']}/deliveries", headers=alice)).json()["data"]
        if {d["status"] for d in log} == {"delivered"}:
            break
        await asyncio.sleep(0.05)
    assert len(log) == 2
    assert {d["eventId"] for d in log} == {m["id"] for m in alice_got}
    assert all(d["attempts"] == 1 and d["responseStatus"] == 204 for d in log)

    # Redelivery on request: a new delivery of the same event, with the same webhook-id.
    first = log[-1]
    again = await api.client.post(f"/v1/webhooks/{endpoint['id']}/deliveries/{first['id']}/retry", headers=alice)
    assert again.status_code == 202, again.text
    assert again.json()["eventId"] == first["eventId"] and again.json()["id"] != first["id"]
    repeated = await receiver.arrived(lambda ms: len(ms) >= 3, path="/alice")
    assert [m["id"] for m in repeated].count(first["eventId"]) == 2
    assert (
        await api.client.post(f"/v1/webhooks/{endpoint['id']}/deliveries/{first['id']}/retry", headers=bob)
    ).status_code == 404

    assert (await api.client.delete(f"/v1/webhooks/{endpoint['id']}", headers=alice)).status_code == 204
    assert (await api.client.get("/v1/webhooks", headers=alice)).json()["data"] == []


async def test_webhook_requests_are_checked(api: Api, receiver: WebhookReceiver) -> None:
    alice = await admin(api, "alice")
    no_scope = await api.client.post("/v1/webhooks", json={"url": receiver.url("/x")}, headers=api.auth())
    assert no_scope.status_code == 403 and no_scope.json()["error"]["code"] == "missing_scope"
    for body, field in (
        ({"url": "ftp://example.com/hook"}, "url"),
        ({"url": "http://user:pw@example.com/hook"}, "url"),
        ({"url": receiver.url("/x"), "events": ["upload.exploded"]}, "events"),
        ({"url": receiver.url("/x"), "events": []}, "events"),
        # What the HTTP client cannot send to is refused at once (a control character let an
        # endpoint jam delivery; a host IDNA cannot encode was a 500).
        ({"url": "http://93.184.216.34/\u0000x"}, "url"),
        ({"url": "http://93.184.216.34/a b"}, "url"),
        ({"url": "http://a..b/"}, "url"),
        ({"url": f"http://{'a' * 64}.example/"}, "url"),
    ):
        response = await api.client.post("/v1/webhooks", json=body, headers=alice)
        assert response.status_code == 400 and response.json()["error"]["field"] == field, (body, response.text)
    # Owner URLs must be public by default (SSRF): loopback, private and metadata addresses are refused.
    api.runtime.webhooks.block_private = True
    for url in (
        receiver.url("/x"),
        "http://10.0.0.1/hook",
        "http://169.254.169.254/latest",
        "http://[::1]:80/",
        # IPv4 inside IPv6: mapped, NAT64 (RFC 6052), 6to4, IPv4-compatible.
        "http://[::ffff:127.0.0.1]/",
        "http://[64:ff9b::a9fe:a9fe]/latest",
        "http://[64:ff9b:1::a00:1]/",
        "http://[2002:a00:1::1]/",
        "http://[::a00:1]/",
        # Global to Python 3.11's ipaddress, no receiver's: multicast, IPv6 site-local, IETF
        # protocol assignments, the retired 6to4 relay, SIIT's IPv4-translated ::ffff:0:a.b.c.d.
        "http://224.0.0.1/",
        "http://239.255.255.250:1900/",
        "http://[ff02::1]/",
        "http://[ff05::]/",
        "http://[fec0::1]/",
        "http://192.0.0.8/",
        "http://192.88.99.1/",
        "http://[::ffff:0:7f00:1]/",
        "http://[::ffff:0:a9fe:a9fe]/",
    ):
        response = await api.client.post("/v1/webhooks", json={"url": url}, headers=alice)
        assert response.status_code == 400, (url, response.text)
        assert response.json()["error"]["field"] == "url" and "public" in response.json()["error"]["message"]
    assert (await api.client.get("/v1/webhooks", headers=alice)).json()["data"] == []


async def test_parallel_registrations_stay_within_the_cap(api: Api, receiver: WebhookReceiver) -> None:
    """Each registration counted the owner's endpoints before any was stored: 30 at once made 30."""
    from chunkd.service.webhooks import MAX_ENDPOINTS_PER_OWNER

    alice = await admin(api, "alice")
    made = await asyncio.gather(
        *(
            api.client.post("/v1/webhooks", json={"url": receiver.url(f"/n{n}")}, headers=alice)
            for n in range(MAX_ENDPOINTS_PER_OWNER + 10)
        )
    )
    assert sorted(r.status_code for r in made) == [201] * MAX_ENDPOINTS_PER_OWNER + [400] * 10
    assert len((await api.client.get("/v1/webhooks", headers=alice)).json()["data"]) == MAX_ENDPOINTS_PER_OWNER


async def test_an_endpoint_failing_for_long_is_disabled(api: Api, receiver: WebhookReceiver) -> None:
    """Every attempt to an endpoint whose secret the receiver does not know gets a 400; after
    failing for longer than webhook_disable_after_seconds (0.5 s here) the endpoint is disabled,
    and its log shows the attempts and the answers."""
    alice = await admin(api, "alice")
    made = (await api.client.post("/v1/webhooks", json={"url": receiver.url("/broken")}, headers=alice)).json()
    await upload_file(api, alice, b"x", complete=False)
    while True:  # the worker retries every 0.05-0.2 s; wait until it gives up on the endpoint
        endpoint = (await api.client.get(f"/v1/webhooks/{made['id']}", headers=alice)).json()
        if endpoint["disabledAt"] is not None:
            break
        await asyncio.sleep(0.05)
    assert endpoint["failingSince"] is not None and endpoint["disabledReason"] == "failing"
    log = (await api.client.get(f"/v1/webhooks/{made['id']}/deliveries", headers=alice)).json()["data"]
    assert len(log) == 1 and log[0]["attempts"] >= 2 and log[0]["responseStatus"] == 400
    assert log[0]["lastError"] == "HTTP 400" and log[0]["status"] == "pending"

    # Enabled again once its receiver knows the secret: the delivery that waited is sent at once
    # (its next attempt was up to 0.2 s away; the disabling stopped it) and the streak is cleared.
    receiver.set_secret("/broken", made["secret"])
    enabled = await api.client.patch(f"/v1/webhooks/{made['id']}", json={"enabled": True}, headers=alice)
    assert enabled.status_code == 200, enabled.text
    assert enabled.json()["disabledAt"] is None and enabled.json()["failingSince"] is None
    assert enabled.json()["id"] == made["id"] and enabled.json().get("secret") is None
    got = await receiver.arrived(lambda ms: any(m["verified"] for m in ms), path="/broken")
    assert [m["id"] for m in got if m["verified"]] == [log[0]["eventId"]]


async def test_a_receiver_that_answers_410_has_its_endpoint_disabled_at_once(
    api: Api, receiver: WebhookReceiver, caplog: pytest.LogCaptureFixture
) -> None:
    """Standard Webhooks: 410 Gone means the receiver wants no more webhooks from this source, and the
    sender should disable the endpoint. It was retried like any failure until the streak disabled it
    (days by default). Now the first 410 disables it, its owner sees why, its later events wait, and
    enabling it again sends them."""
    caplog.set_level(logging.WARNING, logger="chunkd.service.delivery")
    alice = await admin(api, "alice")
    made = (await api.client.post("/v1/webhooks", json={"url": receiver.url("/gone")}, headers=alice)).json()
    path = f"/v1/webhooks/{made['id']}"
    receiver.set_secret("/gone", made["secret"])
    receiver.set_status("/gone", 410)
    first = await upload_file(api, alice, b"first", complete=False)

    async def disabled() -> dict[str, Any] | None:
        endpoint: dict[str, Any] = (await api.client.get(path, headers=alice)).json()
        return endpoint if endpoint["disabledAt"] is not None else None

    endpoint = await until(disabled, what="the endpoint disabled by its 410")
    assert endpoint["disabledReason"] == "gone"
    [answered] = receiver.messages("/gone")  # one attempt, not a retry streak
    assert answered["payload"]["data"]["id"] == first
    [logged] = (await api.client.get(f"{path}/deliveries", headers=alice)).json()["data"]
    assert (logged["status"], logged["attempts"], logged["responseStatus"]) == ("pending", 1, 410)
    assert "gone" in logged["lastError"]
    assert any("410 Gone" in r.getMessage() and made["id"] in r.getMessage() for r in caplog.records)

    second = await upload_file(api, alice, b"second")
    await receiver.arrived(
        lambda ms: types_for(ms, second) == ["upload.completed", "upload.created"], path="/operator"
    )  # the operator's endpoint got both new events: their dispatch ran, and the disabled one got none
    assert len(receiver.messages("/gone")) == 1

    receiver.set_status("/gone", None)
    enabled = (await api.client.patch(path, json={"enabled": True}, headers=alice)).json()
    assert (enabled["disabledAt"], enabled["disabledReason"]) == (None, None)
    got = await receiver.arrived(lambda ms: len(ms) >= 2, path="/gone")  # what waited is sent
    assert [m["payload"]["data"]["id"] for m in got[1:]] == [first]


async def test_an_owner_changes_an_endpoint_in_place(api: Api, receiver: WebhookReceiver) -> None:
    """A new URL and event types keep the id, the secret and the log; disabled by hand, an endpoint
    gets nothing until it is enabled again. Only the owner can change it, and only as documented."""
    alice, bob = await admin(api, "alice"), await admin(api, "bob")
    made = (await api.client.post("/v1/webhooks", json={"url": receiver.url("/old")}, headers=alice)).json()
    path = f"/v1/webhooks/{made['id']}"
    receiver.set_secret("/new", made["secret"])
    moved = await api.client.patch(
        path, json={"url": receiver.url("/new"), "events": ["upload.completed"]}, headers=alice
    )
    assert moved.status_code == 200, moved.text
    assert (moved.json()["url"], moved.json()["events"]) == (receiver.url("/new"), ["upload.completed"])
    file_id = await upload_file(api, alice, b"moved")
    got = await receiver.arrived(lambda ms: len(ms) >= 1, path="/new")
    assert [m["payload"]["type"] for m in got] == ["upload.completed"] and got[0]["verified"]
    assert got[0]["payload"]["data"]["id"] == file_id and receiver.messages("/old") == []

    off = await api.client.patch(path, json={"enabled": False}, headers=alice)
    assert off.status_code == 200 and off.json()["disabledAt"] is not None and off.json()["disabledReason"] == "owner"
    everything = await api.client.patch(path, json={"events": None}, headers=alice)
    assert everything.json()["events"] is None and everything.json()["disabledAt"] == off.json()["disabledAt"]
    quiet = await upload_file(api, alice, b"while disabled")
    await receiver.arrived(
        lambda ms: {m["payload"]["data"]["id"] for m in ms} >= {quiet}, path="/operator"
    )  # the operator's endpoint got its events, so the dispatch ran
    assert len(receiver.messages("/new")) == 1

    for body, field in (
        ({"url": None}, "url"),
        ({"enabled": None}, "enabled"),
        ({"enabled": "yes"}, "enabled"),
        ({"enable": True}, "enable"),
        ({"events": ["upload.exploded"]}, "events"),
        ({"events": []}, "events"),
        ({"url": "ftp://example.com/hook"}, "url"),
    ):
        refused = await api.client.patch(path, json=body, headers=alice)
        assert refused.status_code == 400 and refused.json()["error"]["field"] == field, (body, refused.text)
    assert (await api.client.get(path, headers=alice)).json() == everything.json()  # nothing changed
    assert (await api.client.patch(path, json={"enabled": True}, headers=bob)).status_code == 404
    assert (await api.client.patch(path, json={"enabled": True}, headers=api.auth())).status_code == 403
    assert (await api.client.patch("/v1/webhooks/wh_none", json={}, headers=alice)).status_code == 404


async def test_a_rotated_secret_signs_beside_the_new_one_for_a_while(api: Api, receiver: WebhookReceiver) -> None:
    """Rotating an endpoint's secret returns the new one (shown this once); deliveries carry a
    signature by each, so a receiver verifies them whether it has switched yet or not. The secret
    had no way to change but deleting the endpoint (its id and log with it) and registering another,
    every delivery in between rejected by a receiver on one secret or the other."""
    alice, bob = await admin(api, "alice"), await admin(api, "bob")
    made = await api.client.post(
        "/v1/webhooks", json={"url": receiver.url("/hook"), "events": ["upload.completed"]}, headers=alice
    )
    first = made.json()["secret"]
    path = f"/v1/webhooks/{made.json()['id']}/secret/rotate"
    receiver.set_secret("/hook", first)
    rotated = await api.client.post(path, headers=alice)
    assert rotated.status_code == 200, rotated.text
    second = rotated.json()["secret"]
    assert second.startswith("whsec_") and second != first and rotated.json()["previousSecretExpiresAt"]
    shown = (await api.client.get(f"/v1/webhooks/{made.json()['id']}", headers=alice)).json()
    assert shown.get("secret") is None and shown["previousSecretExpiresAt"] == rotated.json()["previousSecretExpiresAt"]

    async def delivered(file_id: str) -> dict[str, Any]:
        got = await receiver.arrived(lambda ms: any(m["payload"]["data"]["id"] == file_id for m in ms), path="/hook")
        [message] = [m for m in got if m["payload"]["data"]["id"] == file_id]
        return message

    assert (await delivered(await upload_file(api, alice, b"receiver on the old secret")))["verified"]
    receiver.set_secret("/hook", second)
    assert (await delivered(await upload_file(api, alice, b"receiver on the new secret")))["verified"]
    # A second rotation: the first secret signs no more (the second one does, for a while).
    third = (await api.client.post(path, headers=alice)).json()["secret"]
    receiver.set_secret("/hook", third)
    assert (await delivered(await upload_file(api, alice, b"receiver on the third secret")))["verified"]
    assert (await api.client.post(path, headers=bob)).status_code == 404
    assert (await api.client.post("/v1/webhooks/wh_none/secret/rotate", headers=alice)).status_code == 404


def both_events_of(file_id: str) -> Callable[[list[dict[str, Any]]], bool]:
    return lambda messages: len(types_for(messages, file_id)) == 2


async def test_the_operators_previous_secret_signs_beside_the_new_one(
    settings: Settings, receiver: WebhookReceiver
) -> None:
    """CHUNKD_WEBHOOK_PREVIOUS_SECRET: while the operator's receivers switch to a new
    CHUNKD_WEBHOOK_SECRET, each delivery carries a signature by each; the operator's secret could
    only change at once, every receiver not yet switched refusing every delivery meanwhile."""
    previous = "whsec_" + base64.b64encode(b"the-operators-previous-secret!!!").decode()
    app = create_app(settings_with(settings, webhook_previous_secret=previous))
    async with app.router.lifespan_context(app):
        runtime = app.state.chunkd
        _, key = await runtime.keys.create("alice", "files:create,files:read")
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            api = Api(client, runtime, {"alice": key})
            for secret in (previous, OPERATOR_SECRET):  # a receiver not switched yet, then one switched
                receiver.set_secret("/operator", secret)
                file_id = await upload_file(api, api.auth(), secret.encode())
                got = await receiver.arrived(both_events_of(file_id), path="/operator")
                assert all(m["verified"] for m in got if m["payload"]["data"]["id"] == file_id)
    with pytest.raises(ValueError, match="CHUNKD_WEBHOOK_PREVIOUS_SECRET must be whsec_"):
        settings_with(settings, webhook_previous_secret="whsec_short")


async def test_deliveries_that_failed_for_good_are_recovered_at_once(
    settings: Settings, receiver: WebhookReceiver
) -> None:
    """A receiver down for longer than the retry window: its deliveries fail for good. Once it is
    back, one request sends each of those events again (same webhook-id), instead of a redelivery
    asked for each in turn."""
    # Not disabled meanwhile (the module's 0.5 s): on a loaded machine the attempts of a 0.3 s window
    # spread past it, and the endpoint disabled as failing held the recovered deliveries (seen in CI).
    app = create_app(settings_with(settings, webhook_retry_window_seconds=0.3, webhook_disable_after_seconds=3600))
    async with app.router.lifespan_context(app):
        runtime = app.state.chunkd
        _, key = await runtime.keys.create("alice", "files:create,files:read," + ADMIN)
        _, bobs = await runtime.keys.create("bob", ADMIN)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            api = Api(client, runtime, {"alice": key})
            made = (await client.post("/v1/webhooks", json={"url": receiver.url("/down")}, headers=api.auth())).json()
            receiver.set_secret("/down", made["secret"])
            receiver.set_status("/down", 500)
            file_id = await upload_file(api, api.auth(), b"while the receiver is down")
            log_path = f"/v1/webhooks/{made['id']}/deliveries"

            async def failed_for_good() -> bool:
                log = (await client.get(log_path, headers=api.auth())).json()["data"]
                return len(log) == 2 and {d["status"] for d in log} == {"failed"}

            await until(failed_for_good, 60, "both deliveries failed for good")
            receiver.set_status("/down", None)
            path = f"/v1/webhooks/{made['id']}/recover"
            for body in ({"since": "2026-01-01T00:00:00"}, {"since": "soon"}, {}, {"since": made["createdAt"], "x": 1}):
                refused = await client.post(path, json=body, headers=api.auth())
                assert refused.status_code == 400, (body, refused.text)
            assert (
                await client.post(path, json={"since": made["createdAt"]}, headers={"Authorization": f"Bearer {bobs}"})
            ).status_code == 404
            before = len(receiver.messages("/down"))  # every failed attempt reached it too
            recovered = await client.post(path, json={"since": made["createdAt"]}, headers=api.auth())
            assert recovered.status_code == 202 and recovered.json() == {"recovered": 2}, recovered.text
            assert (await client.post(path, json={"since": made["createdAt"]}, headers=api.auth())).json() == {
                "recovered": 0
            }
            got = (await receiver.arrived(lambda ms: len(ms) >= before + 2, path="/down"))[before:]
            assert types_for(got, file_id) == ["upload.completed", "upload.created"] and all(m["verified"] for m in got)

            async def delivered() -> bool:
                log = (await client.get(log_path, headers=api.auth())).json()["data"]
                return sorted(d["status"] for d in log) == ["delivered", "delivered", "failed", "failed"]

            await until(delivered, 60, "the recovered deliveries delivered")
