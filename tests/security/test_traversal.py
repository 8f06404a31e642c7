"""A traversal corpus in every id, filename and free-text field of the API: every answer is a 4xx
(or, for a filename, an accepted upload whose stored name is a plain, safe name), no 5xx, and
nothing is written outside the data dir (checked by listing the filesystem before and after).

Frontends with more fields (tus Upload-Metadata, seed-API form fields) add rows to
``FIELD_CASES`` below (or call ``check_corpus`` with their own request builder)."""

from __future__ import annotations

import base64
import os
import re
import time
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx

from tests.conftest import Api
from tests.security.conftest import MakeApi
from tests.security.routes import PNG, TEN

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


# ---- the other frontends: tus, Fine Uploader (pm), media, assets -------------------------------
def _header_safe(value: str) -> bool:
    return value.isascii() and not any(c in value for c in "\x00\r\n")


def _b64(value: str) -> str:
    return base64.b64encode(value.encode()).decode()


def _form(fields: list[tuple[str, str]], file_field: str, filename: str, data: bytes) -> bytes:
    """A multipart body written byte by byte as a hostile client would (no escaping of the name)."""
    out = b""
    for name, value in fields:
        out += f'--{B}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n'.encode() + value.encode() + b"\r\n"
    out += f'--{B}\r\nContent-Disposition: form-data; name="{file_field}"; filename="'.encode()
    out += filename.encode() + b'"\r\nContent-Type: application/octet-stream\r\n\r\n'
    return out + data + f"\r\n--{B}--\r\n".encode()


B = "----traversalBoundary"
MULTIPART = {"Content-Type": f"multipart/form-data; boundary={B}"}
TUS = {"Tus-Resumable": "1.0.0"}


def _assert_plain_name(name: str) -> None:
    assert "/" not in name and "\\" not in name and name not in {".", ".."}, repr(name)
    assert not any(ord(c) < 32 or ord(c) == 127 or c == "\u202e" for c in name), repr(name)
    assert len(name.encode()) <= 255, len(name.encode())


async def _frontend_id_requests(api: Api, value: str, ids: dict[str, str]) -> list[tuple[str, httpx.Response]]:
    """The corpus in every id of the tus, pm, media and asset routes (path, form and JSON)."""
    auth = api.auth("admin")
    encoded = quote(value, safe="")
    out: list[tuple[str, httpx.Response]] = []

    async def call(label: str, method: str, url: str, *, headers: dict[str, str] | None = None, **kw: Any) -> None:
        try:
            response = await api.client.request(
                method, url, headers={**auth, **(headers or {})}, follow_redirects=True, **kw
            )
        except (httpx.InvalidURL, httpx.LocalProtocolError):
            return  # the client itself refuses to send it
        out.append((label, response))

    patch = {**TUS, "Content-Type": "application/offset+octet-stream", "Upload-Offset": "0"}
    for form in (encoded, value):
        if form in ("", ".", "/") or form.strip("/") in ("", ".", ".."):
            continue  # the collection itself after URL normalisation, not an id
        await call("tus HEAD", "HEAD", f"/files/{form}", headers=TUS)
        await call("tus PATCH", "PATCH", f"/files/{form}", headers=patch, content=b"x")
        await call("tus DELETE", "DELETE", f"/files/{form}", headers=TUS)
        await call("tus GET", "GET", f"/files/{form}")
        await call("pm GET", "GET", f"/api/v2/pm/upload/{form}")
        await call("pm info", "GET", f"/api/v2/pm/upload/{form}/info")
        await call("pm DELETE", "DELETE", f"/api/v2/pm/upload/{form}")
        await call("media GET", "GET", f"/api/v2/media/{form}/")
        await call("media file", "GET", f"/api/v2/media/{form}/file/")
        await call("media DELETE", "DELETE", f"/api/v2/media/{form}/")
        await call("asset content", "PUT", f"/asset/{form}/content", content=b"x")
        await call("asset part", "PUT", f"/asset/{form}/parts/1", content=b"x")
        await call("asset part number", "PUT", f"/asset/{ids['asset']}/parts/{form}", content=b"x")
    if _header_safe(value):
        concat = f"final;/files/{value} /files/{ids['tus']}"
        await call("tus Upload-Concat", "POST", "/files", headers={**TUS, "Upload-Concat": concat})
    # Ids in bodies.
    chunk = [("qquuid", value), ("qqpartindex", "0"), ("qqtotalparts", "2"), ("qqtotalfilesize", "20")]
    chunk += [("qqpartbyteoffset", "0"), ("qqchunksize", "10"), ("qqfilename", "a.txt")]
    await call(
        "pm qquuid chunk", "POST", "/api/v2/pm/upload/", content=_form(chunk, "qqfile", "blob", TEN), headers=MULTIPART
    )
    await call("pm qquuid done", "POST", "/api/v2/pm/upload/?done", data={"qquuid": value, "qqfilename": "a.txt"})
    await call("pm qquuid query", "POST", "/api/v2/pm/upload/", params={"done": "", "qquuid": value, "qqfilename": "a"})
    media_chunk = _form([("upload_id", value)], "image", "a.png", b"x")
    range_ = {**MULTIPART, "Content-Range": "bytes 10-10/11"}
    await call("media upload_id chunk", "POST", "/api/v2/media/upload/chunk/", content=media_chunk, headers=range_)
    await call(
        "media upload_id complete", "POST", "/api/v2/media/upload/complete/", data={"upload_id": value, "md5": "0" * 32}
    )
    await call(
        "media type",
        "POST",
        "/api/v2/media/upload/complete/",
        data={"upload_id": ids["media_upload"], "md5": "0" * 32, "type": value},
    )
    await call("asset fileId", "POST", "/asset/complete", json={"fileId": value, "action": "cancel"})
    await call(
        "asset uploadId",
        "POST",
        "/asset/complete",
        json={"fileId": ids["asset"], "uploadId": value, "action": "complete"},
    )
    await call("asset action", "POST", "/asset/complete", json={"fileId": ids["asset"], "action": value})
    await call(
        "asset signed",
        "PUT",
        f"/asset/{ids['asset']}/parts/1",
        params={"expires": value, "signature": value},
        content=b"x",
    )
    await call(
        "media signed", "GET", f"/api/v2/media/{ids['media']}/file/", params={"expires": value, "signature": value}
    )
    later = str(int(time.time()) + 600)  # a well-formed expiry, so the signature itself is compared
    await call(
        "asset signature",
        "PUT",
        f"/asset/{ids['asset']}/parts/1",
        params={"expires": later, "signature": value},
        content=b"x",
    )
    await call(
        "media signature", "GET", f"/api/v2/media/{ids['media']}/file/", params={"expires": later, "signature": value}
    )
    return out


