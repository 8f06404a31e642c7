"""Fine Uploader request bodies written by hand, for tests that stream a large chunk in pieces."""

from __future__ import annotations

__all__ = ["chunk_head", "form_tail", "whole_file_chunk_head"]


def chunk_head(
    boundary: str,
    file_uuid: str,
    *,
    index: int,
    chunk_size: int,
    this_size: int,
    total_parts: int,
    total_size: int,
    filename: str = "big.bin",
) -> bytes:
    """The multipart form up to the first byte of ``qqfile`` for chunk ``index`` (of
    ``chunk_size``-byte chunks; this one has ``this_size`` bytes)."""
    fields = {
        "qquuid": file_uuid,
        "qqpartindex": str(index),
        "qqpartbyteoffset": str(index * chunk_size),
        "qqchunksize": str(this_size),
        "qqtotalparts": str(total_parts),
        "qqtotalfilesize": str(total_size),
        "qqfilename": filename,
    }
    head = "".join(
        f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n' for k, v in fields.items()
    )
    head += (
        f'--{boundary}\r\nContent-Disposition: form-data; name="qqfile"; filename="blob"\r\n'
        "Content-Type: application/octet-stream\r\n\r\n"
    )
    return head.encode()


def whole_file_chunk_head(boundary: str, file_uuid: str, size: int, filename: str = "big.bin") -> bytes:
    """The multipart form up to the first byte of ``qqfile``: one chunk that is the whole file."""
    return chunk_head(
        boundary,
        file_uuid,
        index=0,
        chunk_size=size,
        this_size=size,
        total_parts=1,
        total_size=size,
        filename=filename,
    )


def form_tail(boundary: str) -> bytes:
    """What follows the file's bytes."""
    return f"\r\n--{boundary}--\r\n".encode()
