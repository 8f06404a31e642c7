"""Shape checks on owners, tokens and ids match the whole value: a pattern ending in "$" also
matches before a trailing newline, so "alice\\n" passed as an owner name (a JWT ``sub`` from an
identity provider, say) and a key or link token with a newline after it verified."""

from __future__ import annotations

import pytest

from chunkd.auth.keys import is_owner
from chunkd.domain.errors import Unauthenticated
from tests.conftest import Api


def test_an_owner_name_with_a_trailing_newline_is_not_one() -> None:
    assert is_owner("alice") and not is_owner("alice\n")


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
async def test_a_token_with_a_trailing_newline_is_refused(api: Api) -> None:
    key = api.keys["alice"]
    assert (await api.runtime.keys.verify(key)).owner == "alice"
    with pytest.raises(Unauthenticated, match="malformed"):
        await api.runtime.keys.verify(key + "\n")
    _, link = await api.runtime.links.create("alice")
    assert (await api.runtime.links.verify(link)).owner == "alice"
    with pytest.raises(Unauthenticated, match="malformed"):
        await api.runtime.links.verify(link + "\n")
