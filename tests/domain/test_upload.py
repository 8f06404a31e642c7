"""The Upload aggregate on its own: states and transitions, part geometry, missing parts, expiry."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from chunkd.domain import errors as e
from chunkd.domain.upload import PART_SIZE_FROM_PART_1, Mode, Part, Status, Upload
from tests.support.uploads import make_upload as factory

NOW = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
TERMINAL = [Status.COMPLETED, Status.CANCELLED, Status.EXPIRED]


def make_upload(
    size: int | None = 2500,
    part_size: int = 1000,
    *,
    mode: Mode = Mode.PARTS,
    status: Status = Status.PENDING,
    ttl: timedelta | None = timedelta(hours=1),
) -> Upload:
    return factory(size, part_size, mode=mode, status=status, upload_id="u" * 22, created=NOW, ttl=ttl)


def add_part(upload: Upload, number: int) -> Part:
    size = upload.expected_part_size(number)
    part = Part(number, upload.offset_of(number), size, "0" * 32, f"{number}.ref", NOW)
    upload.parts[number] = part
    upload.parts_received += 1
    upload.bytes_received += size
    return part


# ---- geometry --------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("size", "part_size", "count", "last"),
    [(2500, 1000, 3, 500), (3000, 1000, 3, 1000), (1, 1000, 1, 1), (1000, 1000, 1, 1000), (1001, 1000, 2, 1)],
)
def test_part_geometry(size: int, part_size: int, count: int, last: int) -> None:
    upload = make_upload(size, part_size)
    assert upload.part_count == count
    assert [upload.offset_of(n) for n in range(1, count + 1)] == [i * part_size for i in range(count)]
    assert upload.expected_part_size(count) == last
    assert all(upload.expected_part_size(n) == part_size for n in range(1, count))
    assert sum(upload.expected_part_size(n) for n in range(1, count + 1)) == size


def test_empty_file_has_no_parts_but_accepts_an_empty_part_one() -> None:
    upload = make_upload(0)
    assert upload.part_count == 0
    assert upload.missing_parts() == []
    upload.check_part_number(1)
    upload.check_part_size(1, 0)
    with pytest.raises(e.PartOutOfRange):
        upload.check_part_number(2)
    upload.check_complete(NOW)


def test_part_count_is_unknown_in_append_mode_or_without_size() -> None:
    assert make_upload(None, mode=Mode.APPEND).part_count is None
    assert make_upload(5000, mode=Mode.APPEND).part_count is None


@pytest.mark.parametrize("number", [0, -1, 4, 10_001])
def test_part_number_out_of_range(number: int) -> None:
    with pytest.raises(e.PartOutOfRange) as caught:
        make_upload().check_part_number(number)
    assert caught.value.field == "partNumber"
    assert caught.value.details["partCount"] == 3


def test_part_number_in_append_mode_is_a_state_error() -> None:
    with pytest.raises(e.InvalidState):
        make_upload(mode=Mode.APPEND).check_part_number(1)


def test_part_sizes() -> None:
    upload = make_upload()
    upload.check_part_size(1, 1000)
    upload.check_part_size(3, 500)
    with pytest.raises(e.PartSizeMismatch) as caught:
        upload.check_part_size(1, 999)
    assert caught.value.field == "body" and caught.value.details["expectedSize"] == 1000
    with pytest.raises(e.PartSizeMismatch, match="last part"):
        upload.check_part_size(3, 1000)


def test_part_size_measured_by_part_one() -> None:
    """A provisional part size (the largest allowed) becomes part 1's size, once, and only while
    part 1 is the only part and the size is unknown."""
    upload = make_upload(None, 10_000)
    assert upload.settle_part_size() is False  # nothing provisional: nothing to settle
    upload.metadata[PART_SIZE_FROM_PART_1] = True
    with pytest.raises(e.InvalidState):
        upload.settle_part_size()  # part 1 has not arrived
    upload.parts[1] = Part(1, 0, 700, "0" * 32, "1.ref", NOW)
    upload.parts_received, upload.bytes_received = 1, 700
    assert upload.settle_part_size() is True
    assert upload.part_size == 700 and PART_SIZE_FROM_PART_1 not in upload.metadata
    assert upload.offset_of(3) == 1400 and upload.settle_part_size() is False
    upload.declare_size(1500)
    assert upload.part_count == 3 and upload.expected_part_size(3) == 100
    second = make_upload(None, 10_000)
    second.metadata[PART_SIZE_FROM_PART_1] = True
    second.parts[1] = Part(1, 0, 700, "0" * 32, "1.ref", NOW)
    second.parts[2] = Part(2, 10_000, 700, "0" * 32, "2.ref", NOW)
    with pytest.raises(e.InvalidState):
        second.settle_part_size()  # a part placed by the provisional size: too late to measure


def test_missing_parts_in_any_order() -> None:
    upload = make_upload(10_000, 1000)
    for n in (7, 1, 10, 3):
        add_part(upload, n)
    assert upload.missing_parts() == [2, 4, 5, 6, 8, 9]
    assert [p.number for p in upload.sorted_parts()] == [1, 3, 7, 10]
    with pytest.raises(e.MissingParts) as caught:
        upload.check_complete(NOW)
    assert caught.value.details["missingParts"] == [2, 4, 5, 6, 8, 9]
    assert "2, 4, 5, 6, 8, 9" in caught.value.message


def test_missing_parts_message_is_bounded() -> None:
    upload = make_upload(5000 * 10, 10)
    with pytest.raises(e.MissingParts) as caught:
        upload.check_complete(NOW)
    assert caught.value.message.endswith("…")
    assert len(caught.value.details["missingParts"]) == 1000


def test_check_complete_needs_the_declared_size() -> None:
    upload = make_upload(None, mode=Mode.APPEND)
    with pytest.raises(e.SizeMismatch):
        upload.check_complete(NOW)
    upload = make_upload(100, mode=Mode.APPEND)
    upload.bytes_received = 60
    with pytest.raises(e.SizeMismatch) as caught:
        upload.check_complete(NOW)
    assert caught.value.details["bytesReceived"] == 60
    upload.bytes_received = 100
    upload.check_complete(NOW)


def test_append_offsets() -> None:
    upload = make_upload(100, mode=Mode.APPEND)
    upload.check_append(0)
    assert upload.room_left() == 100
    upload.bytes_received = 40
    assert upload.end_offset == 40 and upload.room_left() == 60
    with pytest.raises(e.OffsetMismatch) as caught:
        upload.check_append(0)
    assert caught.value.details["expectedOffset"] == 40
    with pytest.raises(e.InvalidState):
        make_upload().check_append(0)
    assert make_upload(None, mode=Mode.APPEND).room_left() is None


# ---- states --------------------------------------------------------------------------------
def test_pending_to_completed() -> None:
    upload = make_upload()
    for n in (3, 1, 2):
        add_part(upload, n)
    upload.check_complete(NOW)
    later = NOW + timedelta(minutes=1)
    upload.mark_completed(later, "a" * 32)
    assert upload.status is Status.COMPLETED
    assert upload.completed_at == later and upload.updated_at == later
    assert upload.expires_at is None and upload.md5 == "a" * 32


def test_pending_to_cancelled() -> None:
    upload = make_upload()
    upload.mark_cancelled(NOW)
    assert upload.status is Status.CANCELLED and upload.expires_at is None


def test_pending_to_expired() -> None:
    upload = make_upload()
    upload.mark_expired(NOW + timedelta(hours=2))
    assert upload.status is Status.EXPIRED and upload.expires_at is None


@pytest.mark.parametrize("status", TERMINAL)
def test_terminal_states_never_change(status: Status) -> None:
    upload = make_upload(status=status, ttl=None)
    with pytest.raises(e.Expired if status is Status.EXPIRED else e.InvalidState):
        upload.ensure_pending(NOW)
    with pytest.raises((e.InvalidState, e.Expired)):
        upload.mark_cancelled(NOW)
    with pytest.raises(e.InvalidState):
        upload.mark_expired(NOW)
    with pytest.raises(e.InvalidState):
        upload.mark_completed(NOW, "b" * 32)
    with pytest.raises((e.InvalidState, e.Expired)):
        upload.check_complete(NOW)
    assert upload.status is status


@pytest.mark.parametrize("status", [Status.COMPLETED, Status.CANCELLED])
def test_state_error_names_the_status(status: Status) -> None:
    with pytest.raises(e.InvalidState) as caught:
        make_upload(status=status).ensure_pending(NOW)
    assert caught.value.details["uploadStatus"] == status.value


def test_ensure_pending_expires_at_the_deadline() -> None:
    upload = make_upload(ttl=timedelta(minutes=5))
    upload.ensure_pending(NOW)
    upload.ensure_pending(NOW + timedelta(minutes=5) - timedelta(microseconds=1))
    with pytest.raises(e.Expired) as caught:
        upload.ensure_pending(NOW + timedelta(minutes=5))
    assert caught.value.details["uploadStatus"] == "EXPIRED"
    # The status itself only changes when the reaper expires it.
    assert upload.status is Status.PENDING
    with pytest.raises(e.Expired):
        upload.check_complete(NOW + timedelta(hours=1))
    with pytest.raises(e.Expired):
        upload.mark_cancelled(NOW + timedelta(hours=1))


def test_pending_without_deadline_never_expires_on_its_own() -> None:
    make_upload(ttl=None).ensure_pending(NOW + timedelta(days=10_000))


def test_expired_is_a_distinct_error_from_a_state_conflict() -> None:
    # Frontends map them differently (tus answers 410 for expired, 409/404 for others).
    assert not issubclass(e.Expired, e.Conflict)
    assert issubclass(e.InvalidState, e.Conflict) and issubclass(e.MissingParts, e.Conflict)


def test_part_end() -> None:
    assert Part(2, 1000, 500, "0" * 32, "r", NOW).end == 1500
