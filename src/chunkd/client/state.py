"""Remembers which upload a local file went to, so the same command run again resumes it.

A small JSON file, ``$XDG_STATE_HOME/chunkd/uploads.json`` (``~/.local/state/chunkd/`` when that
variable is unset), private to the user (0600 in a 0700 directory). An entry is keyed by a hash of
(server URL, key identity, absolute path, size, mtime_ns): a changed file, another server or another
key never resumes someone else's upload. The key identity is the key id of a ``ck_<id>_<secret>``
key (never its secret) or of the key an access token was issued for (so a fresh token resumes what
an expired one began), or a hash of any other credential (see :func:`key_identity`). Entries are
removed when their upload completes or turns out to be gone; entries untouched for 30 days are
dropped. A state file that cannot be written (a read-only home, a path that is not a directory)
costs only the resuming: the upload goes on, with one warning (logger ``chunkd.client``).

The file is replaced whole and durably (a temporary file beside it, fsynced, renamed over it, the
directory fsynced), so a power cut leaves the old state or the new one, never an empty or torn
file. One found damaged anyway (empty, not JSON, not the expected shape: another program, a disk
fault) is read as no saved state, with one warning: the uploads it recorded start over."""

from __future__ import annotations

import base64
import contextlib
import fcntl
import hashlib
import json
import logging
import os
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["LocalFile", "UploadState", "default_state_dir", "key_identity"]

log = logging.getLogger("chunkd.client")

_KEY = re.compile(r"^(ck_[0-9a-f]{16})_")
_KEY_ID = re.compile(r"[0-9a-f]{16}")
MAX_AGE_SECONDS = 30 * 86400


def default_state_dir() -> Path:
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "chunkd"


def key_identity(key: str | None) -> str:
    """Who the uploads belong to, without the secret: the key id; for an access token, the key id it
    was issued for (its ``chunkd_key`` claim), or its issuer and subject (another identity provider's);
    else a hash of the credential. A token lives minutes: keyed by its hash, an upload it began was
    never resumed by the next token of the same key.

    The claims are read, not verified: this is not a check of who may do what (the server checks
    every request and scopes every lookup by owner) but which remembered uploads to try. A token
    that lies about its key is refused by the server before any of them is looked up."""
    if not key:
        return "anonymous"
    match = _KEY.match(key)
    if match:
        return match.group(1)
    claims = _token_claims(key)
    issued_for = claims.get("chunkd_key")
    if isinstance(issued_for, str) and _KEY_ID.fullmatch(issued_for):
        return f"ck_{issued_for}"  # the key's own identity: a key and its tokens resume each other's uploads
    issuer, subject = claims.get("iss"), claims.get("sub")
    if isinstance(issuer, str) and isinstance(subject, str) and subject:
        return "jwt:" + _digest([issuer, subject])[:32]
    return "sha256:" + hashlib.sha256(key.encode()).hexdigest()[:32]


def _token_claims(token: str) -> dict[str, Any]:
    """The payload of a JWT (``header.payload.signature``, base64url), or {} for anything else."""
    pieces = token.split(".")
    if len(pieces) != 3:
        return {}
    try:
        payload = json.loads(base64.urlsafe_b64decode(pieces[1] + "=" * (-len(pieces[1]) % 4)))
    except (ValueError, TypeError):  # not base64, not UTF-8, not JSON
        return {}
    return payload if isinstance(payload, dict) else {}


def _digest(parts: list[str]) -> str:
    # A path is bytes on POSIX: one that is not UTF-8 comes as str with surrogates (PEP 383),
    # which a plain encode() refused, and every upload of such a file failed.
    return hashlib.sha256("\0".join(parts).encode("utf-8", "surrogateescape")).hexdigest()


@dataclass(frozen=True)
class LocalFile:
    """What identifies a local file's bytes well enough to resume its upload."""

    path: str  # absolute
    size: int
    mtime_ns: int

    @classmethod
    def of(cls, path: str | os.PathLike[str]) -> LocalFile:
        absolute = os.path.abspath(os.fspath(path))
        info = os.stat(absolute)
        return cls(absolute, info.st_size, info.st_mtime_ns)