async def test_corpus_in_frontend_ids(make_api: MakeApi, tmp_path: Path) -> None:
    from tests.security.test_isolation import make_target

    async with make_api(asset_part_size=5) as api:
        data_dir = api.runtime.settings.data_dir
        ids = {kind: await make_target(api, kind, "admin") for kind in ("tus", "media_upload", "media", "asset_multi")}
        ids["asset"] = ids.pop("asset_multi")
        before = _snapshot(tmp_path, data_dir)
        cwd_before = set(os.listdir("."))
        failures = []
        for value in CORPUS:
            for label, response in await _frontend_id_requests(api, value, ids):
                # The client resolves dot segments itself: "/files/../" is sent as "/", the upload
                # page, which is no request to the frontend at all (nothing stored, nothing read).
                left = response.request.url.path == "/" and response.headers.get("content-type", "").startswith(
                    "text/html"
                )
                if not 400 <= response.status_code < 500 and not left:
                    failures.append((label, value[:40], response.status_code, response.text[:200]))
        assert not failures, "\n".join(map(str, failures))
        assert _snapshot(tmp_path, data_dir) == before
        assert set(os.listdir(".")) == cwd_before
        _inside(data_dir)


async def test_corpus_in_frontend_names_is_sanitised(make_api: MakeApi, tmp_path: Path) -> None:
    """Display names and media types of every frontend: refused with a 4xx, or stored as a plain
    name; a stored media type never carries a line break into a response header."""
    async with make_api(asset_part_size=5) as api:
        c, auth = api.client, api.auth("admin")
        data_dir = api.runtime.settings.data_dir
        before = _snapshot(tmp_path, data_dir)
        failures = []

        async def stored(upload_id: str) -> dict[str, Any]:
            got = await c.get(f"/v1/files/{upload_id}", headers=auth)
            assert got.status_code == 200, got.text
            return got.json()  # type: ignore[no-any-return]

        async def check(label: str, value: str, response: httpx.Response, upload_id: Any) -> None:
            if 400 <= response.status_code < 500:
                return
            if response.status_code not in (200, 201):
                failures.append((label, value[:40], response.status_code, response.text[:200]))
                return
            body = await stored(upload_id() if callable(upload_id) else upload_id)
            _assert_plain_name(body["filename"])
            assert "\r" not in (body.get("mimeType") or "") and "\n" not in (body.get("mimeType") or "")

        for value in CORPUS:
            # tus Upload-Metadata filename and filetype
            for key in ("filename", "filetype"):
                r = await c.post(
                    "/files",
                    headers={**auth, **TUS, "Upload-Length": "3", "Upload-Metadata": f"{key} {_b64(value)}"},
                )
                await check(f"tus {key}", value, r, lambda r=r: r.headers["location"].rsplit("/", 1)[1])
            # pm qqfilename and qqfiletype on a whole small file, and qqfilename on done
            for key in ("qqfilename", "qqfiletype"):
                fields = [("qquuid", f"n-{key}-{CORPUS.index(value)}"), ("qqfilename", "a.txt"), (key, value)]
                fields = list({k: v for k, v in fields}.items())
                r = await c.post(
                    "/api/v2/pm/upload/", content=_form(fields, "qqfile", "blob", TEN), headers={**auth, **MULTIPART}
                )
                if r.status_code == 200:
                    info = await c.get(f"/api/v2/pm/upload/{r.json()['file_uuid']}/info", headers=auth)
                    await check(f"pm {key}", value, r, info.json()["id"])
                    download = await c.get(f"/api/v2/pm/upload/{r.json()['file_uuid']}", headers=auth)
                    assert download.status_code == 200
                    assert "\n" not in download.headers["content-type"], download.headers
                else:
                    await check(f"pm {key}", value, r, None)
            # pm: qqfiletype after the file (the name and type are set when the file is finished)
            late = _form([("qquuid", f"late-{CORPUS.index(value)}")], "qqfile", "a.txt", TEN)
            late = late.replace(
                f"--{B}--".encode(),
                f'--{B}\r\nContent-Disposition: form-data; name="qqfiletype"\r\n\r\n'.encode()
                + value.encode()
                + f"\r\n--{B}--".encode(),
            )
            r = await c.post("/api/v2/pm/upload/", content=late, headers={**auth, **MULTIPART})
            if r.status_code == 200:
                for method in ("GET", "HEAD"):
                    download = await c.request(method, f"/api/v2/pm/upload/late-{CORPUS.index(value)}", headers=auth)
                    assert download.status_code == 200, (value, download.text)
            elif not 400 <= r.status_code < 500:
                failures.append(("pm late qqfiletype", value[:40], r.status_code, r.text[:200]))
            # pm: the multipart part's own filename (no qqfilename)
            uuid = f"part-{CORPUS.index(value)}"
            r = await c.post(
                "/api/v2/pm/upload/",
                content=_form([("qquuid", uuid)], "qqfile", value, TEN),
                headers={**auth, **MULTIPART},
            )
            if r.status_code == 200:
                info = await c.get(f"/api/v2/pm/upload/{uuid}/info", headers=auth)
                await check("pm part filename", value, r, info.json()["id"])
            else:
                await check("pm part filename", value, r, None)
            # media: the filename of the multipart part
            body = _form([], "image", value, PNG)
            r = await c.post(
                "/api/v2/media/upload/chunk/",
                content=body,
                headers={**auth, **MULTIPART, "Content-Range": f"bytes 0-{len(PNG) - 1}/{len(PNG)}"},
            )
            await check("media filename", value, r, lambda r=r: r.json()["upload_id"])
            # assets: filename and originalFileId
            r = await c.post("/asset", json={"filename": value, "filesize": 3}, headers=auth)
            await check("asset filename", value, r, lambda r=r: r.json()["fileId"])
            if r.status_code == 201:
                key = r.json()["s3Key"]
                assert re.fullmatch(r"masters/[A-Za-z0-9_-]+/[A-Za-z0-9._-]+", key) and not {".", ".."} & set(
                    key.split("/")
                ), key
            r = await c.post("/asset", json={"filename": "a.txt", "filesize": 3, "originalFileId": value}, headers=auth)
            if r.status_code == 201:
                assert not any(ord(ch) < 32 or ord(ch) == 127 for ch in r.json()["originalFileId"]), r.text
            elif not 400 <= r.status_code < 500:
                failures.append(("asset originalFileId", value[:40], r.status_code, r.text[:200]))
        assert not failures, "\n".join(map(str, failures))
        assert _snapshot(tmp_path, data_dir) == before
        _inside(data_dir)
