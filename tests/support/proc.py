"""What Linux's /proc says about processes and their TCP sockets, for tests that must know which
process holds a socket or how many bytes wait in it. Every function returns nothing found (not an
error) where /proc cannot tell."""

from __future__ import annotations

import contextlib
import os
import socket
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

__all__ = ["TcpSocket", "children", "holds", "process_tree", "tcp_socket", "tcp_sockets", "wait_until_read"]


def children(pid: int) -> list[int]:
    """The processes ``pid`` started that are alive now."""
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*/children"):
        with contextlib.suppress(OSError):
            found.extend(int(child) for child in task.read_text().split())
    return found


def process_tree(pid: int) -> set[int]:
    """``pid`` and its descendants."""
    found, todo = set(), [pid]
    while todo:
        current = todo.pop()
        found.add(current)
        todo.extend(children(current))
    return found


@dataclass(frozen=True)
class TcpSocket:
    local_port: int
    remote_port: int
    listening: bool
    send_queue: int  # bytes sent, not yet acknowledged by the peer
    receive_queue: int  # bytes received, not yet read by the process
    inode: str  # as a descriptor's link reads: socket:[N]


def tcp_sockets() -> Iterator[TcpSocket]:
    """Every TCP socket of this network namespace (IPv4 and IPv6)."""
    for table in (Path("/proc/net/tcp"), Path("/proc/net/tcp6")):
        try:
            lines = table.read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            # local and remote address are HEX_IP:HEX_PORT; state 0A is LISTEN; then tx:rx queues.
            fields = line.split()
            send, receive = fields[4].split(":")
            yield TcpSocket(
                local_port=int(fields[1].rsplit(":", 1)[1], 16),
                remote_port=int(fields[2].rsplit(":", 1)[1], 16),
                listening=fields[3] == "0A",
                send_queue=int(send, 16),
                receive_queue=int(receive, 16),
                inode=f"socket:[{fields[9]}]",
            )


def tcp_socket(local_port: int, remote_port: int) -> TcpSocket | None:
    """The connected socket ``local_port`` → ``remote_port`` (on this machine's loopback, one end)."""
    return next((s for s in tcp_sockets() if s.local_port == local_port and s.remote_port == remote_port), None)


def holds(pid: int, inodes: Iterable[str]) -> bool:
    """Whether process ``pid`` has a descriptor on one of the sockets ``inodes``."""
    wanted = set(inodes)
    with contextlib.suppress(OSError):
        for fd in Path(f"/proc/{pid}/fd").iterdir():
            with contextlib.suppress(OSError):
                if os.readlink(fd) in wanted:
                    return True
    return False


def wait_until_read(upstream: socket.socket, server_port: int, timeout: float = 120.0) -> None:
    """Until the server's process has read every byte sent on ``upstream`` (nothing queued in this
    end's socket nor in the server's): what was sent has reached the server itself, however long a
    loaded machine took to run it. ``timeout`` bounds only a server that stopped reading."""
    port = upstream.getsockname()[1]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ours, theirs = tcp_socket(port, server_port), tcp_socket(server_port, port)
        if ours is None or theirs is None or (ours.send_queue == 0 and theirs.receive_queue == 0):
            return
        time.sleep(0.01)
