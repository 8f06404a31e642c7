"""Pure pieces of the SDK: sizes, retry timing, which parts are missing, the state file's keys."""

from __future__ import annotations

import email.utils
import time
from pathlib import Path

import httpx
import pytest

from chunkd.client import Client, ConnectionFailed, File, Part, RetryPolicy, parse_size
from chunkd.client._core import missing_parts
from chunkd.client.errors import AuthenticationError, ChecksumMismatch, ServerError, error_from_response
from chunkd.client.retry import is_retryable_response, retry_after
from chunkd.client.state import LocalFile, UploadState, key_identity


@pytest.mark.parametrize(
    ("text", "size"),
    [("8MiB", 8 * 2**20), ("16M", 16 * 2**20), ("512k", 512 * 1024), ("1.5GB", 1_500_000_000), ("1048576", 2**20)],
)
def test_parse_size(text: str, size: int) -> None:
    assert parse_size(text) == size


@pytest.mark.parametrize("text", ["", "MiB", "8 parsecs", "-1M", "1e6"])
def test_parse_size_refuses_what_is_not_a_size(text: str) -> None:
    with pytest.raises(ValueError):
        parse_size(text)


def test_backoff_grows_with_jitter_within_bounds_and_respects_retry_after() -> None:
    policy = RetryPolicy(base_delay=1, max_delay=8, max_retry_after=60)
    for attempt, ceiling in [(0, 1), (1, 2), (2, 4), (3, 8), (10, 8)]:
        waits = {policy.delay(attempt) for _ in range(50)}
        assert all(ceiling / 2 <= w <= ceiling for w in waits) and len(waits) > 1
    assert policy.delay(0, server_hint=30) == 30
    assert policy.delay(0, server_hint=3600) == 60


def test_retry_after_in_seconds_or_as_a_date_and_what_is_retried() -> None:
    assert retry_after(httpx.Response(429, headers={"Retry-After": "7"})) == 7
    later = email.utils.formatdate(time.time() + 100, usegmt=True)
    hint = retry_after(httpx.Response(503, headers={"Retry-After": later}))
    assert hint is not None and 90 < hint <= 100
    assert retry_after(httpx.Response(503, headers={"Retry-After": "soon"})) is None
    # "²" passes str.isdigit but not float(): unreadable, not a crash of the client.
    assert retry_after(httpx.Response(503, headers=[(b"Retry-After", b"\xb2")])) is None
    busy = httpx.Response(409, json={"error": {"code": "upload_busy", "message": "busy"}})
    conflict = httpx.Response(409, json={"error": {"code": "missing_parts", "message": "no"}})
    assert is_retryable_response(busy) and not is_retryable_response(conflict)
    # A hook or virus scanner briefly away: the server's 409 says when to try again.
    for code in ("hook_unavailable", "scan_unavailable"):
        away = httpx.Response(409, headers={"Retry-After": "1"}, json={"error": {"code": code, "message": "later"}})
        assert is_retryable_response(away)
    assert is_retryable_response(httpx.Response(502)) and not is_retryable_response(httpx.Response(400))
    assert not is_retryable_response(httpx.Response(501)) and not is_retryable_response(httpx.Response(505))


def test_error_bodies_become_typed_errors() -> None:
    body = {"error": {"code": "checksum_mismatch", "message": "md5 differs", "field": "md5", "expected": "x"}}
    error = error_from_response(httpx.Response(400, json=body))
    assert isinstance(error, ChecksumMismatch)
    assert (error.code, error.field, error.details) == ("checksum_mismatch", "md5", {"expected": "x"})
    assert isinstance(
        error_from_response(httpx.Response(401, json={"error": {"code": "x", "message": "m"}})), AuthenticationError
    )
    gateway = error_from_response(httpx.Response(502, text="<html>Bad Gateway</html>"))
    assert isinstance(gateway, ServerError) and gateway.code == "http_error" and "Bad Gateway" in gateway.message


def test_missing_parts_go_by_number_and_size_never_by_etag() -> None:
    parts = (Part(1, 10, "crc:whatever"), Part(2, 4, None), Part(4, 3, '"abc"'))  # 2 is short: sent again
    file = File("id", "f", 33, "PENDING", part_size=10, part_count=4, parts=parts)
    assert missing_parts(file) == [2, 3]


