"""Every JSON parser caps nesting: a deeply nested body is a 400 in the dialect's own shape naming
the body (it used to end in RecursionError and a reset connection), on every JSON door."""

from __future__ import annotations

import pytest

from chunkd.frontends.jsondepth import MAX_JSON_DEPTH, DepthMeter, TooDeep, loads
from tests.conftest import Api

DEEP = b"[" * 100_000 + b"]" * 100_000
OBJECTS = b'{"a":' * 5000 + b"1" + b"}" * 5000
JSON = {"Content-Type": "application/json"}


@pytest.mark.parametrize("body", [DEEP, OBJECTS], ids=["arrays", "objects"])
async def test_native_json_body(api: Api, body: bytes) -> None:
    response = await api.client.post("/v1/files", content=body, headers={**api.auth(), **JSON})
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["code"] == "too_deep" and error["field"] == "body"
    complete = await api.client.post("/v1/files/x/complete", content=body, headers={**api.auth(), **JSON})
    assert complete.status_code == 400 and complete.json()["error"]["code"] == "too_deep"


async def test_pm_done(api: Api) -> None:
    response = await api.client.post("/api/v2/pm/upload/?done", content=OBJECTS, headers={**api.auth(), **JSON})
    assert response.status_code == 400, response.text
    body = response.json()
    # A done request carries no qqfile: the dialect names its body as the body.
    assert body["success"] is False and body["code"] == "too_deep" and body["field"] == "body"
    assert "nested" in body["error"]


async def test_media_complete(api: Api) -> None:
    response = await api.client.post("/api/v2/media/upload/complete/", content=OBJECTS, headers={**api.auth(), **JSON})
    assert response.status_code == 400, response.text
    body = response.json()
    assert body["code"] == "too_deep" and body["field"] == "body" and "nested" in body["detail"]


async def test_asset_complete(api: Api) -> None:
    response = await api.client.post("/asset/complete", content=OBJECTS, headers={**api.auth(), **JSON})
    assert response.status_code == 400, response.text
    body = response.json()
    assert body["status"] == "error" and "nested" in body["message"]


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/api/v2/pm/upload/?done", b'{"qquuid": "u", "qqtotalfilesize": ' + b"9" * 5000 + b"}"),
        ("/api/v2/media/upload/complete/", b'{"upload_id": ' + b"9" * 5000 + b', "md5": "x"}'),
        ("/asset", b'{"filename": "a.bin", "filesize": ' + b"9" * 5000 + b"}"),
        ("/asset/complete", b'{"fileId": "f", "filesize": ' + b"9" * 5000 + b"}"),
        ("/v1/files", b'{"filename": "a.bin", "sizeBytes": ' + b"9" * 5000 + b"}"),
    ],
)
async def test_an_integer_past_the_conversion_limit_is_a_400(api: Api, path: str, body: bytes) -> None:
    """Python refuses to convert an integer of more than 4,300 digits (ValueError, not a
    JSONDecodeError): the hand-parsed JSON doors answered 500."""
    response = await api.client.post(path, content=body, headers={**api.auth(), **JSON})
    assert response.status_code == 400, (path, response.status_code, response.text)
    assert "digits" in response.text


async def test_shallow_json_is_parsed_as_before(api: Api) -> None:
    brackets = {"filename": '[[[{"x": "[[[[{{{"}]]]', "sizeBytes": 1}
    created = await api.client.post("/v1/files", json=brackets, headers=api.auth())
    assert created.status_code == 201, created.text
    # Shallow nesting is parsed too: a nested member is refused for what it is, an unknown field.
    nested = {"filename": "a", "sizeBytes": 1, "extra": [[[{"x": "[[[[{{{"}]]]}
    refused = await api.client.post("/v1/files", json=nested, headers=api.auth())
    assert refused.status_code == 400 and refused.json()["error"]["field"] == "extra", refused.text


def test_meter_counts_only_structure_outside_strings() -> None:
    meter = DepthMeter(max_depth=2)
    meter.feed(b'{"a": "[[[[\\"[[[", "b": [1, "]]]]"]}')
    assert meter.depth == 0
    with pytest.raises(TooDeep):
        DepthMeter(max_depth=2).feed(b'{"a": [[1]]}')


def test_meter_escapes_across_pieces() -> None:
    meter = DepthMeter(max_depth=1)
    for piece in (b'{"a": "x\\', b'"', b"[[[[", b'"', b"}"):  # the quote after the backslash is escaped
        meter.feed(piece)
    assert meter.depth == 0 and not meter.in_string


def test_loads() -> None:
    assert loads(b'{"a": [1, {"b": 2}]}') == {"a": [1, {"b": 2}]}
    with pytest.raises(TooDeep) as caught:
        loads(b"[" * (MAX_JSON_DEPTH + 1), field="qqfile")
    assert caught.value.field == "qqfile"
