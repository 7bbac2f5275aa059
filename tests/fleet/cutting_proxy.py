"""A loopback TCP proxy in front of the real fleet service that can break a download.

It forwards each connection to the upstream server and records the request head it
saw; for the first ``cut`` connections (whose request line contains ``cut_path``, when
given) it forwards only ``cut_after`` bytes of the response (status line and headers
included) and then closes both sides, as a network failure mid-body would. Used to test
resumed downloads against the real ``tensorguard serve``; it changes no byte it forwards.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field


@dataclass
class CuttingProxy:
    """What the proxy saw, and how it is reached."""

    port: int
    upstream_port: int
    cut_after: int
    cut: int = 1
    cut_path: str = ""  # cut only requests whose request line contains this
    request_heads: list[str] = field(default_factory=list)
    cuts_done: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def url(self) -> str:
        """The proxy's base URL."""
        return f"http://127.0.0.1:{self.port}"

    def relay(self, client: socket.socket) -> None:
        """Forward one connection: one request (its head, then a Content-Length body) and
        the response until the server closes (the clients send ``Connection: close``)."""
        with client, socket.create_connection(("127.0.0.1", self.upstream_port)) as upstream:
            head = b""
            while b"\r\n\r\n" not in head:
                data = client.recv(65536)
                if not data:
                    return
                head += data
            with self._lock:
                text = head.decode("latin-1")
                self.request_heads.append(text)
                cutting = self.cut_path in text.split("\r\n", 1)[0] and self.cuts_done < self.cut
                self.cuts_done += int(cutting)
            upstream.sendall(head)
            body_sent = len(head) - head.index(b"\r\n\r\n") - 4
            for line in text.split("\r\n"):
                if line.lower().startswith("content-length:"):
                    remaining = int(line.split(":", 1)[1]) - body_sent
                    while remaining > 0 and (data := client.recv(min(65536, remaining))):
                        upstream.sendall(data)
                        remaining -= len(data)
            sent = 0
            while data := upstream.recv(4096):
                if cutting and sent + len(data) >= self.cut_after:
                    client.sendall(data[: self.cut_after - sent])
                    return
                client.sendall(data)
                sent += len(data)


@contextmanager
def cutting_proxy(
    upstream_port: int, cut_after: int, cut: int = 1, cut_path: str = ""
) -> Iterator[CuttingProxy]:
    """Run a :class:`CuttingProxy` on 127.0.0.1 and a free port until the block ends."""
    listener = socket.create_server(("127.0.0.1", 0))
    proxy = CuttingProxy(listener.getsockname()[1], upstream_port, cut_after, cut, cut_path)
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                client, _ = listener.accept()
            except OSError:
                return
            threading.Thread(target=proxy.relay, args=(client,), daemon=True).start()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield proxy
    finally:
        stop.set()
        listener.close()
        thread.join(timeout=5)
