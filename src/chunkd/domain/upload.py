"""The Upload aggregate: one upload session, its parts, its state machine.

An upload is filled in one of two ways:

* ``Mode.PARTS``  — numbered parts of a fixed ``part_size`` (the last one shorter), in any order and
  in parallel; a re-sent part replaces the earlier one. (Files API, assets, Fine Uploader chunks.)
  ``size_bytes`` may be unknown at first (a Fine Uploader chunk without ``qqtotalfilesize``): parts
  are then exactly ``part_size`` except the one the caller says is the last, and the size is
  declared once it is known. The part size itself may be provisional until part 1 has arrived
  (``PART_SIZE_FROM_PART_1`` in the metadata: a Fine Uploader chunk 0 sent without
  ``qqchunksize``): part 1's size then becomes the part size (``settle_part_size``).
* ``Mode.APPEND`` — bytes appended at the current end, one writer at a time; every append is stored
  as the next part. (tus PATCH, Content-Range chunks.) ``size_bytes`` may be unknown until later.

Status moves PENDING → COMPLETED | CANCELLED | EXPIRED and never leaves a terminal state.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from itertools import islice
from typing import Any

from chunkd.domain.checksum import ResumableMD5
from chunkd.domain.errors import (
    Expired,
    InvalidState,
    MissingParts,
    OffsetMismatch,
    PartOutOfRange,
    PartSizeMismatch,
    SizeMismatch,
)

__all__ = ["MAX_PARTS", "PART_SIZE_FROM_PART_1", "Mode", "Part", "Status", "Upload"]

MAX_PARTS = 10_000
# Metadata key: the part size is provisional (the largest allowed) until part 1 measures it.
PART_SIZE_FROM_PART_1 = "partSizeFromPart1"


class Status(StrEnum):
    PENDING = "PENDING"
    COMPLETED = "COMPLETED"
    CANCELLED = "CANCELLED"
    EXPIRED = "EXPIRED"


class Mode(StrEnum):
    PARTS = "parts"
    APPEND = "append"


@dataclass
class Part:
    """One stored part. ``hash_state`` is the whole-file MD5 state *after* this part, set once the
    contiguous hash frontier has passed it (so a replaced part can rewind the frontier cheaply).
    ``crc64`` is the part's CRC-64/NVME in hex (its integrity checksum, "" for parts stored before
    it existed); ``md5`` its own MD5 hex digest, only where a client or dialect asked for one."""

    number: int
    offset: int
    size: int
    md5: str
    blob_ref: str
    created_at: datetime
    hash_state: bytes | None = None
    crc64: str = ""

    @property
    def end(self) -> int:
        return self.offset + self.size

    def same_bytes(self, other: Part) -> bool:
        """True when ``other`` holds the same bytes as far as the checksums both have can tell."""
        if self.size != other.size:
            return False
        if self.crc64 and other.crc64:
            return self.crc64 == other.crc64
        return bool(self.md5) and self.md5 == other.md5

    @property
    def checksum(self) -> str:
        """The part's checksum shown to clients (its ETag): its MD5 when one was computed, else its CRC."""
        return self.md5 or self.crc64


