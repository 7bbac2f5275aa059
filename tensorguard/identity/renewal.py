"""Certificate renewal of one service endpoint, as an explicit state machine.

::

    PENDING → ISSUING → CHALLENGE → ISSUED → DEPLOYING → VERIFYING → SUCCEEDED
       ↑         │          │                    │            │
       └─ retry ─┴──────────┘ (backoff)          └────────────┴─→ ROLLED_BACK (old one restored
                 └─ no attempts left / not retryable → FAILED        and served again)

* **ISSUING/CHALLENGE**: a fresh P-256 key and CSR for the endpoint's names; the
  :class:`CertificateSource` (:class:`~tensorguard.identity.acme_issuer.AcmeIssuer`)
  orders the certificate and enters CHALLENGE while it proves control of the names. A
  retryable failure goes back to PENDING and waits the :class:`RetryPolicy`'s delay (at
  least what the server asked for) — really waits, through ``sleep`` — then tries again.
* **DEPLOYING**: the installed files are snapshotted, the new chain and key installed
  atomically (:mod:`.deploy`) and the service reloaded.
* **VERIFYING**: a TLS connection to the endpoint must present exactly the new
  certificate (SHA-256 of the leaf), within ``verify_timeout_s``.
* A failed deploy or verification restores the snapshot, reloads, and checks that the
  previous certificate is served again: ROLLED_BACK with the reason. If even that fails,
  FAILED with both reasons: the endpoint needs an operator.

Every transition is handed to the ``recorder`` (the CA's signed audit log:
:func:`audit_recorder`) with the job id and endpoint id *before* the job moves on; a
transition that cannot be recorded stops the job.
"""

from __future__ import annotations

import ipaddress
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Protocol

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tensorguard.identity.acme_issuer import AcmeIssuanceError
from tensorguard.identity.audit import AuditEvent, DetailValue
from tensorguard.identity.authority import CertificateAuthority
from tensorguard.identity.deploy import CertificateFiles, DeployError, Reload, Snapshot
from tensorguard.identity.errors import IdentityConfigError, IdentityError
from tensorguard.identity.tls_probe import (
    VerificationError,
    certificate_fingerprint,
    wait_until_served,
)


class RenewalState(StrEnum):
    """Where a renewal job is."""

    PENDING = "PENDING"
    ISSUING = "ISSUING"
    CHALLENGE = "CHALLENGE"
    ISSUED = "ISSUED"
    DEPLOYING = "DEPLOYING"
    VERIFYING = "VERIFYING"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    ROLLED_BACK = "ROLLED_BACK"


S = RenewalState
TERMINAL = frozenset({S.SUCCEEDED, S.FAILED, S.ROLLED_BACK})
#: Every transition the machine may make; anything else is a programming error.
ALLOWED: dict[RenewalState | None, frozenset[RenewalState]] = {
    None: frozenset({S.PENDING}),
    S.PENDING: frozenset({S.ISSUING}),
    S.ISSUING: frozenset({S.CHALLENGE, S.ISSUED, S.PENDING, S.FAILED}),
    S.CHALLENGE: frozenset({S.ISSUED, S.PENDING, S.FAILED}),
    S.ISSUED: frozenset({S.DEPLOYING}),
    S.DEPLOYING: frozenset({S.VERIFYING, S.ROLLED_BACK, S.FAILED}),
    S.VERIFYING: frozenset({S.SUCCEEDED, S.ROLLED_BACK, S.FAILED}),
}

Recorder = Callable[[str, str, dict[str, DetailValue]], None]
"""Called with (job id, endpoint id, details) for every transition."""


class CertificateSource(Protocol):
    """Issues a chain for a CSR (an ACME CA); calls ``on_challenge`` while validating."""

    def issue(
        self, csr_pem: bytes, on_challenge: Callable[[list[str]], None] | None = None
    ) -> bytes:
        """Return the PEM chain, leaf first."""


