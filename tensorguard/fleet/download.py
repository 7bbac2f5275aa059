"""Resumable package downloads from the fleet service, signed by the node.

:func:`download_package` fetches ``GET /v1/packages/<channel>/<version>`` from the node's
own fleet service (``service_url`` in ``agent.yaml``; an announcement naming another
origin is refused, so the node never signs requests for a server it was not configured
for). Each attempt is signed anew with the node's enrolled Ed25519 key, and over https
presents the node's certificate when the client has one (mutual TLS). Bytes go to a
partial file; when a transfer breaks off, the next attempt (in this call or after a
restart) asks for the rest with ``Range: bytes=<have>-`` and ``If-Range: "<digest>"``:
the service answers 206 with the missing bytes while its package is still the
announced one, and 200 with the whole package otherwise (the partial file is then
started over). The SHA-256 is computed over the bytes as they are written (the kept
prefix is re-hashed from disk once per attempt) and never more than the announced size
is accepted. A complete file with the announced digest is renamed into place; a wrong
digest deletes the partial file. The package signature, checked later, still decides
what is installed. Standard library and ``cryptography`` only.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from tensorguard.durable import fsync_file, publish_file
from tensorguard.fleet.byte_ranges import entity_tag, parse_content_range
from tensorguard.fleet.messages import InstallReason
from tensorguard.fleet.rejections import InstallRefused, failed, rejected
from tensorguard.service.client import RETRYABLE, NodeClient
from tensorguard.service.request_signing import sign_request

LOGGER = logging.getLogger(__name__)
CHUNK_BYTES = 256 * 1024
MAX_RETRY_WAIT_S = 30.0


@dataclass(frozen=True)
class ExpectedPackage:
    """What the announcement says the package is: its size and SHA-256 hex."""

    size: int
    digest: str


class _Restart(Exception):
    """The partial file must be started over (the service sent the whole package)."""


def _origin(url: str) -> tuple[str, str, int]:
    parts = urlsplit(url)
    default = 443 if parts.scheme == "https" else 80
    return parts.scheme, (parts.hostname or "").lower(), parts.port or default


def request_path(location: str, service: NodeClient) -> str:
    """The path (with query) to request; refuse a location outside the node's service."""
    base = service.base_url  # validated by NodeClient
    parts = urlsplit(location)
    if _origin(location) != _origin(base) or parts.fragment or not parts.path.startswith("/"):
        raise rejected(
            InstallReason.UNSUPPORTED_LOCATION,
            f"package location {location[:200]!r} is not on this node's fleet service "
            f"{base}; the node downloads only from its configured service_url",
        )
    return f"{parts.path}?{parts.query}" if parts.query else parts.path


def _hash_prefix(partial: Path, size: int) -> tuple[hashlib._Hash, int]:
    """SHA-256 state and length of the kept prefix (a prefix longer than ``size`` is dropped)."""
    hasher = hashlib.sha256()
    try:
        have = partial.stat().st_size
    except FileNotFoundError:
        return hasher, 0
    if have > size:
        partial.unlink()
        return hasher, 0
    with partial.open("rb") as handle:
        for chunk in iter(lambda: handle.read(CHUNK_BYTES), b""):
            hasher.update(chunk)
    return hasher, have


def _connection(service: NodeClient) -> http.client.HTTPConnection:
    """A connection to the node's service; over https with its TLS context (CA pin and
    the node's client certificate), when it has one."""
    parts = urlsplit(service.base_url)
    host, port = parts.hostname or "", parts.port
    if parts.scheme == "https":
        return http.client.HTTPSConnection(
            host, port, timeout=service.timeout_s, context=service.tls_context
        )
    return http.client.HTTPConnection(host, port, timeout=service.timeout_s)


def _detail(response: http.client.HTTPResponse) -> str:
    try:
        return str(json.loads(response.read(65536)).get("detail", ""))[:300]
    except (ValueError, AttributeError, OSError, http.client.HTTPException):
        return ""


def _body_start(response: http.client.HTTPResponse, have: int, expected: ExpectedPackage) -> int:
    """Where the body starts in the package: ``have`` (206) or 0 (200); refuse the rest."""
    if response.status == 206:
        answered = parse_content_range(response.getheader("Content-Range") or "")
        if answered.total != expected.size:
            raise rejected(
                InstallReason.DIGEST_MISMATCH,
                f"the service's package is {answered.total} bytes but the announcement "
                f"says {expected.size}",
            )
        if answered.start != have:
            raise _Restart
        return have
    length = response.getheader("Content-Length")
    if length is not None and length.strip() != str(expected.size):
        raise rejected(
            InstallReason.DIGEST_MISMATCH,
            f"the service's package is {length.strip()[:20]} bytes but the announcement "
            f"says {expected.size}",
        )
    return 0


