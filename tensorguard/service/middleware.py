"""ASGI middleware in front of every route: per-client rate limit and body-size limit.

Refusals are JSON ``{"detail": ...}``: 429 with ``Retry-After`` when the client's token
bucket is empty, 413 when ``Content-Length`` exceeds the limit, 411 when a request with
a body does not declare its length. Health probes are exempt from the rate limit.
"""

from __future__ import annotations

import json

from starlette.types import ASGIApp, Receive, Scope, Send

from tensorguard.service.rate_limit import TokenBucketLimiter, retry_after_header

EXEMPT_PATHS = frozenset({"/healthz", "/readyz"})
BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})


async def _refuse(
    send: Send, status: int, detail: str, headers: tuple[tuple[bytes, bytes], ...] = ()
) -> None:
    body = json.dumps({"detail": detail}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                *headers,
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


class GuardMiddleware:
    """Rate limit per client address, then the request-size limit."""

    def __init__(self, app: ASGIApp, limiter: TokenBucketLimiter, max_body_bytes: int) -> None:
        self.app = app
        self.limiter = limiter
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Refuse or pass the request on."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if scope["path"] not in EXEMPT_PATHS:
            client = scope.get("client")
            wait = self.limiter.acquire(client[0] if client else "unknown")
            if wait > 0:
                await _refuse(
                    send,
                    429,
                    "rate limit exceeded for this client; retry later",
                    ((b"retry-after", retry_after_header(wait).encode()),),
                )
                return
        headers = dict(scope["headers"])
        length = headers.get(b"content-length")
        if scope["method"] in BODY_METHODS:
            if length is None:
                await _refuse(send, 411, "Content-Length is required")
                return
            if not length.isdigit() or int(length) > self.max_body_bytes:
                await _refuse(send, 413, f"request body larger than {self.max_body_bytes} bytes")
                return
        await self.app(scope, receive, send)
