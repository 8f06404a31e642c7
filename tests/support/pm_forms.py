"""Fine Uploader request bodies written by hand, for tests that stream a large chunk in pieces."""

from __future__ import annotations

__all__ = ["form_tail", "whole_file_chunk_head"]


def whole_file_chunk_head(boundary: str, file_uuid: str, size: int, filename: str = "big.bin") -> bytes:
    """The multipart form up to the first byte of ``qqfile``: one chunk that is the whole file."""
    fields = {
        "qquuid": file_uuid,
        "qqpartindex": "0",
        "qqpartbyteoffset": "0",
        "qqchunksize": str(size),
        "qqtotalparts": "1",
        "qqtotalfilesize": str(size),
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


def form_tail(boundary: str) -> bytes:
    """What follows the file's bytes."""
    return f"\r\n--{boundary}--\r\n".encode()
