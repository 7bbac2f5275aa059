"""The project's own HTTP-01 responder: a small loopback HTTP server for ACME challenges.

An ACME server validates an HTTP-01 challenge by fetching
``http://<name>/.well-known/acme-challenge/<token>`` and expecting the key authorisation
(RFC 8555 §8.3). :class:`Http01Responder` serves exactly the tokens registered with it,
from memory, and answers 404 to everything else. It is started only while an order's
challenges are being validated. In production it listens where the service's name
resolves on port 80 (or behind a proxy that forwards ``/.well-known/acme-challenge/``);
tests point Pebble's ``httpPort`` at it on 127.0.0.1.
"""

from __future__ import annotations

import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from tensorguard.identity.errors import IdentityConfigError

CHALLENGE_PREFIX = "/.well-known/acme-challenge/"
_TOKEN = re.compile(r"[A-Za-z0-9_-]{1,256}")


class _ChallengeServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(
        self, address: tuple[str, int], tokens: dict[str, bytes], lock: threading.Lock
    ) -> None:
        super().__init__(address, _ChallengeHandler)
        self.tokens = tokens
        self.lock = lock


class _ChallengeHandler(BaseHTTPRequestHandler):
    server: _ChallengeServer

    def do_GET(self) -> None:
        token = self.path[len(CHALLENGE_PREFIX) :] if self.path.startswith(CHALLENGE_PREFIX) else ""
        with self.server.lock:
            body = self.server.tokens.get(token)
        if body is None:
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        """Quiet: request lines would only repeat tokens the ACME server already knows."""


class Http01Responder:
    """Serves registered HTTP-01 key authorisations on ``host:port`` while open.

    Use as a context manager; :meth:`add` and :meth:`remove` may be called while it runs.
    """

    def __init__(self, host: str = "127.0.0.1", port: int = 80) -> None:
        self.host = host
        self.port = port
        self._tokens: dict[str, bytes] = {}
        self._lock = threading.Lock()
        self._server: _ChallengeServer | None = None
        self._thread: threading.Thread | None = None

    def add(self, token: str, key_authorization: str) -> None:
        """Serve ``key_authorization`` at the challenge path for ``token``."""
        if not _TOKEN.fullmatch(token):
            raise IdentityConfigError(
                f"ACME challenge token {token[:40]!r} is not base64url; refusing to serve it"
            )
        with self._lock:
            self._tokens[token] = key_authorization.encode("ascii")

    def remove(self, token: str) -> None:
        """Stop serving ``token``."""
        with self._lock:
            self._tokens.pop(token, None)

    def __enter__(self) -> Http01Responder:
        try:
            self._server = _ChallengeServer((self.host, self.port), self._tokens, self._lock)
        except OSError as exc:
            raise IdentityConfigError(
                f"the HTTP-01 responder cannot listen on {self.host}:{self.port} ({exc.strerror}); "
                "free the port, run with the right to bind it, or set http01_port to the port "
                "the ACME server's validation requests reach"
            ) from exc
        self.port = int(self._server.server_address[1])
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="acme-http01", daemon=True
        )
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._server = self._thread = None
        self._tokens.clear()
