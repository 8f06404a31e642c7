"""The keys API: keys:admin only, own owner only, no scope escalation, secrets shown once."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import jwt

from chunkd.auth.principal import Principal
from tests.security.conftest import MakeApi


async def test_create_list_revoke(make_api: MakeApi) -> None:
    async with make_api() as api:
        admin = api.auth("admin")
        created = await api.client.post("/v1/keys", json={"scopes": ["files:read"], "name": "backup"}, headers=admin)
        assert created.status_code == 201, created.text
        body = created.json()
        assert body["owner"] == "alice" and body["scopes"] == ["files:read"] and body["key"].startswith("ck_")
        assert body["revokedAt"] is None
        new_key = body["key"]
        assert (await api.client.get("/v1/files", headers={"X-API-Key": new_key})).status_code == 200

        listed = await api.client.get("/v1/keys", headers=admin)
        assert listed.status_code == 200
        rows = listed.json()["data"]
        assert {r["owner"] for r in rows} == {"alice"}  # bob's keys are not shown
        assert body["id"] in {r["id"] for r in rows}
        assert new_key not in listed.text and new_key.split("_", 2)[2] not in listed.text  # the secret may hold "_"
        assert all("key" not in r and "secret_hash" not in r for r in rows)

        assert (await api.client.delete(f"/v1/keys/{body['id']}", headers=admin)).status_code == 204
        assert (await api.client.get("/v1/files", headers={"X-API-Key": new_key})).status_code == 401
        revoked = [r for r in (await api.client.get("/v1/keys", headers=admin)).json()["data"] if r["id"] == body["id"]]
        assert revoked[0]["revokedAt"] is not None


async def test_no_escalation_and_no_other_owner(make_api: MakeApi) -> None:
    async with make_api(
        keys={"limited": ("alice", "keys:admin,files:read"), "bob": ("bob", "files:read,keys:admin")}
    ) as api:
        wider = await api.client.post("/v1/keys", json={"scopes": "files:delete"}, headers=api.auth("limited"))
        assert wider.status_code == 403 and "files:delete" in wider.json()["error"]["message"]
        unknown = await api.client.post("/v1/keys", json={"scopes": "root"}, headers=api.auth("limited"))
        assert unknown.status_code == 400 and unknown.json()["error"]["field"] == "scopes"
        bob_keys = (await api.client.get("/v1/keys", headers=api.auth("bob"))).json()["data"]
        bob_id = bob_keys[0]["id"]
        assert (await api.client.delete(f"/v1/keys/{bob_id}", headers=api.auth("limited"))).status_code == 404
        assert (await api.client.get("/v1/files", headers=api.auth("bob"))).status_code == 200
        # An "owner" field is not a way into another owner's keys: it is no field of the request,
        # refused by name, and no key is made.
        before = len((await api.client.get("/v1/keys", headers=api.auth("limited"))).json()["data"])
        sneaky = await api.client.post(
            "/v1/keys", json={"scopes": "files:read", "owner": "bob"}, headers=api.auth("limited")
        )
        assert sneaky.status_code == 400 and sneaky.json()["error"]["field"] == "owner", sneaky.text
        assert len((await api.client.get("/v1/keys", headers=api.auth("limited"))).json()["data"]) == before
        bad_name = await api.client.post(
            "/v1/keys", json={"scopes": "files:read", "name": "a\x00b"}, headers=api.auth("limited")
        )
        assert bad_name.status_code == 400 and bad_name.json()["error"]["field"] == "name"


async def test_every_scope_can_be_given_alone_to_a_key_and_a_token(make_api: MakeApi) -> None:
    """Least privilege for each scope there is: webhooks:admin was missing from what the keys and
    token APIs accept, so no key or token could be made for webhooks alone."""
    from typing import get_args

    from chunkd.auth.principal import ALL_SCOPES
    from chunkd.frontends.native.auth import ScopeName

    assert set(get_args(ScopeName)) == ALL_SCOPES
    async with make_api() as api:
        for scope in sorted(ALL_SCOPES):
            for given in (scope, [scope]):
                key = await api.client.post("/v1/keys", json={"scopes": given}, headers=api.auth("admin"))
                assert key.status_code == 201 and key.json()["scopes"] == [scope], (given, key.text)
                token = await api.client.post("/v1/auth/token", json={"scope": given}, headers=api.auth("admin"))
                assert token.status_code == 200 and token.json()["scope"] == scope, (given, token.text)


async def test_keys_name_their_maker_and_a_leaked_admin_key_is_revoked_with_what_it_made(make_api: MakeApi) -> None:
    """A keys:admin key (or a token minted from it) that leaked may have made keys: each names the
    key that made it, and ``?cascade=true`` revokes them with it, on this node at once."""
    async with make_api() as api:
        admin = api.auth("admin")
        admin_id = api.keys["admin"][3:19]  # ck_<id>_<secret>
        deputy = (await api.client.post("/v1/keys", json={"scopes": "keys:admin files:read"}, headers=admin)).json()
        assert deputy["createdBy"] == admin_id
        token = (await api.client.post("/v1/auth/token", headers={"X-API-Key": deputy["key"]})).json()["accessToken"]
        planted = await api.client.post(
            "/v1/keys", json={"scopes": "files:read"}, headers={"Authorization": f"Bearer {token}"}
        )
        assert planted.status_code == 201 and planted.json()["createdBy"] == deputy["id"]  # through its token too
        other = (await api.client.post("/v1/keys", json={"scopes": "files:read"}, headers=admin)).json()
        for made in (deputy, planted.json(), other):
            assert (await api.client.get("/v1/files", headers={"X-API-Key": made["key"]})).status_code == 200

        revoked = await api.client.delete(f"/v1/keys/{deputy['id']}?cascade=true", headers=admin)
        assert revoked.status_code == 204
        for made, status in ((deputy, 401), (planted.json(), 401), (other, 200)):
            assert (await api.client.get("/v1/files", headers={"X-API-Key": made["key"]})).status_code == status
        rows = {r["id"]: r for r in (await api.client.get("/v1/keys", headers=admin)).json()["data"]}
        assert rows[planted.json()["id"]]["revokedAt"] is not None and rows[other["id"]]["revokedAt"] is None
        assert rows[admin_id]["createdBy"] is None  # made by the operator


async def test_a_cascade_reaches_what_a_key_revoked_earlier_made(make_api: MakeApi) -> None:
    """The order of an incident: the leaked admin key is revoked at once, and what it made is
    revoked with ``?cascade=true`` once that is understood. The cascade answered 204 and revoked
    nothing, because the key itself was no longer live."""
    async with make_api() as api:
        admin = api.auth("admin")
        deputy = (await api.client.post("/v1/keys", json={"scopes": "keys:admin files:read"}, headers=admin)).json()
        deputy_auth = {"X-API-Key": deputy["key"]}
        planted = (await api.client.post("/v1/keys", json={"scopes": "files:read"}, headers=deputy_auth)).json()
        link = await api.client.post("/v1/upload-links", json={}, headers=admin)
        assert link.status_code == 201
        assert (await api.client.delete(f"/v1/keys/{deputy['id']}", headers=admin)).status_code == 204
        assert (await api.client.get("/v1/files", headers={"X-API-Key": planted["key"]})).status_code == 200

        assert (await api.client.delete(f"/v1/keys/{deputy['id']}?cascade=true", headers=admin)).status_code == 204
        assert (await api.client.get("/v1/files", headers={"X-API-Key": planted["key"]})).status_code == 401
        rows = {r["id"]: r for r in (await api.client.get("/v1/keys", headers=admin)).json()["data"]}
        assert rows[planted["id"]]["revokedAt"] is not None
        assert rows[api.keys["admin"][3:19]]["revokedAt"] is None  # the key that made the deputy stays
        assert (await api.client.get(f"/v1/upload-links/{link.json()['id']}", headers=admin)).status_code == 200


def _at(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


async def test_a_key_never_outlives_the_credential_that_made_it(make_api: MakeApi) -> None:
    """A short-lived access token with keys:admin made a key that never expired: whoever held the
    token for its 15 minutes kept a permanent credential. A key made by a credential that expires
    (a token, a key that expires) now expires no later than it, and cannot ask for longer."""
    async with make_api() as api:
        issued = await api.client.post("/v1/auth/token", json={"expiresIn": 300}, headers=api.auth("admin"))
        assert issued.status_code == 200, issued.text
        token = {"Authorization": f"Bearer {issued.json()['accessToken']}"}
        exp = datetime.fromtimestamp(
            jwt.decode(issued.json()["accessToken"], options={"verify_signature": False})["exp"], UTC
        )

        made = await api.client.post("/v1/keys", json={"scopes": "files:read keys:admin"}, headers=token)
        assert made.status_code == 201, made.text
        assert _at(made.json()["expiresAt"]) == exp  # by default, when the token does
        longer = await api.client.post("/v1/keys", json={"scopes": "files:read", "expiresIn": 301}, headers=token)
        assert longer.status_code == 403 and longer.json()["error"]["field"] == "expiresIn", longer.text
        shorter = await api.client.post("/v1/keys", json={"scopes": "files:read", "expiresIn": 60}, headers=token)
        assert shorter.status_code == 201 and _at(shorter.json()["expiresAt"]) < exp

        # The key it made carries the limit on: what that key makes expires with it too.
        child = {"X-API-Key": made.json()["key"]}
        grandchild = await api.client.post("/v1/keys", json={"scopes": "files:read"}, headers=child)
        assert grandchild.status_code == 201 and _at(grandchild.json()["expiresAt"]) == exp
        listed = {k["id"]: k for k in (await api.client.get("/v1/keys", headers=child)).json()["data"]}
        assert _at(listed[made.json()["id"]]["expiresAt"]) == exp

        # A key that never expires makes keys that never expire unless asked.
        permanent = await api.client.post("/v1/keys", json={"scopes": "files:read"}, headers=api.auth("admin"))
        assert permanent.status_code == 201 and permanent.json()["expiresAt"] is None


async def test_an_expired_key_and_its_tokens_stop_working(make_api: MakeApi) -> None:
    async with make_api() as api:
        past = datetime.now(UTC) - timedelta(seconds=1)
        _, expired = await api.runtime.keys.create("alice", "files:read", expires_at=past)
        refused = await api.client.get("/v1/files", headers={"X-API-Key": expired})
        assert refused.status_code == 401 and "expired" in refused.json()["error"]["message"]
        # A token issued for the key while it stood is refused once it has expired (the key is
        # looked up at each use), as is a URL signed for it.
        record = await api.runtime.keys.repo.get_key(expired.split("_")[1])
        assert record is not None
        who = Principal(owner="alice", scopes=record.scopes, key_id=record.id)
        assert api.runtime.tokens is not None
        token = api.runtime.tokens.issue(who)["accessToken"]
        late = await api.client.get("/v1/files", headers={"Authorization": f"Bearer {token}"})
        assert late.status_code == 401 and "has expired" in late.json()["error"]["message"], late.text


async def test_a_token_never_outlives_its_key(make_api: MakeApi) -> None:
    """A token issued for a key expiring in 100 s said it lived 900 s (it was refused at the key's
    expiry all the same, but its exp and expiresIn were wrong)."""
    async with make_api() as api:
        _, key = await api.runtime.keys.create(
            "alice", "files:read", expires_at=datetime.now(UTC) + timedelta(seconds=100)
        )
        issued = await api.client.post("/v1/auth/token", headers={"X-API-Key": key})
        assert issued.status_code == 200 and issued.json()["expiresIn"] <= 100, issued.text
        claims = jwt.decode(issued.json()["accessToken"], options={"verify_signature": False})
        assert claims["exp"] - claims["iat"] <= 100
        longer = await api.client.post("/v1/auth/token", json={"expiresIn": 200}, headers={"X-API-Key": key})
        assert longer.status_code == 400 and longer.json()["error"]["field"] == "expiresIn", longer.text
        # A key that never expires gets the whole lifetime.
        full = await api.client.post("/v1/auth/token", headers=api.auth("admin"))
        assert full.json()["expiresIn"] == api.runtime.settings.jwt_ttl_seconds
