"""Access tokens: issue (every credential form, scope subsets), use (Bearer and AccessToken), and
every way a token must fail: expired, not yet valid, bad signature, wrong audience or issuer,
alg none, HS/RS confusion, revoked key; RS256/ES256 with configured keys and a JWKS file."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from chunkd.auth.tokens import derive_hs256_key
from tests.conftest import Api
from tests.security.conftest import MakeApi


def _hs_key(api: Api) -> bytes:
    return derive_hs256_key((api.runtime.settings.data_dir / "secret.key").read_bytes())


def _claims(**overrides: Any) -> dict[str, Any]:
    now = int(time.time())
    claims = {"iss": "chunkd", "aud": "chunkd", "sub": "alice", "scope": "files:read", "iat": now, "exp": now + 600}
    claims.update(overrides)
    return {k: v for k, v in claims.items() if v is not None}


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _hand_made(header: dict[str, Any], claims: dict[str, Any], sign: Any = None) -> str:
    signing_input = f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(claims).encode())}"
    signature = sign(signing_input.encode()) if sign else b""
    return f"{signing_input}.{_b64(signature)}"


async def _list(api: Api, **headers: str) -> int:
    return (await api.client.get("/v1/files", headers=headers)).status_code


def _basic(key: str) -> str:
    key_id, secret = key[3:19], key[20:]
    return "Basic " + base64.b64encode(f"{key_id}:{secret}".encode()).decode()


async def test_exchange_every_credential_form_and_use_token(make_api: MakeApi) -> None:
    async with make_api() as api:
        key = api.keys["alice"]
        for path in ("/v1/auth/token", "/auth/token"):
            for headers in ({"Authorization": f"Bearer {key}"}, {"X-API-Key": key}, {"Authorization": _basic(key)}):
                response = await api.client.post(path, headers=headers)
                assert response.status_code == 200, response.text
                body = response.json()
                assert body["tokenType"] == "Bearer" and body["expiresIn"] == 900
                token = body["accessToken"]
                assert await _list(api, Authorization=f"Bearer {token}") == 200
                assert await _list(api, AccessToken=token) == 200
        claims = jwt.decode(token, _hs_key(api), algorithms=["HS256"], audience="chunkd")
        assert claims["sub"] == "alice" and set(claims["scope"].split()) == {
            "files:create",
            "files:read",
            "files:delete",
        }
        assert claims["chunkd_key"] == key[3:19] and claims["exp"] - claims["iat"] == 900


async def test_scope_subset_only(make_api: MakeApi) -> None:
    async with make_api() as api:
        narrow = await api.client.post("/v1/auth/token", json={"scope": "files:read"}, headers=api.auth("alice"))
        assert narrow.status_code == 200 and narrow.json()["scope"] == "files:read"
        token = narrow.json()["accessToken"]
        create = await api.client.post(
            "/v1/files", json={"filename": "a", "sizeBytes": 1}, headers={"Authorization": f"Bearer {token}"}
        )
        assert create.status_code == 403 and "files:create" in create.json()["error"]["message"]
        wider = await api.client.post(
            "/v1/auth/token", json={"scope": ["files:read", "keys:admin"]}, headers=api.auth("alice")
        )
        assert wider.status_code == 403 and "keys:admin" in wider.text
        seed = await api.client.post("/auth/token", json={"scope": "keys:admin"}, headers=api.auth("alice"))
        assert seed.status_code == 403 and set(seed.json()) == {"message", "detail"} and "keys:admin" in seed.text
        unknown = await api.client.post("/v1/auth/token", json={"scope": "files:everything"}, headers=api.auth())
        assert unknown.status_code == 400 and unknown.json()["error"]["field"] == "scope"
        short = await api.client.post("/v1/auth/token", json={"expiresIn": 60}, headers=api.auth())
        assert short.json()["expiresIn"] == 60
        long = await api.client.post("/v1/auth/token", json={"expiresIn": 10**6}, headers=api.auth())
        assert long.status_code == 400 and long.json()["error"]["field"] == "expiresIn"
        # A token cannot mint a longer-lived one.
        again = await api.client.post("/v1/auth/token", headers={"Authorization": f"Bearer {token}"})
        assert again.status_code == 403
        assert (await api.client.post("/v1/auth/token")).status_code == 401
        assert (await api.client.post("/auth/token")).status_code == 401


async def test_bad_tokens_are_401(make_api: MakeApi) -> None:
    async with make_api() as api:
        key = _hs_key(api)
        now = int(time.time())
        key_id = api.keys["alice"][3:19]
        good = jwt.encode(_claims(chunkd_key=key_id), key, algorithm="HS256")
        assert await _list(api, Authorization=f"Bearer {good}") == 200
        cases = {
            # HS256 tokens are chunkd's own: each names its API key (revocation applies) and lives
            # no longer than chunkd issues tokens for.
            "no key claim": jwt.encode(_claims(), key, algorithm="HS256"),
            "null key claim": jwt.encode({**_claims(), "chunkd_key": None}, key, algorithm="HS256"),
            "longer than issued": jwt.encode(_claims(chunkd_key=key_id, exp=now + 7 * 86400), key, algorithm="HS256"),
            "expired": jwt.encode(_claims(iat=now - 7200, exp=now - 3600), key, algorithm="HS256"),
            "not yet valid": jwt.encode(_claims(nbf=now + 3600), key, algorithm="HS256"),
            "wrong signature": jwt.encode(_claims(), b"x" * 32, algorithm="HS256"),
            "server secret itself": jwt.encode(
                _claims(), (api.runtime.settings.data_dir / "secret.key").read_bytes(), algorithm="HS256"
            ),
            "wrong audience": jwt.encode(_claims(aud="someone-else"), key, algorithm="HS256"),
            "wrong issuer": jwt.encode(_claims(iss="evil"), key, algorithm="HS256"),
            "no exp": jwt.encode(_claims(exp=None), key, algorithm="HS256"),
            "no sub": jwt.encode(_claims(sub=None), key, algorithm="HS256"),
            "bad sub": jwt.encode(_claims(sub="../alice\x00"), key, algorithm="HS256"),
            "alg none": _hand_made({"alg": "none", "typ": "JWT"}, _claims()),
            "alg None": _hand_made({"alg": "None"}, _claims()),
            "HS384": jwt.encode(_claims(), key, algorithm="HS384"),
            "garbage": "not.a.jwt",
            "unknown key id": jwt.encode(_claims(chunkd_key="0123456789abcdef"), key, algorithm="HS256"),
        }
        private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        cases["RS256 in HS mode"] = jwt.encode(_claims(), private, algorithm="RS256")
        for name, token in cases.items():
            for header in ("Authorization", "AccessToken"):
                value = f"Bearer {token}" if header == "Authorization" else token
                response = await api.client.get("/v1/files", headers={header: value})
                assert response.status_code == 401, (name, header, response.text)
                assert response.json()["error"]["code"] == "unauthenticated"


async def test_revoked_key_stops_its_tokens(make_api: MakeApi) -> None:
    async with make_api() as api:
        created = await api.client.post(
            "/v1/keys", json={"scopes": "files:read", "name": "ci"}, headers=api.auth("admin")
        )
        assert created.status_code == 201
        key, key_id = created.json()["key"], created.json()["id"]
        token = (await api.client.post("/v1/auth/token", headers={"X-API-Key": key})).json()["accessToken"]
        assert await _list(api, Authorization=f"Bearer {token}") == 200
        assert (await api.client.delete(f"/v1/keys/{key_id}", headers=api.auth("admin"))).status_code == 204
        assert await _list(api, Authorization=f"Bearer {token}") == 401
        assert await _list(api, AccessToken=token) == 401
        assert await _list(api, **{"X-API-Key": key}) == 401


def _pem_files(tmp_path: Path, private: Any) -> tuple[Path, Path]:
    priv = tmp_path / "jwt-private.pem"
    pub = tmp_path / "jwt-public.pem"
    priv.write_bytes(
        private.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    pub.write_bytes(
        private.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    return priv, pub


async def test_rs256_and_algorithm_confusion(make_api: MakeApi, tmp_path: Path) -> None:
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    priv, pub = _pem_files(tmp_path, private)
    async with make_api(jwt_algorithm="RS256", jwt_private_key_file=priv) as api:
        issued = await api.client.post("/v1/auth/token", headers=api.auth("alice"))
        assert issued.status_code == 200
        token = issued.json()["accessToken"]
        assert jwt.get_unverified_header(token)["alg"] == "RS256"
        assert await _list(api, Authorization=f"Bearer {token}") == 200
        # The classic confusion: HS256 "signed" with the public key's PEM as the HMAC secret.
        public_pem = pub.read_bytes()
        confused = _hand_made(
            {"alg": "HS256", "typ": "JWT"},
            _claims(),
            lambda data: hmac.new(public_pem, data, hashlib.sha256).digest(),
        )
        assert await _list(api, Authorization=f"Bearer {confused}") == 401
        hs = jwt.encode(_claims(), _hs_key(api), algorithm="HS256")
        assert await _list(api, Authorization=f"Bearer {hs}") == 401
        other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        assert await _list(api, Authorization=f"Bearer {jwt.encode(_claims(), other, algorithm='RS256')}") == 401
        assert await _list(api, Authorization=f"Bearer {_hand_made({'alg': 'none'}, _claims())}") == 401


async def test_es256_jwks_from_identity_provider(make_api: MakeApi, tmp_path: Path) -> None:
    idp = ec.generate_private_key(ec.SECP256R1())
    jwk = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(idp.public_key()))
    jwk.update(kid="idp-1", alg="ES256", use="sig")
    jwks = tmp_path / "jwks.json"
    jwks.write_text(json.dumps({"keys": [jwk]}))
    async with make_api(
        jwt_algorithm="ES256", jwt_jwks_file=jwks, jwt_issuer="https://idp.example", jwt_audience="chunkd-api"
    ) as api:
        claims = _claims(iss="https://idp.example", aud="chunkd-api", scope="files:read files:create")
        token = jwt.encode(claims, idp, algorithm="ES256", headers={"kid": "idp-1"})
        assert await _list(api, Authorization=f"Bearer {token}") == 200
        created = await api.client.post(
            "/v1/files", json={"filename": "a", "sizeBytes": 1}, headers={"AccessToken": token}
        )
        assert created.status_code == 201
        listed = await api.client.get("/v1/files", headers=api.auth("alice"))
        assert [f["id"] for f in listed.json()["data"]] == [created.json()["id"]]  # sub → owner alice
        wrong_kid = jwt.encode(claims, idp, algorithm="ES256", headers={"kid": "idp-2"})
        assert await _list(api, Authorization=f"Bearer {wrong_kid}") == 401
        stranger = jwt.encode(claims, ec.generate_private_key(ec.SECP256R1()), algorithm="ES256")
        assert await _list(api, Authorization=f"Bearer {stranger}") == 401
        # No private key: this server verifies but does not issue.
        refused = await api.client.post("/v1/auth/token", headers=api.auth("alice"))
        assert refused.status_code == 403


@pytest.mark.parametrize("owner_pair", [("alice", "bob")])
async def test_credentials_of_two_owners_are_refused(make_api: MakeApi, owner_pair: tuple[str, str]) -> None:
    async with make_api() as api:
        token = (await api.client.post("/v1/auth/token", headers=api.auth("bob"))).json()["accessToken"]
        mixed = {"X-API-Key": api.keys["alice"], "AccessToken": token}
        assert (await api.client.get("/v1/files", headers=mixed)).status_code == 401


async def test_basic_key_id_and_a_secret_that_begins_like_a_key(
    make_api: MakeApi, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Basic also takes the whole key as user or password; a key id as the user still means
    ``id:secret``, even for a secret that happens to begin with ``ck_``."""
    async with make_api() as api:
        monkeypatch.setattr("chunkd.auth.keys.secrets.token_urlsafe", lambda n: "ck_" + "a" * 40)
        _, key = await api.runtime.keys.create("alice", "files:read")
        assert key.endswith("_ck_" + "a" * 40)
        assert await _list(api, Authorization=_basic(key)) == 200
        whole = "Basic " + base64.b64encode(f"{key}:".encode()).decode()
        assert await _list(api, Authorization=whole) == 200
