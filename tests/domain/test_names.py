"""Client-supplied file names and ids."""

from __future__ import annotations

import pytest

from chunkd.domain import errors as e
from chunkd.domain.names import MAX_FILENAME_BYTES, clean_filename, is_upload_id, new_upload_id


def test_plain_names_pass_unchanged() -> None:
    for name in ("report.pdf", "Résumé 2026 (final).docx", "日本語.txt", ".bashrc", "a..b"):
        assert clean_filename(name) == name


def test_normalised_to_nfc() -> None:
    assert clean_filename("e\u0301.txt") == "\u00e9.txt"


def test_control_and_format_characters_are_removed() -> None:
    assert clean_filename("a\x00b\x1fc\x7f\n\r\t.txt") == "abc.txt"
    # U+202E RIGHT-TO-LEFT OVERRIDE would make "evil\u202etxt.exe" display as "evilexe.txt".
    assert clean_filename("evil\u202etxt.exe") == "eviltxt.exe"
    assert clean_filename("zero\u200bwidth") == "zerowidth"


def test_path_separators_never_survive() -> None:
    assert clean_filename("dir/sub\\file.txt") == "dir_sub_file.txt"
    assert clean_filename("../../etc/passwd") == ".._.._etc_passwd"
    assert clean_filename("/abs") == "_abs"
    assert "/" not in clean_filename("..\\..//x") and "\\" not in clean_filename("..\\..//x")


@pytest.mark.parametrize("name", ["", "   ", ".", "..", " .. ", ".\x00.", "\x01\x02", "\u200b"])
def test_empty_or_dot_names_are_refused(name: str) -> None:
    with pytest.raises(e.InvalidInput) as caught:
        clean_filename(name, field="name")
    assert caught.value.field == "name"


def _check_cut(name: str) -> str:
    cleaned = clean_filename(name)
    encoded = cleaned.encode()  # must still be valid UTF-8 (no half character at the cut)
    assert len(encoded) <= MAX_FILENAME_BYTES
    assert encoded.decode() == cleaned
    return cleaned


@pytest.mark.parametrize("char", ["a", "é", "日", "😀"])
def test_long_names_are_cut_on_a_character_boundary_keeping_the_extension(char: str) -> None:
    cleaned = _check_cut(char * 400 + ".tar.gz")
    assert cleaned.endswith(".gz")
    assert set(cleaned[: -len(".gz")]) == {char}
    # As many whole characters as fit.
    assert len(cleaned.encode()) > MAX_FILENAME_BYTES - len(char.encode())


def test_long_name_without_extension_or_with_a_huge_one() -> None:
    assert len(_check_cut("日" * 200)) == MAX_FILENAME_BYTES // 3
    cleaned = _check_cut("a." + "x" * 300)  # not an extension worth keeping: plain cut
    assert cleaned.startswith("a.x")


def test_exactly_at_the_limit_is_kept() -> None:
    name = "a" * (MAX_FILENAME_BYTES - 4) + ".txt"
    assert clean_filename(name) == name


def test_upload_ids() -> None:
    ids = {new_upload_id() for _ in range(1000)}
    assert len(ids) == 1000
    assert all(is_upload_id(i) and len(i) == 22 for i in ids)
    # Never an option on a command line: with 1,000 ids, about 15 would begin with '-' otherwise.
    assert not any(i.startswith("-") for i in ids)
    for bad in ("", "short", "a" * 21, "a" * 23, "../" + "a" * 19, "a" * 21 + "/", "a" * 21 + "=", "a" * 22 + "\n"):
        assert not is_upload_id(bad)
