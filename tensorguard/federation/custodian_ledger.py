"""The custodian's ledger: every decryption, once per round, signed and hash-chained.

Decrypting two different aggregates of the same round (say of sites {a, b, c} and of
{a, b}) and subtracting them would reveal site ``c``'s update. The custodian therefore
decrypts at most one aggregate per round and federation key: before it decrypts, it
appends a :class:`DecryptionRecord` naming the round, the key, the contributing sites,
the digest of the aggregate ciphertext and the round's DP noise multiplier (so the
ledger also accounts the ε the releases add up to, :meth:`CustodianLedger.epsilon`); a
later request for the same round is allowed only for that very aggregate (re-deriving
the same result reveals nothing new).

The ledger is a JSON-lines file. Each line is ``{"record": {...}, "signature": "<hex>"}``:
the record is signed (composite ML-DSA-65 + Ed25519, context
:data:`LEDGER_SIGNATURE_CONTEXT`) over its RFC 8785 canonical JSON, and names the
SHA-256 of the previous line's canonical record, so removing, reordering or editing a
line breaks the chain or a signature. The whole file is rewritten atomically on append.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from tensorguard.codec import CodecError, canonical_digest, canonical_json, parse_json_object
from tensorguard.crypto.composite import CompositeSigner, CompositeVerifyKey
from tensorguard.crypto.errors import SignatureError
from tensorguard.durable import atomic_write_bytes
from tensorguard.federation.accountant import gaussian_rdp, rdp_to_epsilon
from tensorguard.federation.errors import DecryptionError

LEDGER_SIGNATURE_CONTEXT = b"tensorguard/federation/custodian-ledger/v1"
LEDGER_FORMAT = "tensorguard.federation.custodian-ledger/v1"
GENESIS = "0" * 64


class LedgerError(DecryptionError):
    """The custodian ledger is corrupt, forged, or forbids this decryption."""


@dataclass(frozen=True)
class DecryptionRecord:
    """One decryption the custodian performed (or is about to perform)."""

    round_id: str
    public_context_sha256: str
    contributors: tuple[str, ...]
    aggregate_sha256: str
    decrypted_at: datetime
    previous_sha256: str
    dp_noise_multiplier: float | None = None
    """The round's central DP noise multiplier σ (None: no DP), for the ε account."""

    def to_json(self) -> dict[str, Any]:
        """The signed fields."""
        return {
            "dp_noise_multiplier": self.dp_noise_multiplier,
            "format": LEDGER_FORMAT,
            "round_id": self.round_id,
            "public_context_sha256": self.public_context_sha256,
            "contributors": list(self.contributors),
            "aggregate_sha256": self.aggregate_sha256,
            "decrypted_at": self.decrypted_at.isoformat(),
            "previous_sha256": self.previous_sha256,
        }

    @property
    def digest(self) -> str:
        """SHA-256 of the canonical record: the next record's ``previous_sha256``."""
        return canonical_digest(self.to_json())

    @classmethod
    def from_json(cls, document: dict[str, Any]) -> DecryptionRecord:
        """Parse a record written by :meth:`to_json`."""
        try:
            if document["format"] != LEDGER_FORMAT:
                raise ValueError(f"unknown format {document['format']!r}")
            return cls(
                round_id=str(document["round_id"]),
                public_context_sha256=str(document["public_context_sha256"]),
                contributors=tuple(str(site) for site in document["contributors"]),
                aggregate_sha256=str(document["aggregate_sha256"]),
                decrypted_at=datetime.fromisoformat(str(document["decrypted_at"])),
                previous_sha256=str(document["previous_sha256"]),
                dp_noise_multiplier=(
                    None
                    if document.get("dp_noise_multiplier") is None
                    else float(document["dp_noise_multiplier"])
                ),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise LedgerError(f"a custodian ledger record does not parse: {exc}") from exc


class CustodianLedger:
    """Append-only, signed record of the custodian's decryptions, one per round."""

    def __init__(self, path: Path, signer: CompositeSigner) -> None:
        self.path = path
        self._signer = signer
        self._verify_key: CompositeVerifyKey = signer.public_key()

    def records(self) -> list[DecryptionRecord]:
        """Every record, after checking each signature and the hash chain."""
        if not self.path.exists():
            return []
        records: list[DecryptionRecord] = []
        previous = GENESIS
        lines = self.path.read_bytes().splitlines()
        for number, line in enumerate(lines, start=1):
            record = self._verified_line(line, number)
            if record.previous_sha256 != previous:
                raise LedgerError(
                    f"custodian ledger {self.path} line {number} does not follow line "
                    f"{number - 1} (hash chain broken): a record was removed, reordered or "
                    "edited. Restore the ledger from its backup; do not decrypt until then"
                )
            previous = record.digest
            records.append(record)
        return records

    def _verified_line(self, line: bytes, number: int) -> DecryptionRecord:
        try:
            document = parse_json_object(line, what=f"custodian ledger line {number}")
            record_json = document["record"]
            signature = bytes.fromhex(str(document["signature"]))
            if not isinstance(record_json, dict):
                raise TypeError("record is not an object")
        except (CodecError, KeyError, TypeError, ValueError) as exc:
            raise LedgerError(
                f"custodian ledger {self.path} line {number} is malformed ({exc}); restore "
                "the ledger from its backup"
            ) from exc
        record = DecryptionRecord.from_json(record_json)
        try:
            self._verify_key.verify(
                canonical_json(record.to_json()), signature, LEDGER_SIGNATURE_CONTEXT
            )
        except SignatureError as exc:
            raise LedgerError(
                f"custodian ledger {self.path} line {number} is not signed by this "
                "custodian's key; the ledger was forged or belongs to another custodian"
            ) from exc
        return record

    def authorise(
        self,
        *,
        round_id: str,
        public_context_sha256: str,
        contributors: Sequence[str],
        aggregate_sha256: str,
        dp_noise_multiplier: float | None = None,
    ) -> DecryptionRecord:
        """Record a decryption of this aggregate, or refuse a second one for the round.

        Returns the new record, or the existing one when exactly this aggregate was
        decrypted before. Raises :class:`LedgerError` when another aggregate of the
        same round and key was already decrypted.
        """
        records = self.records()
        for record in records:
            if (record.round_id, record.public_context_sha256) != (
                round_id,
                public_context_sha256,
            ):
                continue
            if record.aggregate_sha256 == aggregate_sha256:
                return record
            raise LedgerError(
                f"round {round_id!r} was already decrypted once (sites "
                f"{', '.join(record.contributors)}, at {record.decrypted_at.isoformat()}); "
                "the custodian decrypts one aggregate per round, because the difference of "
                "two would reveal a site's update. Open a new round instead"
            )
        record = DecryptionRecord(
            round_id=round_id,
            public_context_sha256=public_context_sha256,
            contributors=tuple(sorted(contributors)),
            aggregate_sha256=aggregate_sha256,
            decrypted_at=datetime.now(UTC).replace(microsecond=0),
            previous_sha256=records[-1].digest if records else GENESIS,
            dp_noise_multiplier=dp_noise_multiplier,
        )
        self._append(record)
        return record

    def epsilon(self, delta: float) -> float:
        """The (ε, δ) of every DP round this custodian decrypted, composed (RDP).

        Each decrypted aggregate released one run of the Gaussian mechanism with the
        round's σ on the sum; their RDP curves add up. Rounds without DP release the sum
        in the clear for the custodian and are not counted here (they have no ε).
        """
        curves = [
            gaussian_rdp(record.dp_noise_multiplier, 1)
            for record in self.records()
            if record.dp_noise_multiplier is not None
        ]
        if not curves:
            return 0.0
        total = [sum(values) for values in zip(*curves, strict=True)]
        return rdp_to_epsilon(total, delta)[0]

    def _append(self, record: DecryptionRecord) -> None:
        body = canonical_json(record.to_json())
        line = canonical_json(
            {
                "record": record.to_json(),
                "signature": self._signer.sign(body, LEDGER_SIGNATURE_CONTEXT).hex(),
            }
        )
        existing = self.path.read_bytes() if self.path.exists() else b""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(self.path, existing + line + b"\n")
