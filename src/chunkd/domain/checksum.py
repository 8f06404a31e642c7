"""Hashes the engine carries across requests and restarts.

``ResumableMD5`` is an MD5 whose internal state can be saved as bytes and restored later, so the
whole-file digest is carried forward as contiguous bytes arrive and ``complete`` never re-reads
the file, even after a restart. ``hashlib`` objects cannot be serialised, so this drives OpenSSL's
``MD5_Init/MD5_Update/MD5_Final`` through ctypes: ``MD5_CTX`` is a plain 92-byte struct with no
pointers, which makes its raw bytes a complete, portable-within-the-machine snapshot. OpenSSL is
what ``hashlib`` itself uses, so it is present wherever Python's hashing works, and ctypes drops the
GIL during ``MD5_Update``, so hashing runs in parallel with the event loop when done in a thread.
"""

from __future__ import annotations

import base64
import binascii
import ctypes
import ctypes.util
import hashlib
import re
import zlib
from collections.abc import AsyncIterator, Callable
from typing import Protocol

__all__ = [
    "MD5_STATE_SIZE",
    "STREAM_HASH_ALGORITHMS",
    "ResumableMD5",
    "StreamHasher",
    "new_stream_hasher",
    "parse_content_md5",
    "parse_md5_hex",
    "same_bytes",
]

MD5_STATE_SIZE = 92  # sizeof(MD5_CTX): A,B,C,D,Nl,Nh (6 x u32) + data[16] (u32) + num (u32)


def _load_libcrypto() -> ctypes.CDLL:
    names = [ctypes.util.find_library("crypto"), "libcrypto.so.3", "libcrypto.so.1.1", "libcrypto.dylib"]
    for name in names:
        if not name:
            continue
        try:
            lib = ctypes.CDLL(name)
            lib.MD5_Init.argtypes = [ctypes.c_void_p]
            lib.MD5_Update.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_size_t]
            lib.MD5_Final.argtypes = [ctypes.c_char_p, ctypes.c_void_p]
            return lib
        except (OSError, AttributeError):
            continue
    raise RuntimeError("chunkd needs OpenSSL's libcrypto (MD5_Init/MD5_Update/MD5_Final) for resumable MD5")


_LIB = _load_libcrypto()
# The buffer types, held here: ctypes keeps ``c_char * n`` only while something refers to it, so a
# type made per call died with its last buffer (a reference cycle for the collector) and was made
# again by the next request.
_CTX = ctypes.c_char * MD5_STATE_SIZE
_DIGEST = ctypes.c_char * 16


class ResumableMD5:
    """An MD5 whose state survives a restart: ``state()`` → bytes → ``ResumableMD5(state)``."""

    __slots__ = ("_ctx",)

    def __init__(self, state: bytes | None = None) -> None:
        if state is None:
            self._ctx = _CTX()
            _LIB.MD5_Init(self._ctx)
        else:
            if len(state) != MD5_STATE_SIZE:
                raise ValueError(f"MD5 state must be {MD5_STATE_SIZE} bytes, got {len(state)}")
            self._ctx = _CTX.from_buffer_copy(state)

    def update(self, data: bytes | bytearray | memoryview) -> None:
        if len(data):
            buf = data if isinstance(data, bytes) else bytes(data)
            _LIB.MD5_Update(self._ctx, buf, len(buf))

    def state(self) -> bytes:
        return self._ctx.raw

    def copy(self) -> ResumableMD5:
        return ResumableMD5(self.state())

    def hexdigest(self) -> str:
        """The digest of everything so far; the object itself stays usable."""
        ctx = _CTX.from_buffer_copy(self._ctx)
        out = _DIGEST()
        _LIB.MD5_Final(out, ctx)
        return out.raw.hex()


_HEX_MD5 = re.compile(r"^[0-9a-fA-F]{32}$")


def parse_md5_hex(value: str, *, field: str) -> str:
    """A client's MD5 hex digest, lower-cased; ``ValueError`` naming the field otherwise."""
    value = value.strip().strip('"')
    if not _HEX_MD5.fullmatch(value):
        raise ValueError(f"{field} must be an MD5 digest of 32 hexadecimal characters")
    return value.lower()


def parse_content_md5(value: str) -> str:
    """RFC 1864 ``Content-MD5`` (base64 of the 16 raw bytes) → lower-case hex."""
    try:
        raw = base64.b64decode(value.strip(), validate=True)
    except (binascii.Error, ValueError):
        raw = b""
    if len(raw) != 16:
        raise ValueError("Content-MD5 must be the base64 encoding of a 16-byte MD5 digest")
    return raw.hex()


class StreamHasher(Protocol):
    def update(self, data: bytes, /) -> None: ...
    def digest(self) -> bytes: ...


class _CRC32:
    """zlib.crc32 behind the hashlib interface (tus lists ``crc32`` among checksum algorithms)."""

    def __init__(self) -> None:
        self._value = 0

    def update(self, data: bytes) -> None:
        self._value = zlib.crc32(data, self._value)

    def digest(self) -> bytes:
        return self._value.to_bytes(4, "big")


STREAM_HASH_ALGORITHMS: dict[str, Callable[[], StreamHasher]] = {
    "md5": hashlib.md5,
    "sha1": hashlib.sha1,
    "sha256": hashlib.sha256,
    "crc32": _CRC32,
}


def new_stream_hasher(algorithm: str) -> StreamHasher:
    try:
        return STREAM_HASH_ALGORITHMS[algorithm]()
    except KeyError:
        raise ValueError(f"unsupported checksum algorithm {algorithm!r}") from None


async def same_bytes(chunks: AsyncIterator[bytes], size: int, md5: str | None) -> bool:
    """Whether ``chunks`` are exactly a file of ``size`` bytes with this MD5 (a completed file sent
    again because the answer that completed it was lost); reading stops as soon as they are longer."""
    digest = hashlib.md5()
    seen = 0
    async for chunk in chunks:
        seen += len(chunk)
        if seen > size:
            return False
        digest.update(chunk)
    return seen == size and digest.hexdigest() == md5