@dataclass
class Upload:
    id: str
    owner: str
    filename: str
    mime_type: str
    size_bytes: int | None
    part_size: int
    mode: Mode
    status: Status
    created_at: datetime
    updated_at: datetime
    expires_at: datetime | None
    frontend: str = "native"
    client_ref: str | None = None
    declared_md5: str | None = None
    completed_at: datetime | None = None
    md5: str | None = None
    bytes_received: int = 0
    parts_received: int = 0
    hash_offset: int = 0
    hash_state: bytes | None = None
    # The whole file's CRC-64/NVME (hex), combined from the parts' at completion.
    crc64: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    # The parts loaded with the aggregate: all of them, or only those an operation needs
    # (``bytes_received`` and ``parts_received`` are kept on the upload itself for that reason).
    parts: dict[int, Part] = field(default_factory=dict)

    # ---- geometry -------------------------------------------------------------------------
    @property
    def part_count(self) -> int | None:
        """Number of parts a PARTS upload has; None while the size is unknown or in APPEND mode."""
        if self.mode is not Mode.PARTS or self.size_bytes is None:
            return None
        return -(-self.size_bytes // self.part_size)

    @property
    def end_offset(self) -> int:
        """APPEND mode: where the next append must start (appended parts are contiguous)."""
        return self.bytes_received

    def offset_of(self, number: int) -> int:
        return (number - 1) * self.part_size

    def expected_part_size(self, number: int) -> int:
        """The size part ``number`` must have (with the size still unknown: its most)."""
        if self.size_bytes is None:
            return self.part_size
        return min(self.part_size, self.size_bytes - self.offset_of(number))

    def sorted_parts(self) -> list[Part]:
        return [self.parts[n] for n in sorted(self.parts)]

    def missing_parts(self, limit: int = 1000) -> list[int]:
        """The first ``limit`` part numbers not received (needs every part loaded). Found lazily: a
        size declared late can give a part count far past ``MAX_PARTS`` in a row written before
        that was refused, and listing all its missing parts would never end."""
        count = self.part_count
        if count is None:
            return []
        return list(islice((n for n in range(1, count + 1) if n not in self.parts), limit))

    # ---- checks before bytes are accepted ----------------------------------------------------
    def past_expiry(self, now: datetime) -> bool:
        """A PENDING upload whose expiry has come: expired, whether or not the reaper recorded it."""
        return self.status is Status.PENDING and self.expires_at is not None and self.expires_at <= now

    def ensure_pending(self, now: datetime) -> None:
        if self.status is Status.EXPIRED or self.past_expiry(now):
            raise Expired(f"upload {self.id} has expired", uploadStatus=Status.EXPIRED.value)
        if self.status is not Status.PENDING:
            raise InvalidState(f"upload {self.id} is {self.status.value}", uploadStatus=self.status.value)

    def check_part_number(self, number: int) -> None:
        if self.mode is not Mode.PARTS:
            raise InvalidState("this upload takes appended bytes, not numbered parts")
        count = self.part_count
        if count is None:  # the size is not known yet: any number a file may have
            if not 1 <= number <= MAX_PARTS:
                raise PartOutOfRange(f"partNumber must be between 1 and {MAX_PARTS}", field="partNumber")
            return
        if not 1 <= number <= max(count, 1) or (count == 0 and number != 1):
            raise PartOutOfRange(
                f"partNumber must be between 1 and {max(count, 1)}", field="partNumber", partCount=count
            )

    def check_part_size(self, number: int, size: int, *, last: bool = False) -> None:
        """``last``: with the size still unknown, the caller knows this part ends the file, so it
        may be shorter than ``part_size`` (but not empty); every other part is exactly ``part_size``."""
        if self.size_bytes is None and last:
            if not 0 < size <= self.part_size:
                raise PartSizeMismatch(
                    f"part {number} (the last part) must be 1 to {self.part_size} bytes, got {size}",
                    field="body",
                    expectedSize=self.part_size,
                )
            return
        expected = self.expected_part_size(number)
        if size != expected:
            last = number == self.part_count
            raise PartSizeMismatch(
                f"part {number} must be {expected} bytes{' (the last part)' if last else ''}, got {size}",
                field="body",
                expectedSize=expected,
            )

    def check_append(self, offset: int) -> None:
        if self.mode is not Mode.APPEND:
            raise InvalidState("this upload takes numbered parts, not appended bytes")
        if offset != self.end_offset:
            raise OffsetMismatch(
                f"offset must be {self.end_offset}, got {offset}", field="offset", expectedOffset=self.end_offset
            )

    def room_left(self) -> int | None:
        """APPEND mode: how many more bytes fit, or None while the size is unknown."""
        if self.size_bytes is None:
            return None
        return self.size_bytes - self.end_offset

    # ---- the whole-file hash frontier ----------------------------------------------------------
    # ``hash_state`` is the MD5 state of bytes [0, hash_offset). A part's own ``hash_state`` (the state
    # after it) is valid while ``part.end <= hash_offset``.
    def place_part(self, part: Part, old: Part | None, hashed_from: bytes | None, hashed_to: bytes | None) -> None:
        """Add a newly stored ``part`` (replacing ``old``, if any) to the loaded parts and move the
        frontier as far as what is known allows. ``hashed_from``/``hashed_to``: the whole-file state
        the part's bytes were hashed into as they arrived, before and after (None if they were not)."""
        if old is None:
            self.bytes_received += part.size
            self.parts_received += 1
        else:
            self.bytes_received += part.size - old.size
        self.parts[part.number] = part
        if old is not None and old.end <= self.hash_offset:
            if old.same_bytes(part):
                part.hash_state = old.hash_state  # the same bytes again: the frontier stands
            else:
                # Different bytes where the hash had already passed: rewind to this part's start.
                before = self.parts.get(part.number - 1)
                self.hash_offset = part.offset
                self.hash_state = before.hash_state if before is not None else ResumableMD5().state()
        if hashed_to is not None and self.hash_offset == part.offset and self.hash_state == hashed_from:
            self.mark_hashed(part, hashed_to)

    def frontier_part_number(self) -> int:
        """PARTS mode: the number of the part the whole-file hash frontier is in (or at)."""
        return self.hash_offset // self.part_size + 1

    def next_part_to_hash(self) -> Part | None:
        """PARTS mode: the loaded part that starts at the frontier, if the file is not hashed to its end."""
        if self.mode is not Mode.PARTS or (self.size_bytes is not None and self.hash_offset >= self.size_bytes):
            return None
        part = self.parts.get(self.frontier_part_number())
        return part if part is not None and part.offset == self.hash_offset else None

    def mark_hashed(self, part: Part, state: bytes) -> None:
        """The frontier has passed ``part``; ``state`` is the whole-file MD5 state after it."""
        part.hash_state = state
        self.hash_offset = part.end
        self.hash_state = state

    # ---- transitions ------------------------------------------------------------------------
    def check_complete(self, now: datetime) -> None:
        """Everything that must hold before ``complete`` (bar the checksum)."""
        self.ensure_pending(now)
        missing = self.missing_parts()
        if missing:
            shown = ", ".join(map(str, missing[:20])) + (" …" if len(missing) > 20 else "")
            raise MissingParts(f"parts not received: {shown}", missingParts=missing)
        if self.size_bytes is None:
            raise SizeMismatch("the upload's size is not yet declared", field="sizeBytes")
        received = self.bytes_received
        if received != self.size_bytes:
            raise SizeMismatch(
                f"received {received} bytes, declared {self.size_bytes}", field="sizeBytes", bytesReceived=received
            )

    def last_part(self) -> Part | None:
        """APPEND mode: the loaded part that ends where the next append starts, if loaded."""
        if self.mode is not Mode.APPEND or not self.parts:
            return None
        part = self.parts[max(self.parts)]
        return part if part.end == self.end_offset else None

    def declare_size(self, size: int) -> None:
        """Fix a size that was not known at creation (a deferred tus length, or a concatenation of
        uploads whose lengths were not all known yet). Set once, never below the bytes received."""
        if self.size_bytes is not None and self.size_bytes != size:
            raise InvalidState("the upload's length is already set", field="sizeBytes")
        if size < self.bytes_received:
            raise SizeMismatch(f"length is below the {self.bytes_received} bytes received", field="sizeBytes")
        self.size_bytes = size

    def settle_part_size(self) -> bool:
        """Make part 1's size the part size of an upload created with a provisional one
        (``PART_SIZE_FROM_PART_1``); False when there is nothing to settle. Needs the parts loaded:
        part 1 must be the only one, and the size still unknown (no other part was placed by the
        provisional size)."""
        if not self.metadata.get(PART_SIZE_FROM_PART_1):
            return False
        first = self.parts.get(1)
        if self.mode is not Mode.PARTS or self.size_bytes is not None or first is None or len(self.parts) != 1:
            raise InvalidState("the part size is measured by part 1 alone, before the size is declared")
        self.part_size = first.size
        del self.metadata[PART_SIZE_FROM_PART_1]
        return True

    def record_append(self, part: Part, extended: Part | None, hash_state: bytes) -> None:
        """Appended bytes are durable as ``part``: a new part, or ``extended`` grown in place (the
        same blob, continued). The whole-file hash frontier moves with them (appends are always
        hashed as they arrive; a concatenation appends its sources' parts the same way)."""
        grown = part.size - (extended.size if extended is not None else 0)
        self.bytes_received += grown
        if extended is None:
            self.parts_received += 1
        self.parts[part.number] = part
        part.hash_state = hash_state
        self.hash_offset = part.end
        self.hash_state = hash_state

    def mark_completed(self, now: datetime, md5: str) -> None:
        # Guarded here too (not only by check_complete): terminal states never change.
        if self.status is not Status.PENDING:
            raise InvalidState(f"upload {self.id} is {self.status.value}", uploadStatus=self.status.value)
        self.status = Status.COMPLETED
        self.completed_at = now
        self.expires_at = None
        self.md5 = md5
        self.updated_at = now

    def mark_cancelled(self, now: datetime) -> None:
        self.ensure_pending(now)
        self.status = Status.CANCELLED
        self.expires_at = None
        self.updated_at = now

    def as_of(self, now: datetime) -> Upload:
        """This upload as it stands at ``now``: a PENDING one past its expiry is EXPIRED with no
        parts (as the reaper will record it, up to an interval later, and as every write already
        treats it: ``ensure_pending``). A copy when it differs; ``self`` is never changed."""
        if self.past_expiry(now):
            assert self.expires_at is not None
            seen = dataclasses.replace(self, parts={})
            seen.mark_expired(self.expires_at)
            return seen
        return self

    def mark_expired(self, now: datetime) -> None:
        if self.status is not Status.PENDING:
            raise InvalidState(f"upload {self.id} is {self.status.value}")
        self.status = Status.EXPIRED
        self.expires_at = None
        self.updated_at = now
