"""Byte ranges and Content-Disposition shared by every frontend."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest

from chunkd.domain.errors import InvalidInput
from chunkd.frontends.http import (
    ByteRange,
    byte_count,
    content_disposition,
    declares_body,
    isotime,
    parse_length,
    parse_range,
    validation_error,
)


@pytest.mark.parametrize(
    ("header", "size", "expected"),
    [
        ("bytes=0-499", 1000, ByteRange(0, 500)),
        ("bytes=500-999", 1000, ByteRange(500, 1000)),
        ("bytes=500-", 1000, ByteRange(500, 1000)),
        ("bytes=999-", 1000, ByteRange(999, 1000)),
        ("bytes=-200", 1000, ByteRange(800, 1000)),
        ("bytes=-5000", 1000, ByteRange(0, 1000)),  # suffix longer than the file: all of it
        ("bytes=0-99999", 1000, ByteRange(0, 1000)),  # last past the end: clamped
        ("bytes=7-7", 1000, ByteRange(7, 8)),
        (" bytes=1-2 ", 1000, ByteRange(1, 3)),
        ("bytes=-" + "9" * 5000, 1000, ByteRange(0, 1000)),  # past int()'s 4,300 digits: still all of it
        ("bytes=1-" + "9" * 5000, 1000, ByteRange(1, 1000)),
        ("bytes=" + "0" * 5000 + "7-" + "0" * 5000 + "8", 1000, ByteRange(7, 9)),
    ],
)
def test_satisfiable_ranges(header: str, size: int, expected: ByteRange) -> None:
    assert parse_range(header, size) == expected


@pytest.mark.parametrize(
    ("header", "size"),
    [
        ("bytes=1000-", 1000),
        ("bytes=1000-2000", 1000),
        ("bytes=-0", 1000),
        ("bytes=0-", 0),
        ("bytes=" + "9" * 5000 + "-", 1000),
        ("bytes=-" + "0" * 5000, 1000),
    ],
)
def test_unsatisfiable_ranges(header: str, size: int) -> None:
    assert parse_range(header, size) is False


def test_a_suffix_range_of_an_empty_file_is_the_whole_empty_file() -> None:
    # RFC 9110 §14.1.1: of an empty representation a suffix range is the one satisfiable form.
    assert parse_range("bytes=-10", 0) is None


@pytest.mark.parametrize(
    "header",
    [None, "", "bytes=", "bytes=-", "bytes=5-3", "bytes=0-1,5-6", "items=0-1", "bytes=a-b", "bytes 0-1", "0-1"],
)
def test_absent_multiple_or_malformed_ranges_mean_the_whole_file(header: str | None) -> None:
    assert parse_range(header, 1000) is None


def test_byte_range_length() -> None:
    assert ByteRange(10, 25).length == 15


def test_content_disposition_ascii() -> None:
    assert content_disposition("report.pdf") == "attachment; filename=\"report.pdf\"; filename*=UTF-8''report.pdf"
    assert content_disposition("a b.txt", "inline").startswith('inline; filename="a b.txt";')


def test_content_disposition_unicode_keeps_the_exact_name_in_filename_star() -> None:
    header = content_disposition("Résumé été.pdf")
    assert 'filename="Resume ete.pdf"' in header
    assert header.endswith("filename*=UTF-8''R%C3%A9sum%C3%A9%20%C3%A9t%C3%A9.pdf")
    assert 'filename="download"' in content_disposition("日本")


@pytest.mark.parametrize("name", ['a"b.txt', "a;b=c.txt", "a\\b.txt", "x\r\nSet-Cookie: a=b", "it's%20.txt"])
def test_content_disposition_cannot_be_broken_out_of(name: str) -> None:
    header = content_disposition(name)
    assert header.isascii()
    assert "\r" not in header and "\n" not in header
    fallback = header.split('filename="', 1)[1].split('"', 1)[0]
    assert not set(fallback) & set("\"\\;=%'\r\n")
    star = header.split("filename*=UTF-8''", 1)[1]
    assert not set(star) & set("\"\\; '\r\n")
    assert header.count(";") == 2


def test_isotime() -> None:
    assert isotime(None) is None
    assert isotime(datetime(2026, 1, 2, 3, 4, 5, 678900, tzinfo=UTC)) == "2026-01-02T03:04:05.678Z"
    east = timezone(timedelta(hours=2))
    assert isotime(datetime(2026, 1, 2, 5, 0, tzinfo=east)) == "2026-01-02T03:00:00.000Z"


@pytest.mark.parametrize(
    ("errors", "field"),
    [
        ([{"loc": ("body", "parts", 3, "etag"), "msg": "Field required"}], "parts.3.etag"),
        ([{"loc": ("path", "media_id"), "msg": "too big"}], "media_id"),
        ([{"loc": ("body",), "msg": "Field required"}], "body"),
        ([], "body"),
    ],
)
def test_validation_error_names_the_field(errors: list[dict[str, Any]], field: str) -> None:
    named, message = validation_error(errors)
    assert named == field and message.startswith(f"{field}: ")


@pytest.mark.parametrize(("value", "count"), [("0", 0), (" 17 ", 17), ("9" * 19, int("9" * 19)), (None, None)])
def test_byte_counts(value: str | None, count: int | None) -> None:
    assert byte_count(value) == count
    assert parse_length(value, "Upload-Offset") == count


@pytest.mark.parametrize("value", ["", "-1", "1.0", "0x10", "²", "١٢", "1 2", "9" * 20])
def test_what_is_not_a_byte_count_is_refused_naming_the_header(value: str) -> None:
    assert byte_count(value) is None
    with pytest.raises(InvalidInput) as refused:
        parse_length(value, "Content-Length")
    assert refused.value.field == "Content-Length"


def test_a_declared_body() -> None:
    assert declares_body({"content-length": "5"}) and declares_body({"transfer-encoding": "chunked"})
    assert not declares_body({"content-length": " 0 "}) and not declares_body({})
