"""The CA directory: public certificates, the policy, the issuance index and the CRLs.

Nothing secret is kept here — the root and intermediate private keys live in the key
provider (see :mod:`tensorguard.identity.authority`). Layout::

    policy.json          the IssuancePolicy fixed at creation
    root.pem             the self-signed root (distribute as the trust anchor)
    intermediate.pem     the issuing CA, signed by the root
    ca-bundle.pem        intermediate + root (for brokers' cafile)
    index.json           every certificate issued: serial, profile, names, validity, revocation
    crl.pem              the intermediate's CRL (leaf revocations), re-signed on each revocation
    root-crl.pem         the root's CRL (revoked intermediates)
    issued/<serial>.pem  each issued certificate
    retired/intermediate-g<n>.pem  earlier intermediates (after a rotation)
    audit.jsonl          the signed, hash-chained audit log (tensorguard.identity.audit)
    audit-key.pub        the audit key's composite public key (pin its fingerprint elsewhere)
    .lock                held (flock) while issuing or revoking, so serials stay unique

Every write is atomic and durable (:mod:`tensorguard.durable`).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import TypeVar

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from tensorguard.codec import CodecError, parse_json_object
from tensorguard.durable import DurableWriteError, atomic_write_bytes, ensure_directory
from tensorguard.file_lock import held_exclusively
from tensorguard.identity.errors import CertificateAuthorityError
from tensorguard.identity.policy import IssuancePolicy, Profile

INDEX_VERSION = 1
ModelT = TypeVar("ModelT", bound=BaseModel)


class IssuedRecord(BaseModel):
    """One issued certificate as the CA remembers it."""

    model_config = ConfigDict(extra="forbid")

    serial: str
    profile: Profile
    common_name: str
    names: tuple[str, ...]
    not_before: datetime
    not_after: datetime
    sha256: str
    revoked_at: datetime | None = None
    reason: str | None = None
    issuer_generation: int = 1
    xwing_sha256: str | None = None

    def days_left(self, now: datetime) -> float:
        """Days until ``not_after`` (negative once expired)."""
        return (self.not_after - now).total_seconds() / 86400

    def is_current(self, now: datetime) -> bool:
        """Not revoked and within its validity period at ``now``."""
        return self.revoked_at is None and self.not_before <= now < self.not_after


class CaIndex(BaseModel):
    """The issuance index: CRL numbers and every issued certificate, by serial (hex)."""

    model_config = ConfigDict(extra="forbid")

    version: int = INDEX_VERSION
    ca_name: str
    crl_number: int = 0
    generation: int = 1
    root_crl_number: int = 0
    certificates: dict[str, IssuedRecord] = Field(default_factory=dict)


def serial_hex(serial: int) -> str:
    """The index key and file stem of a serial number: lower-case hex, no prefix."""
    return f"{serial:x}"


class CaDirectory:
    """Paths and durable reads/writes of one CA directory."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.policy_file = path / "policy.json"
        self.root_file = path / "root.pem"
        self.intermediate_file = path / "intermediate.pem"
        self.bundle_file = path / "ca-bundle.pem"
        self.index_file = path / "index.json"
        self.crl_file = path / "crl.pem"
        self.root_crl_file = path / "root-crl.pem"
        self.issued_dir = path / "issued"
        self.audit_file = path / "audit.jsonl"
        self.audit_key_file = path / "audit-key.pub"
        self.retired_dir = path / "retired"

    def exists(self) -> bool:
        """True when a CA was created here."""
        return self.root_file.exists()

    def create_layout(self) -> None:
        """Create the directory and ``issued/``; refuse when a CA is already here."""
        if self.exists():
            raise CertificateAuthorityError(
                f"a CA already exists in {self.path}; choose another directory (a CA is "
                "never overwritten)"
            )
        try:
            ensure_directory(self.issued_dir, mode=0o755)
        except DurableWriteError as exc:
            raise CertificateAuthorityError(str(exc)) from exc

    @contextmanager
    def locked(self) -> Iterator[None]:
        """Hold the directory's exclusive lock (one issuer or revoker at a time)."""
        try:
            handle = (self.path / ".lock").open("a")
        except OSError as exc:
            raise CertificateAuthorityError(
                f"cannot open the lock of CA directory {self.path}: {exc.strerror or exc}"
            ) from exc
        with held_exclusively(handle):
            yield

    def write(self, path: Path, data: bytes, *, overwrite: bool = True) -> None:
        """Write ``data`` to ``path`` atomically (0644: everything here is public)."""
        try:
            atomic_write_bytes(path, data, mode=0o644, overwrite=overwrite)
        except DurableWriteError as exc:
            raise CertificateAuthorityError(str(exc)) from exc

    def _read(self, path: Path) -> bytes:
        try:
            return path.read_bytes()
        except FileNotFoundError:
            raise CertificateAuthorityError(
                f"{path} is missing: {self.path} is not a CA directory (create one with "
                "`tensorguard identity init`) or it is damaged"
            ) from None
        except OSError as exc:
            raise CertificateAuthorityError(f"cannot read {path}: {exc.strerror or exc}") from exc

    def read_certificate(self, path: Path) -> x509.Certificate:
        """Load a PEM certificate from the CA directory."""
        try:
            return x509.load_pem_x509_certificate(self._read(path))
        except ValueError as exc:
            raise CertificateAuthorityError(f"{path} is not a PEM certificate: {exc}") from None

    def write_certificate(self, path: Path, certificate: x509.Certificate) -> None:
        """Store ``certificate`` as PEM at ``path``, never replacing a file."""
        self.write(path, certificate.public_bytes(serialization.Encoding.PEM), overwrite=False)

    def read_policy(self) -> IssuancePolicy:
        """The policy fixed when the CA was created."""
        return self._read_model(self.policy_file, IssuancePolicy)

    def write_policy(self, policy: IssuancePolicy) -> None:
        """Store the policy (only at creation)."""
        self.write(
            self.policy_file, policy.model_dump_json(indent=2).encode() + b"\n", overwrite=False
        )

    def read_index(self) -> CaIndex:
        """The issuance index."""
        index = self._read_model(self.index_file, CaIndex)
        if index.version != INDEX_VERSION:
            raise CertificateAuthorityError(
                f"{self.index_file} has version {index.version}; this TensorGuard reads "
                f"version {INDEX_VERSION}"
            )
        return index

    def write_index(self, index: CaIndex) -> None:
        """Replace the issuance index atomically."""
        self.write(self.index_file, index.model_dump_json(indent=2).encode() + b"\n")

    def _read_model(self, path: Path, model: type[ModelT]) -> ModelT:
        try:
            document = parse_json_object(self._read(path), what=str(path))
            return model.model_validate(document)
        except (CodecError, ValidationError) as exc:
            raise CertificateAuthorityError(f"{path} is damaged: {exc}") from None

    def retired_file(self, generation: int) -> Path:
        """Where intermediate generation ``generation`` is kept once it was rotated out."""
        return self.retired_dir / f"intermediate-g{generation}.pem"

    def read_retired(self) -> dict[int, x509.Certificate]:
        """Every rotated-out intermediate, by generation."""
        if not self.retired_dir.is_dir():
            return {}
        return {
            int(path.stem.removeprefix("intermediate-g")): self.read_certificate(path)
            for path in sorted(self.retired_dir.glob("intermediate-g*.pem"))
        }

    def issued_file(self, serial: int) -> Path:
        """Where the certificate with ``serial`` is kept."""
        return self.issued_dir / f"{serial_hex(serial)}.pem"