@dataclass(frozen=True)
class RetryPolicy:
    """How often issuance is tried and how long to wait between tries.

    The n-th retry waits ``initial_delay_s * multiplier**(n-1)``, capped at
    ``max_delay_s`` — but never less than a ``Retry-After`` the server sent.
    """

    max_attempts: int = 3
    initial_delay_s: float = 30.0
    multiplier: float = 2.0
    max_delay_s: float = 900.0

    def __post_init__(self) -> None:
        if self.max_attempts < 1 or self.initial_delay_s < 0 or self.multiplier < 1:
            raise IdentityConfigError(
                "retry policy: max_attempts must be ≥ 1, initial_delay_s ≥ 0, multiplier ≥ 1"
            )

    def delay(self, attempt: int, retry_after: float | None = None) -> float:
        """Seconds to wait after failed attempt number ``attempt`` (1-based)."""
        backoff = min(self.max_delay_s, self.initial_delay_s * self.multiplier ** (attempt - 1))
        return max(backoff, retry_after or 0.0)


@dataclass(frozen=True)
class ServiceEndpoint:
    """A TLS service whose certificate is renewed.

    ``names`` go into the certificate (DNS names or IP addresses; the first is the
    subject CN and the name sent when verifying); ``files`` are what the service reads;
    ``host``/``port`` is where verification connects.
    """

    endpoint_id: str
    names: tuple[str, ...]
    files: CertificateFiles
    host: str
    port: int
    verify_timeout_s: float = 15.0

    def __post_init__(self) -> None:
        if not self.names:
            raise IdentityConfigError(f"endpoint {self.endpoint_id!r} names no DNS name or IP")


@dataclass
class RenewalOutcome:
    """How a renewal job ended."""

    job_id: str
    endpoint_id: str
    state: RenewalState = S.PENDING
    reason: str | None = None
    attempts: int = 0
    fingerprint: str | None = None
    previous_fingerprint: str | None = None
    history: list[RenewalState] = field(default_factory=list)


def audit_recorder(authority: CertificateAuthority) -> Recorder:
    """A recorder that appends each transition to ``authority``'s signed audit log."""

    def record(job_id: str, endpoint_id: str, details: dict[str, DetailValue]) -> None:
        authority.record_event(
            AuditEvent.RENEWAL_TRANSITION, job_id=job_id, endpoint_id=endpoint_id, details=details
        )

    return record


def new_key_and_csr(names: tuple[str, ...]) -> tuple[bytes, bytes]:
    """A fresh P-256 key (PKCS#8 PEM) and a CSR for ``names`` signed by it."""
    key = ec.generate_private_key(ec.SECP256R1())
    general: list[x509.GeneralName] = []
    for name in names:
        try:
            general.append(x509.IPAddress(ipaddress.ip_address(name)))
        except ValueError:
            general.append(x509.DNSName(name))
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])]))
        .add_extension(x509.SubjectAlternativeName(general), critical=False)
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return key_pem, csr.public_bytes(serialization.Encoding.PEM)


