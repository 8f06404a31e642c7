"""Small done/complete bodies (``chunkd.frontends.forms``): url-encoded, JSON by type or by shape,
JSON numbers as text only where a dialect takes them, and the size bound."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from chunkd.domain.errors import InvalidInput, TooLarge
from chunkd.frontends.forms import parse_small_body, read_small_body


def test_url_encoded_and_json_by_type_or_shape() -> None:
    assert parse_small_body(b"a=1&b=&c=x%20y", "application/x-www-form-urlencoded") == {"a": "1", "b": "", "c": "x y"}
    assert parse_small_body(b'{"a": "1", "n": null}', "application/x-www-form-urlencoded") == {"a": "1"}
    assert parse_small_body(b'{"a": "1"}', "application/merge-patch+json") == {"a": "1"}
    assert parse_small_body(b"", "application/json") == {}


def test_json_numbers_only_where_allowed() -> None:
    body = b'{"qqtotalparts": 5, "flag": true, "name": "x"}'
    assert parse_small_body(body, "application/json") == {"qqtotalparts": "5", "flag": "true", "name": "x"}
    with pytest.raises(InvalidInput) as caught:
        parse_small_body(body, "application/json", numbers=False)
    assert caught.value.field == "qqtotalparts"
    with pytest.raises(InvalidInput) as nested:
        parse_small_body(b'{"a": [1]}', "application/json")
    assert nested.value.field == "a"


@pytest.mark.parametrize("body", [b"{not json", b"[1, 2]"])
def test_bad_json_names_the_body(body: bytes) -> None:
    with pytest.raises(InvalidInput) as caught:
        parse_small_body(body, "application/json")
    assert caught.value.field == "body"


async def test_body_over_the_limit_is_refused() -> None:
    async def stream() -> AsyncIterator[bytes]:
        for _ in range(10):
            yield b"x" * 10

    assert await read_small_body(stream(), limit=100) == b"x" * 100
    with pytest.raises(TooLarge) as caught:
        await read_small_body(stream(), limit=99)
    assert caught.value.field == "body"