def test_state_entries_depend_on_server_key_and_file(tmp_path: Path) -> None:
    path = tmp_path / "f.bin"
    path.write_bytes(b"abc")
    state, local = UploadState(tmp_path / "state"), LocalFile.of(path)
    key = "ck_0123456789abcdef_" + "s" * 43
    state.put("http://a", key, local, "UPLOAD")
    assert state.get("http://a/", key, local) == "UPLOAD"
    assert state.get("http://b", key, local) is None
    assert state.get("http://a", "ck_fedcba9876543210_" + "s" * 43, local) is None
    assert key_identity(key) == "ck_0123456789abcdef" and "s" * 43 not in state.path.read_text()
    path.write_bytes(b"abcd")
    assert state.get("http://a", key, LocalFile.of(path)) is None


def test_a_server_never_reached_fails_after_one_more_try_and_one_that_answered_is_waited_for() -> None:
    tries: list[str] = []
    answering = False

    def answer(request: httpx.Request) -> httpx.Response:
        tries.append(request.url.path)
        if not answering or len(tries) in (2, 3):  # refused; later a restart: refused twice
            raise httpx.ConnectError("connection refused", request=request)
        return httpx.Response(200, json={"id": "abc", "filename": "a", "sizeBytes": 1, "status": "PENDING"})

    policy = RetryPolicy(base_delay=0.001, max_delay=0.001)
    with Client("http://127.0.0.1:9", "k", transport=httpx.MockTransport(answer), retry=policy) as client:
        with pytest.raises(ConnectionFailed):
            client.get("abc")
        assert len(tries) == 2  # not the policy's 8: a wrong URL or a server not started
    tries.clear()
    answering = True
    with Client("http://127.0.0.1:9", "k", transport=httpx.MockTransport(answer), retry=policy) as client:
        assert client.get("abc").id == "abc"
        assert client.get("abc").id == "abc"  # refused twice, then answered: the restart is ridden out
    assert len(tries) == 4


@pytest.mark.parametrize("kind", ["fifo", "device", "directory"])
def test_a_path_that_is_not_a_regular_file_is_refused_at_once(tmp_path: Path, kind: str) -> None:
    """A FIFO used to hang the upload in ``open()`` until a writer came; a device or a directory
    has no size to declare either."""
    import concurrent.futures
    import os

    from chunkd.client.source import Source

    path = {"device": Path("/dev/null"), "directory": tmp_path}.get(kind, tmp_path / "pipe")
    if kind == "fifo":
        os.mkfifo(path)
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        opening = pool.submit(Source, path)
        try:
            with pytest.raises(IsADirectoryError, match="not a regular file"):
                opening.result(timeout=60)  # a hang is a failure, not a stuck suite
        finally:
            if kind == "fifo" and not opening.done():
                with open(path, "wb"):  # release the blocked open so the pool can end
                    pass


def test_a_key_is_stripped_and_one_with_inner_whitespace_is_refused_without_showing_it() -> None:
    key = "ck_0123456789abcdef_" + "s" * 43
    assert Client("http://127.0.0.1:9", key + "\n").key == key
    with pytest.raises(ValueError, match="whitespace") as refused:
        Client("http://127.0.0.1:9", key[:25] + "\r\n" + key[25:])
    assert "sss" not in str(refused.value)