def _attempt(
    service: NodeClient, path: str, partial: Path, expected: ExpectedPackage
) -> tuple[str, int]:
    """One request; returns (digest so far, bytes held). Network errors propagate."""
    hasher, have = _hash_prefix(partial, expected.size)
    if have == expected.size:
        return hasher.hexdigest(), have
    headers = sign_request(service.key, service.node_id, "GET", path)
    if have:
        headers["Range"] = f"bytes={have}-"
        headers["If-Range"] = entity_tag(expected.digest)
    connection = _connection(service)
    try:
        connection.request("GET", path, headers=headers)
        response = connection.getresponse()
        if response.status == 416:
            raise _Restart
        if response.status not in (200, 206):
            detail = _detail(response)
            raise _HttpRefusal(response.status, detail, response.getheader("Retry-After"))
        start = _body_start(response, have, expected)
        if start != have:
            LOGGER.info("the service sent the whole package; starting %s over", partial.name)
            hasher, have = hashlib.sha256(), 0
        with partial.open("r+b" if have else "wb") as handle:
            handle.truncate(have)
            handle.seek(have)
            while chunk := response.read(CHUNK_BYTES):
                if have + len(chunk) > expected.size:
                    partial.unlink(missing_ok=True)
                    raise rejected(
                        InstallReason.DIGEST_MISMATCH,
                        f"the service sent more than the announced {expected.size} bytes",
                    )
                handle.write(chunk)
                hasher.update(chunk)
                have += len(chunk)
        fsync_file(partial)
    finally:
        connection.close()
    return hasher.hexdigest(), have


class _HttpRefusal(Exception):
    def __init__(self, status: int, detail: str, retry_after: str | None) -> None:
        super().__init__(f"{status} {detail}".strip())
        self.status = status
        self.retry_after = float(retry_after) if retry_after and retry_after.isdigit() else 0.0


def download_package(
    location: str,
    destination: Path,
    partial: Path,
    expected: ExpectedPackage,
    service: NodeClient,
) -> Path:
    """Download ``location`` into ``destination`` via ``partial``, resuming what it holds.

    Raises :class:`~tensorguard.fleet.rejections.InstallRefused`: ``rejected`` with
    ``unsupported_location`` (not the node's service) or ``digest_mismatch`` (size or
    SHA-256 differ; the partial file is deleted), ``failed`` with ``fetch_failed``
    (refused, or interrupted on every attempt; the partial file is kept for next time).
    """
    path = request_path(location, service)
    problem = "no attempt made"
    for attempt in range(1, service.attempts + 1):
        wait = service.backoff_s * 2 ** (attempt - 1)
        try:
            digest, have = _attempt(service, path, partial, expected)
        except _Restart:
            partial.unlink(missing_ok=True)
            problem = "the service could not continue the partial download; starting over"
            continue
        except _HttpRefusal as refusal:
            if refusal.status not in RETRYABLE:
                raise failed(
                    InstallReason.FETCH_FAILED,
                    f"the fleet service refused the download of {path}: {refusal}",
                ) from None
            problem, wait = str(refusal), max(wait, refusal.retry_after)
        except InstallRefused:
            raise
        except ValueError as exc:  # a malformed Content-Range
            partial.unlink(missing_ok=True)
            problem = str(exc)
        except (OSError, http.client.HTTPException) as exc:
            problem = f"interrupted ({type(exc).__name__}: {exc})"
        else:
            if have == expected.size:
                return _complete(partial, destination, digest, expected)
            problem = f"the transfer ended after {have} of {expected.size} bytes"
        LOGGER.warning("download of %s attempt %d: %s", path, attempt, problem)
        if attempt < service.attempts:
            time.sleep(min(wait, MAX_RETRY_WAIT_S))
    raise failed(
        InstallReason.FETCH_FAILED,
        f"cannot download {path} from {service.base_url} after {service.attempts} attempts: "
        f"{problem}; the partial download is kept and resumed next time",
    )


def _complete(partial: Path, destination: Path, digest: str, expected: ExpectedPackage) -> Path:
    if digest != expected.digest:
        partial.unlink(missing_ok=True)
        raise rejected(
            InstallReason.DIGEST_MISMATCH,
            f"the downloaded package has SHA-256 {digest}, but the announcement says "
            f"{expected.digest}",
        )
    publish_file(partial, destination)
    return destination
