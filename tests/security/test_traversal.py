"""A traversal corpus in every id, filename and free-text field of the API: every answer is a 4xx
(or, for a filename, an accepted upload whose stored name is a plain, safe name), no 5xx, and
nothing is written outside the data dir (checked by listing the filesystem before and after).

Frontends with more fields (tus Upload-Metadata, seed-API form fields) add rows to
``FIELD_CASES`` below (or call ``check_corpus`` with their own request builder)."""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import quote

import httpx

from tests.conftest import Api
from tests.security.conftest import MakeApi

CORPUS = [
    "../",
    "../../../../etc/passwd",
    "..%2f..%2f..%2fetc%2fpasswd",
    "%2e%2e%2f%2e%2e%2fetc%2fpasswd",
    "%2f",
    "%252e%252e%252f",
    "..\\..\\..\\windows\\win.ini",
    "\\\\server\\share",
    "a\x00b",
    "%00",
    "../x\x00.txt",
    "/etc/passwd",
    "/",
    "C:\\Windows\\System32",
    "file:///etc/passwd",
    "....//....//",
    "..;/",
    ".",
    "..",
    "~root",
    "x" * 5000,
    "é" * 300,
    "名前/../../秘密.txt",
    "\u202etxt.exe",
    "line\r\nX-Injected: 1",
    "${jndi:ldap://x}",
    "'; DROP TABLE uploads; --",
]


def _snapshot(root: Path, data_dir: Path) -> set[str]:
    """Every file and directory under ``root`` outside the data dir."""
    seen = set()
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = Path(dirpath) / name
            if data_dir == path or data_dir in path.parents:
                continue
            seen.add(str(path))
    return seen


def _inside(data_dir: Path) -> None:
    for dirpath, _, filenames in os.walk(data_dir):
        for name in filenames:
            resolved = (Path(dirpath) / name).resolve()
            assert data_dir.resolve() in resolved.parents, resolved


async def _requests(api: Api, value: str, file_id: str, key_id: str) -> list[tuple[str, httpx.Response]]:
    auth = api.auth("admin")
    encoded = quote(value, safe="")
    out: list[tuple[str, httpx.Response]] = []

    async def call(label: str, method: str, url: str, **kwargs: object) -> None:
        try:
            # Starlette redirects "/x//" to "/x/" (307); what counts is where that ends.
            response = await api.client.request(
                method,
                url,
                headers=auth,
                follow_redirects=True,
                **kwargs,  # type: ignore[arg-type]
            )
        except httpx.InvalidURL:
            return  # the client itself refuses to send it
        if method == "GET" and label.startswith("GET ") and response.url.path.rstrip("/") == "/v1/files":
            return  # "." or "/" vanished in URL normalisation: this is the listing, not an id
        out.append((label, response))

    for template in (
        "/v1/files/{}",
        "/v1/files/{}/content",
        "/v1/files/{}/complete",
        "/v1/files/{}/cancel",
    ):
        await call(f"GET {template}", "GET", template.format(encoded))
        await call(f"GET {template} raw", "GET", template.format(value))
    await call("PUT parts id", "PUT", f"/v1/files/{encoded}/parts/1", content=b"x")
    await call("PUT part number", "PUT", f"/v1/files/{file_id}/parts/{encoded}", content=b"x")
    await call("PUT content id", "PUT", f"/v1/files/{encoded}/content", content=b"x")
    await call("POST complete id", "POST", f"/v1/files/{encoded}/complete", json={})
    await call("POST cancel id", "POST", f"/v1/files/{encoded}/cancel")
    await call("DELETE file id", "DELETE", f"/v1/files/{encoded}")
    await call("DELETE key id", "DELETE", f"/v1/keys/{encoded}")
    await call("list cursor", "GET", "/v1/files", params={"cursor": value})
    await call("list status", "GET", "/v1/files", params={"status": value})
    await call("signed url", "PUT", f"/v1/files/{file_id}/content", params={"expires": value, "signature": value})
    await call("mimeType", "POST", "/v1/files", json={"filename": "a", "sizeBytes": 1, "mimeType": value})
    await call("md5", "POST", "/v1/files", json={"filename": "a", "sizeBytes": 1, "md5": value})
    await call("complete md5", "POST", f"/v1/files/{file_id}/complete", json={"md5": value})
    await call("token scope", "POST", "/v1/auth/token", json={"scope": value})
    await call("key scopes", "POST", "/v1/keys", json={"scopes": value})
    return out


async def test_corpus_in_ids_and_fields(make_api: MakeApi, tmp_path: Path) -> None:
    async with make_api() as api:
        data_dir = api.runtime.settings.data_dir
        file_id = (
            await api.client.post(
                "/v1/files", json={"filename": "a", "sizeBytes": 10, "partSize": 10}, headers=api.auth("admin")
            )
        ).json()["id"]
        key_id = api.keys["alice"][3:19]
        before = _snapshot(tmp_path, data_dir)
        cwd_before = set(os.listdir("."))
        failures = []
        for value in CORPUS:
            for label, response in await _requests(api, value, file_id, key_id):
                if not 400 <= response.status_code < 500:
                    failures.append((label, value[:40], response.status_code, response.text[:200]))
        # Content-MD5 header with corpus values (headers cannot carry NUL or CR/LF).
        for value in CORPUS:
            if any(c in value for c in "\x00\r\n") or not value.isascii():
                continue
            response = await api.client.put(
                f"/v1/files/{file_id}/parts/1", content=b"x" * 10, headers={**api.auth("admin"), "Content-MD5": value}
            )
            if response.status_code != 400:
                failures.append(("Content-MD5", value[:40], response.status_code, response.text[:200]))
        assert not failures, "\n".join(map(str, failures))
        assert _snapshot(tmp_path, data_dir) == before
        assert set(os.listdir(".")) == cwd_before
        _inside(data_dir)


async def test_corpus_in_filenames_is_stored_as_plain_names(make_api: MakeApi, tmp_path: Path) -> None:
    async with make_api() as api:
        data_dir = api.runtime.settings.data_dir
        before = _snapshot(tmp_path, data_dir)
        for value in CORPUS:
            created = await api.client.post(
                "/v1/files", json={"filename": value, "sizeBytes": 3, "partSize": 3}, headers=api.auth()
            )
            if created.status_code != 201:
                assert 400 <= created.status_code < 500, (value, created.text)
                assert created.json()["error"]["field"] == "filename"
                continue
            body = created.json()
            name = body["filename"]
            assert "/" not in name and "\\" not in name and name not in {".", ".."}
            assert not any(ord(c) < 32 or ord(c) == 127 or c == "\u202e" for c in name), repr(name)
            assert len(name.encode()) <= 255
            file_id = body["id"]
            await api.client.put(f"/v1/files/{file_id}/parts/1", content=b"abc", headers=api.auth())
            assert (await api.client.post(f"/v1/files/{file_id}/complete", headers=api.auth())).status_code == 200
            download = await api.client.get(f"/v1/files/{file_id}/content", headers=api.auth())
            assert download.status_code == 200 and download.content == b"abc"
            disposition = download.headers["content-disposition"]
            assert disposition.startswith("attachment;") and "\r" not in disposition and "\n" not in disposition
            fallback = disposition.split('filename="', 1)[1].split('"', 1)[0]
            assert not set(fallback) & set('/\\";\x00'), fallback
        assert _snapshot(tmp_path, data_dir) == before
        _inside(data_dir)