def test_the_state_file_is_replaced_durably(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A power cut must leave the old state or the new one: the new bytes are fsynced before the
    rename, and the directory after it (the rename alone left an empty file after a cut on ext4)."""
    import os

    import chunkd.client.state as state_module

    events: list[tuple[str, str]] = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd: int) -> None:
        events.append(("fsync", os.readlink(f"/proc/self/fd/{fd}")))
        real_fsync(fd)

    def replace(source: str | os.PathLike[str], target: str | os.PathLike[str]) -> None:
        events.append(("replace", os.fspath(target)))
        real_replace(source, target)

    monkeypatch.setattr(state_module.os, "fsync", fsync)
    monkeypatch.setattr(state_module.os, "replace", replace)
    path = tmp_path / "f.bin"
    path.write_bytes(b"abc")
    state = UploadState(tmp_path / "state")
    state.put("http://a", "ck_0123456789abcdef_x", LocalFile.of(path), "UPLOAD")
    directory = str(state.directory.resolve())
    assert events == [
        ("fsync", str((state.directory / "uploads.json.tmp").resolve())),
        ("replace", str(state.path)),
        ("fsync", directory),
    ]
    assert state.get("http://a", "ck_0123456789abcdef_x", LocalFile.of(path)) == "UPLOAD"
    # Nothing changed, nothing written: a create with no superseded upload costs no second fsync.
    events.clear()
    assert state.superseded("http://a", "ck_0123456789abcdef_x", LocalFile.of(path)) == []
    state.forget("http://b", "ck_0123456789abcdef_x", LocalFile.of(path))
    assert events == []
    # Forgetting is atomic but need not outlive a power cut (the upload found again is looked up and
    # forgotten then): the directory is not fsynced for it.
    state.forget("http://a", "ck_0123456789abcdef_x", LocalFile.of(path))
    assert events == [("fsync", str((state.directory / "uploads.json.tmp").resolve())), ("replace", str(state.path))]
    assert state.get("http://a", "ck_0123456789abcdef_x", LocalFile.of(path)) is None


@pytest.mark.parametrize(
    "damage",
    [b"", b'{"uploads": {"0f', b"\xff\xfe\x00", b"[]", b'{"uploads": []}', b'{"uploads": "x"}', b"null"],
    ids=["empty", "torn", "not-utf8", "a-list", "uploads-a-list", "uploads-a-string", "null"],
)
def test_a_damaged_state_file_is_no_saved_state_with_one_warning(
    tmp_path: Path, damage: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    """What a power cut or another program may leave: read as nothing remembered (the upload then
    starts over), said once, and replaced by a sound file at the next write; never a crash."""
    path = tmp_path / "f.bin"
    path.write_bytes(b"abc")
    state, local, key = UploadState(tmp_path / "state"), LocalFile.of(path), "ck_0123456789abcdef_x"
    state.directory.mkdir(parents=True)
    state.path.write_bytes(damage)
    assert state.get("http://a", key, local) is None
    assert state.superseded("http://a", key, local) == []
    state.put("http://a", key, local, "UPLOAD")
    assert state.get("http://a", key, local) == "UPLOAD"
    warnings = [r.getMessage() for r in caplog.records if r.name == "chunkd.client" and r.levelname == "WARNING"]
    assert len(warnings) == 1 and "read as no saved state" in warnings[0], warnings
    assert str(state.path) in warnings[0]


def test_storage_full_is_tried_three_times_not_eight_and_is_its_own_error() -> None:
    from chunkd.client import StorageFull

    tries: list[str] = []

    def full(request: httpx.Request) -> httpx.Response:
        tries.append(request.url.path)
        body = {"error": {"code": "storage_full", "message": "no space left for upload bytes"}}
        return httpx.Response(507, headers={"Retry-After": "30"}, json=body)

    policy = RetryPolicy(base_delay=0.001, max_delay=0.001, max_retry_after=0.001)
    client = Client("http://127.0.0.1:9", "k", transport=httpx.MockTransport(full), retry=policy)
    with client, pytest.raises(StorageFull) as refused:
        client.get("abc")
    assert len(tries) == 3 and isinstance(refused.value, ServerError) and refused.value.code == "storage_full"


def test_an_access_token_is_known_by_the_key_it_was_issued_for() -> None:
    """A token lives minutes; keyed by its hash, an upload it began was never resumed by the next."""
    import base64
    import json

    def token(claims: object) -> str:
        def part(value: object) -> str:
            return base64.urlsafe_b64encode(json.dumps(value).encode()).rstrip(b"=").decode()

        return f"{part({'alg': 'HS256'})}.{part(claims)}.c2lnbmF0dXJl"

    first = token({"sub": "alice", "iss": "chunkd", "chunkd_key": "0123456789abcdef", "jti": "a"})
    later = token({"sub": "alice", "iss": "chunkd", "chunkd_key": "0123456789abcdef", "jti": "b"})
    assert key_identity(first) == key_identity(later) == key_identity("ck_0123456789abcdef_" + "s" * 43)
    # Another identity provider's tokens: by issuer and subject.
    idp = token({"sub": "alice", "iss": "https://idp", "exp": 1})
    assert key_identity(idp) == key_identity(token({"sub": "alice", "iss": "https://idp", "exp": 2}))
    assert key_identity(idp) != key_identity(token({"sub": "bob", "iss": "https://idp", "exp": 1}))
    assert key_identity(idp) != key_identity(token({"sub": "alice", "iss": "https://other", "exp": 1}))
    # Anything else is known by its hash: a claim that is not a key id, a payload that is not JSON.
    for other in (token({"chunkd_key": "../x"}), token(["x"]), "a.%%%.c", "cl_0123_secret"):
        assert key_identity(other).startswith("sha256:"), other