class RenewalJob:
    """One renewal of one endpoint; :meth:`run` drives it to a terminal state."""

    def __init__(
        self,
        endpoint: ServiceEndpoint,
        source: CertificateSource,
        reload: Reload,
        recorder: Recorder,
        *,
        retry: RetryPolicy | None = None,
        sleep: Callable[[float], None] = time.sleep,
        job_id: str | None = None,
    ) -> None:
        self.endpoint = endpoint
        self.source = source
        self.reload = reload
        self.recorder = recorder
        self.retry = retry or RetryPolicy()
        self.sleep = sleep
        self.outcome = RenewalOutcome(
            job_id=job_id or f"renew-{endpoint.endpoint_id}-{uuid.uuid4().hex[:12]}",
            endpoint_id=endpoint.endpoint_id,
        )
        self._state: RenewalState | None = None

    def _move(self, to: RenewalState, **details: DetailValue) -> None:
        if to not in ALLOWED.get(self._state, frozenset()):
            raise IdentityError(f"renewal cannot go from {self._state} to {to}")
        self.recorder(
            self.outcome.job_id,
            self.endpoint.endpoint_id,
            {"from": self._state.value if self._state else None, "to": to.value, **details},
        )
        self._state = to
        self.outcome.state = to
        self.outcome.history.append(to)

    def run(self) -> RenewalOutcome:
        """Issue, deploy, verify (or roll back); return the outcome."""
        self._move(S.PENDING, names=list(self.endpoint.names))
        issued = self._issue()
        if issued is None:
            return self.outcome
        chain_pem, key_pem = issued
        snapshot = self.endpoint.files.snapshot()
        self.outcome.previous_fingerprint = _leaf_fingerprint(snapshot.chain_pem)
        self._move(S.DEPLOYING, previous_sha256=self.outcome.previous_fingerprint)
        try:
            self.endpoint.files.install(chain_pem, key_pem)
            self.reload()
        except DeployError as exc:
            return self._roll_back(snapshot, f"deploy failed: {exc}")
        self._move(S.VERIFYING, sha256=self.outcome.fingerprint)
        try:
            self._wait_served(self.outcome.fingerprint)
        except VerificationError as exc:
            return self._roll_back(snapshot, f"verification failed: {exc}")
        self._move(S.SUCCEEDED, sha256=self.outcome.fingerprint)
        return self.outcome

    def _issue(self) -> tuple[bytes, bytes] | None:
        for attempt in range(1, self.retry.max_attempts + 1):
            self.outcome.attempts = attempt
            self._move(S.ISSUING, attempt=attempt)
            key_pem, csr_pem = new_key_and_csr(self.endpoint.names)
            try:
                chain_pem = self.source.issue(
                    csr_pem, on_challenge=lambda names: self._move(S.CHALLENGE, names=names)
                )
                leaf = x509.load_pem_x509_certificates(chain_pem)[0]
            except (AcmeIssuanceError, ValueError) as exc:
                retryable = getattr(exc, "retryable", False)
                if not retryable or attempt == self.retry.max_attempts:
                    self.outcome.reason = f"issuance failed after {attempt} attempt(s): {exc}"
                    self._move(S.FAILED, attempt=attempt, reason=self.outcome.reason)
                    return None
                delay = self.retry.delay(attempt, getattr(exc, "retry_after", None))
                self._move(
                    S.PENDING, attempt=attempt, reason=str(exc), retry_in_ms=round(delay * 1000)
                )
                self.sleep(delay)
                continue
            self.outcome.fingerprint = certificate_fingerprint(leaf)
            self._move(
                S.ISSUED,
                serial=f"{leaf.serial_number:x}",
                issuer=leaf.issuer.rfc4514_string(),
                not_after=leaf.not_valid_after_utc.isoformat(),
                sha256=self.outcome.fingerprint,
            )
            return chain_pem, key_pem
        raise AssertionError("unreachable: the last attempt returns")

    def _wait_served(self, fingerprint: str | None) -> None:
        if fingerprint is None:
            raise VerificationError("there is no certificate to expect")
        wait_until_served(
            self.endpoint.host,
            self.endpoint.port,
            self.endpoint.names[0],
            fingerprint,
            self.endpoint.verify_timeout_s,
        )

    def _roll_back(self, snapshot: Snapshot, reason: str) -> RenewalOutcome:
        """Restore the snapshot and reload; what the endpoint serves afterwards decides
        between ROLLED_BACK (the previous certificate again) and FAILED."""
        self.outcome.reason = reason
        reload_error: str | None = None
        try:
            self.endpoint.files.restore(snapshot)
        except DeployError as exc:
            return self._fail_rollback(reason, exc)
        try:
            self.reload()
        except DeployError as exc:  # it may never have taken the new files: check below
            reload_error = str(exc)
        try:
            self._wait_served(self.outcome.previous_fingerprint)
        except VerificationError as exc:
            return self._fail_rollback(reason, exc)
        self._move(
            S.ROLLED_BACK,
            reason=reason,
            restored_sha256=self.outcome.previous_fingerprint,
            reload_error=reload_error,
        )
        return self.outcome

    def _fail_rollback(self, reason: str, exc: IdentityError) -> RenewalOutcome:
        self.outcome.reason = f"{reason}; rollback failed too: {exc}"
        self._move(S.FAILED, reason=self.outcome.reason)
        return self.outcome


def _leaf_fingerprint(chain_pem: bytes | None) -> str | None:
    if chain_pem is None:
        return None
    try:
        return certificate_fingerprint(x509.load_pem_x509_certificates(chain_pem)[0])
    except ValueError:
        return None
