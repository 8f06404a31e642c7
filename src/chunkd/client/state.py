"""Remembers which upload a local file went to, so the same command run again resumes it.

A small JSON file, ``$XDG_STATE_HOME/chunkd/uploads.json`` (``~/.local/state/chunkd/`` when that
variable is unset), private to the user (0600 in a 0700 directory). An entry is keyed by a hash of
(server URL, key identity, absolute path, size, mtime_ns): a changed file, another server or another
key never resumes someone else's upload. The key identity is the key id of a ``ck_<id>_<secret>``
key (never its secret), or a hash of any other credential. Entries are removed when their upload
completes or turns out to be gone; entries untouched for 30 days are dropped. A state file that
cannot be written (a read-only home, a path that is not a directory) costs only the resuming: the
upload goes on, with one warning (logger ``chunkd.client``)."""

from __future__ import annotations

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
MAX_AGE_SECONDS = 30 * 86400


def default_state_dir() -> Path:
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "chunkd"


def key_identity(key: str | None) -> str:
    """Who the uploads belong to, without the secret: the key id, or a hash of the credential."""
    if not key:
        return "anonymous"
    match = _KEY.match(key)
    if match:
        return match.group(1)
    return "sha256:" + hashlib.sha256(key.encode()).hexdigest()[:32]


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
            with self._locked() as entries:
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
        try:
            data = json.loads(self.path.read_text())
        except (OSError, ValueError):
            return {}
        return data.get("uploads", {}) if isinstance(data, dict) else {}

    @contextlib.contextmanager
    def _locked(self) -> Iterator[dict[str, Any]]:
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(self.directory / "uploads.lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            entries = self._read()
            yield entries
            cutoff = time.time() - MAX_AGE_SECONDS
            kept = {k: v for k, v in entries.items() if isinstance(v, dict) and v.get("at", 0) >= cutoff}
            temporary = self.path.with_suffix(f".{os.getpid()}.tmp")
            out = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(out, "w") as handle:
                json.dump({"uploads": kept}, handle)
            os.replace(temporary, self.path)
        finally:
            os.close(fd)