class UploadState:
    """The upload id remembered for (server, key, local file); safe between concurrent processes
    (a lock file serialises read-modify-write; the JSON file is replaced atomically)."""

    def __init__(self, directory: Path | None = None) -> None:
        self.directory = directory or default_state_dir()
        self.path = self.directory / "uploads.json"
        self._warned = False
        self._warned_damaged = False

    @staticmethod
    def entry_key(server: str, key: str | None, local: LocalFile) -> str:
        parts = [server.rstrip("/"), key_identity(key), local.path, str(local.size), str(local.mtime_ns)]
        return _digest(parts)

    def get(self, server: str, key: str | None, local: LocalFile) -> str | None:
        entry = self._read().get(self.entry_key(server, key, local))
        return str(entry["id"]) if isinstance(entry, dict) and "id" in entry else None

    @staticmethod
    def _owner_of(server: str, key: str | None, path: str) -> str:
        """The same server, key and path, whatever the file's size and mtime."""
        return _digest([server.rstrip("/"), key_identity(key), path])

    def put(self, server: str, key: str | None, local: LocalFile, upload_id: str) -> None:
        entry = {"id": upload_id, "path": local.path, "at": time.time(), "of": self._owner_of(server, key, local.path)}
        try:
            with self._locked(durable=True) as entries:
                entries[self.entry_key(server, key, local)] = entry
        except OSError as exc:
            self._cannot_write(exc)

    def superseded(self, server: str, key: str | None, local: LocalFile) -> list[str]:
        """The uploads this path went to, on this server with this key, while the file was other
        (another size or mtime); they are forgotten. Nothing will resume them: the caller may
        cancel them, rather than leave them counted as pending until they expire."""
        current = self.entry_key(server, key, local)
        owner = self._owner_of(server, key, local.path)
        try:
            with self._locked() as entries:
                stale = [k for k, v in entries.items() if isinstance(v, dict) and v.get("of") == owner and k != current]
                return [str(entries.pop(k)["id"]) for k in stale]
        except OSError as exc:
            self._cannot_write(exc)
            return []

    def forget(self, server: str, key: str | None, local: LocalFile) -> None:
        try:
            with self._locked() as entries:
                entries.pop(self.entry_key(server, key, local), None)
        except OSError as exc:
            self._cannot_write(exc)

    def _cannot_write(self, exc: OSError) -> None:
        if not self._warned:
            self._warned = True
            log.warning(
                "cannot keep upload state in %s (%s): uploads go on, but an interrupted one will start over",
                self.directory,
                exc.strerror or exc,
            )

    def _read(self) -> dict[str, Any]:
        return self._load()[0]

    def _load(self) -> tuple[dict[str, Any], bool]:
        """The entries, and whether the file as found is sound (absent counts as sound)."""
        try:
            text = self.path.read_bytes()
        except FileNotFoundError:
            return {}, True
        except OSError:  # unreadable: writing it fails too, and says so (``_cannot_write``)
            return {}, True
        try:
            data = json.loads(text)
        except ValueError:  # also bytes that are not UTF-8
            data = None
        entries = data.get("uploads") if isinstance(data, dict) else None
        if not isinstance(entries, dict):
            self._damaged(len(text))
            return {}, False
        return entries, True

    def _damaged(self, size: int) -> None:
        if not self._warned_damaged:
            self._warned_damaged = True
            what = "is empty" if size == 0 else "is not a chunkd upload state file"
            log.warning(
                "upload state %s %s (a crash or another program?): read as no saved state; "
                "the uploads it recorded start over",
                self.path,
                what,
            )

    @contextlib.contextmanager
    def _locked(self, *, durable: bool = False) -> Iterator[dict[str, Any]]:
        """The entries, to change in place; written back (atomically) if changed. ``durable``: the
        change itself must survive a power cut (a new entry, which is what resumes); forgetting one
        need not (a forgotten upload found again is looked up, and forgotten then), so it saves
        the directory's fsync."""
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(self.directory / "uploads.lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            entries, sound = self._load()
            before = dict(entries)
            yield entries
            cutoff = time.time() - MAX_AGE_SECONDS
            kept = {k: v for k, v in entries.items() if isinstance(v, dict) and v.get("at", 0) >= cutoff}
            # Most calls change nothing (no superseded upload, nothing to forget): no write, no fsync.
            if kept != before or not sound:
                self._replace({"uploads": kept}, durable=durable)
        finally:
            os.close(fd)

    def _replace(self, data: dict[str, Any], *, durable: bool) -> None:
        """Write ``data`` as the state file, atomically (under the lock): after a power cut the file
        holds the old entries or the new ones, whole; ``durable``: the new ones. An upload costs
        three fsyncs here (its entry's two, the forgetting's one): ~20 ms more per 1 KiB file on a
        loaded 2-core VM's ext4 (fsync ~4-7 ms there), where its upload to a local server took ~100 ms."""
        # One writer at a time (the lock), so one name: a temporary file left by a crash is reused.
        temporary = self.directory / "uploads.json.tmp"
        out = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(out, "w") as handle:
            json.dump(data, handle)
            handle.flush()
            # Without it a power cut after the rename may leave the new name on no data (ext4, XFS).
            os.fsync(handle.fileno())
        os.replace(temporary, self.path)
        if not durable:
            return
        directory = os.open(self.directory, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(directory)  # the rename itself
        finally:
            os.close(directory)
