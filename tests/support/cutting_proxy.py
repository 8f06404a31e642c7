"""A tiny TCP proxy on 127.0.0.1 that cuts one connection after a given number of client bytes:
a network fault injected between a real client and a real server (as tusd's e2e tests do)."""

from __future__ import annotations

import contextlib
import socket
import struct
import threading

from tests.support.proc import wait_until_read

__all__ = ["CuttingProxy"]


class CuttingProxy:
    """Forwards 127.0.0.1:<port> to ``target``. The first connection whose client has sent more
    than ``cut_after`` bytes is closed abruptly (both ways); every other byte flows normally."""

    def __init__(self, target_port: int, cut_after: int) -> None:
        self.target_port = target_port
        self.cut_after = cut_after
        self.cuts = 0
        # Bytes forwarded from clients to the server, over every connection.
        self.forwarded = 0
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._lock = threading.Lock()
        self._closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.target_port))
            threading.Thread(target=self._pump, args=(client, upstream, True), daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, client, False), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket, from_client: bool) -> None:
        sent = 0
        try:
            while True:
                data = source.recv(65536)
                if not data:
                    break
                if from_client:
                    sent += len(data)
                    with self._lock:
                        cut = self.cuts == 0 and sent > self.cut_after
                        if cut:
                            self.cuts += 1
                    if cut:
                        # What was forwarded reaches the server's process before the cut: an RST
                        # discards what the kernel still holds for it, so on a loaded machine the
                        # cut would land wherever the server happened to be, not after cut_after.
                        wait_until_read(sink, self.target_port)
                        # RST rather than FIN: the server sees the connection die mid-body.
                        for sock in (source, sink):
                            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                            sock.close()
                        return
                sink.sendall(data)
                if from_client:
                    with self._lock:
                        self.forwarded += len(data)
        except OSError:
            pass
        finally:
            for sock in (source, sink):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        self._closed = True
        self._listener.close()
