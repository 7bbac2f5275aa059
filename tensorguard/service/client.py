"""What an edge node calls: signed heartbeats and telemetry to the fleet service.

Standard library and ``cryptography`` only, so the edge base install can use it. Every
attempt is signed anew (fresh time and nonce); telemetry keeps its ``message_id``
across retries, so a retry after a lost response is stored once. Connection failures,
5xx and 429 (honouring ``Retry-After``) are retried; any other refusal raises
:class:`FleetClientError` at once with the service's reason. Over ``https`` the node
can present its enrolled certificate (mutual TLS, :func:`client_tls_context`).
"""

from __future__ import annotations

import json
import ssl
import time
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from tensorguard.service.errors import ServiceError
from tensorguard.service.request_signing import sign_request

RETRYABLE = frozenset({429, 500, 502, 503, 504})
MAX_RETRY_WAIT_S = 30.0


class FleetClientError(ServiceError):
    """The fleet service refused a node's request, or could not be reached."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


def service_base_url(url: str) -> str:
    """``url`` without a trailing slash if it is ``http(s)://host[:port]``; else raise."""
    parts = urlsplit(url)
    if (
        parts.scheme not in ("http", "https")
        or not parts.hostname
        or parts.path not in ("", "/")
        or parts.query
        or parts.fragment
    ):
        raise FleetClientError(f"fleet service URL must be http(s)://host[:port], not {url!r}")
    return url.rstrip("/")


def client_tls_context(
    ca_file: Path | None = None, cert_file: Path | None = None, key_file: Path | None = None
) -> ssl.SSLContext:
    """A TLS client context that checks the service (against ``ca_file``, else the system
    store) and presents ``cert_file``/``key_file`` (both or neither) as the node's
    certificate; :class:`FleetClientError` when a file does not load."""
    if (cert_file is None) != (key_file is None):
        raise FleetClientError("a client certificate needs both its chain and its key file")
    try:
        context = ssl.create_default_context(cafile=ca_file)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        if cert_file is not None:
            context.load_cert_chain(cert_file, key_file)
    except (OSError, ssl.SSLError) as exc:
        raise FleetClientError(
            f"the fleet service TLS files do not load ({exc}): CA {ca_file}, certificate "
            f"{cert_file}, key {key_file}; use the files `tensorguard agent enrol "
            "--install-cert` printed"
        ) from None
    return context


@dataclass
class NodeClient:
    """A node's connection to the fleet service (``base_url`` like ``https://fleet:8443``).

    ``tls_context`` (from :func:`client_tls_context`) verifies an ``https`` service and
    presents the node's certificate; it is refused with an ``http`` URL, where it would
    silently not be used.
    """

    base_url: str
    node_id: str
    key: Ed25519PrivateKey
    timeout_s: float = 10.0
    attempts: int = 3
    backoff_s: float = 0.5
    tls_context: ssl.SSLContext | None = None

    def __post_init__(self) -> None:
        """Refuse a URL that is not plain http(s) with a host, and TLS settings for http."""
        self.base_url = service_base_url(self.base_url)
        if self.tls_context is not None and urlsplit(self.base_url).scheme != "https":
            raise FleetClientError(
                f"TLS settings (a CA or client certificate) are given for {self.base_url}, "
                "which is not https; use the service's https:// URL"
            )

    def heartbeat(self, installed_version: int | None = None) -> dict[str, Any]:
        """Tell the service this node is alive (and what it runs); returns the node record."""
        return self._post(
            f"/v1/nodes/{self.node_id}/heartbeat", {"installed_version": installed_version}
        )

    def post_telemetry(self, **fields: Any) -> bool:
        """Post one telemetry message; True if stored now, False if it had been stored.

        ``message_id`` (default: a new random id) and ``sent_at`` (default: now) are
        filled in when absent and kept for every retry of this call.
        """
        message = {"message_id": uuid.uuid4().hex, "sent_at": datetime.now(UTC).isoformat()}
        message.update(fields)
        answer = self._post(f"/v1/nodes/{self.node_id}/telemetry", message)
        return bool(answer["stored"])

    def _post(self, path: str, payload: dict[str, Any]) -> dict[str, Any]:
        body = json.dumps(payload).encode()
        problem = "no attempt made"
        for attempt in range(1, self.attempts + 1):
            headers = {"Content-Type": "application/json"}
            headers.update(sign_request(self.key, self.node_id, "POST", path, body))
            request = urllib.request.Request(  # noqa: S310 - scheme checked in __post_init__
                self.base_url + path, data=body, headers=headers, method="POST"
            )
            wait = self.backoff_s * 2 ** (attempt - 1)
            try:
                with urllib.request.urlopen(  # noqa: S310
                    request, timeout=self.timeout_s, context=self.tls_context
                ) as response:
                    answer: dict[str, Any] = json.loads(response.read())
                    return answer
            except urllib.error.HTTPError as error:
                detail = _detail(error)
                if error.code not in RETRYABLE:
                    raise FleetClientError(
                        f"fleet service refused POST {path}: {error.code} {detail}", error.code
                    ) from None
                problem = f"{error.code} {detail}"
                wait = max(wait, _retry_after(error))
            except (urllib.error.URLError, OSError) as error:
                problem = f"unreachable ({getattr(error, 'reason', error)})"
            if attempt < self.attempts:
                time.sleep(min(wait, MAX_RETRY_WAIT_S))
        raise FleetClientError(
            f"fleet service at {self.base_url}: POST {path} failed after {self.attempts} "
            f"attempts: {problem}"
        )


def _detail(error: urllib.error.HTTPError) -> str:
    try:
        return str(json.loads(error.read()).get("detail", ""))[:500]
    except (ValueError, AttributeError, OSError):
        return ""


def _retry_after(error: urllib.error.HTTPError) -> float:
    value = error.headers.get("Retry-After", "") if error.headers else ""
    return float(value) if value.isdigit() else 0.0
