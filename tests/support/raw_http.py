"""HTTP/1.1 over a bare socket, for tests that must send what no client library would (stalled or
oversized heads and bodies) and read exactly what the server answers."""

from __future__ import annotations

import socket

__all__ = ["ResponseReader", "read_response"]


def read_response(sock: socket.socket) -> tuple[int, dict[str, str], bytes]:
    """One response (status, lower-cased headers, body by Content-Length) from a raw socket."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError(f"closed before a response head: {data!r}")
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    length = int(headers.get("content-length", "0"))
    while len(body) < length:
        chunk = sock.recv(65536)
        if not chunk:
            break
        body += chunk
    return int(lines[0].split()[1]), headers, body


class ResponseReader:
    """Responses read off a raw socket one head at a time: every informational (1xx) response,
    then the final one and, with ``read_body``, its body."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buffer = b""

    def next_head(self) -> tuple[int, dict[str, str]]:
        """The next response head: (status, lower-cased headers)."""
        while b"\r\n\r\n" not in self.buffer:
            data = self.sock.recv(65536)
            if not data:
                raise AssertionError(f"connection closed; got {self.buffer!r}")
            self.buffer += data
        head, self.buffer = self.buffer.split(b"\r\n\r\n", 1)
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ", 2)[1])
        headers: dict[str, str] = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        return status, headers

    def read_body(self, length: int) -> bytes:
        """The next ``length`` bytes (the body of the response just read)."""
        while len(self.buffer) < length:
            data = self.sock.recv(65536)
            if not data:
                raise AssertionError(f"connection closed; got {self.buffer!r}")
            self.buffer += data
        body, self.buffer = self.buffer[:length], self.buffer[length:]
        return body
