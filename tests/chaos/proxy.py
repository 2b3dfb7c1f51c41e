"""A TCP proxy that can take a service away: what the hub sees of a database outage.

``Proxy(target_port)`` listens on a free local port and pipes each connection to the target.
``outage(seconds)`` cuts every open connection (a reset, as when a server dies) and refuses new
ones for that long: the hub's processes find their database gone, mid-transaction or between
two, exactly as in a real outage; then the service comes back on the same address.
"""

from __future__ import annotations

import contextlib
import socket
import struct
import threading
import time


class Proxy:
    def __init__(self, target_port: int, target_host: str = "127.0.0.1") -> None:
        self.target = (target_host, target_port)
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = int(self.listener.getsockname()[1])
        self._open: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._down_until = 0.0
        self._closed = threading.Event()
        self.outages = 0
        self.cut = 0
        """Connections cut by outages, in all."""
        self.refused = 0
        """Connections refused while down."""
        threading.Thread(target=self._accept, name="proxy-accept", daemon=True).start()

    def outage(self, seconds: float) -> None:
        """Cut every connection now and refuse new ones for ``seconds``."""
        with self._lock:
            self._down_until = time.monotonic() + seconds
            self.outages += 1
            victims = list(self._open)
            self._open.clear()
        for sock in victims:
            self.cut += 1
            _reset(sock)

    def close(self) -> None:
        self._closed.set()
        self.listener.close()
        with self._lock:
            victims = list(self._open)
            self._open.clear()
        for sock in victims:
            _reset(sock)

    def _down(self) -> bool:
        return time.monotonic() < self._down_until

    def _accept(self) -> None:
        while not self._closed.is_set():
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            if self._down():
                self.refused += 1
                _reset(client)
                continue
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                _reset(client)
                continue
            upstream.settimeout(None)
            with self._lock:
                self._open.update((client, upstream))
            for source, sink in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(source, sink), daemon=True).start()

    def _pipe(self, source: socket.socket, sink: socket.socket) -> None:
        try:
            while chunk := source.recv(65536):
                sink.sendall(chunk)
        except OSError:
            pass
        finally:
            with self._lock:
                self._open.discard(source)
                self._open.discard(sink)
            for sock in (source, sink):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                sock.close()


def _reset(sock: socket.socket) -> None:
    """Close with a TCP reset (SO_LINGER 0), as a dead server's kernel would answer."""
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RD)  # wakes the thread reading it
    with contextlib.suppress(OSError):
        sock.close()
