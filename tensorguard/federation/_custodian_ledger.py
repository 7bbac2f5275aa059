"""The custodian's ledger: every decryption, once per round, signed and hash-chained.

Decrypting two different aggregates of the same round (say of sites {a, b, c} and of
{a, b}) and subtracting them would reveal site ``c``'s update. The custodian therefore
decrypts at most one aggregate per round and federation key: before it decrypts, it
appends a :class:`DecryptionRecord` naming the round, the key, the contributing sites,
the digest of the aggregate ciphertext and the round's DP noise multiplier (so the
ledger also accounts the ε the releases add up to, :meth:`CustodianLedger.epsilon`); a
later request for the same round is allowed only for that very aggregate (re-deriving
the same result reveals nothing new).

The ledger is a :class:`~tensorguard.signed_log.SignedLog` (JSON lines, each record
signed with composite ML-DSA-65 + Ed25519 under :data:`LEDGER_SIGNATURE_CONTEXT` and
naming the SHA-256 of the previous record), so removing, reordering or editing a line
breaks the chain or a signature.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, Literal, get_args

from pydantic import Field

from tensorguard.codec import (
    CodecError,
    IsoTimestamp,
    Sha256Hex,
    StrictModel,
    canonical_digest,
    validate_model,
)
from tensorguard.crypto import CompositeSigner
from tensorguard.federation._accountant import gaussian_rdp, rdp_to_epsilon
from tensorguard.federation._errors import DecryptionError
from tensorguard.signed_log import GENESIS, PREVIOUS_FIELD, SignedLog

LEDGER_SIGNATURE_CONTEXT = b"tensorguard/federation/custodian-ledger/v1"
LedgerFormat = Literal["tensorguard.federation.custodian-ledger/v1"]
LEDGER_FORMAT: str = get_args(LedgerFormat)[0]


class LedgerError(DecryptionError):
    """The custodian ledger is corrupt, forged, or forbids this decryption."""


class _RecordDocument(StrictModel):
    """One signed ledger record exactly as :meth:`DecryptionRecord.to_json` writes it.

    ``dp_noise_multiplier`` may be absent: records written before DP accounting lack it.
    """

    format: LedgerFormat
    round_id: Annotated[str, Field(min_length=1)]
    public_context_sha256: Sha256Hex
    contributors: list[Annotated[str, Field(min_length=1)]]
    aggregate_sha256: Sha256Hex
    decrypted_at: IsoTimestamp
    previous_sha256: Sha256Hex
    dp_noise_multiplier: Annotated[float, Field(gt=0, allow_inf_nan=False)] | None = None


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
        """Parse a record written by :meth:`to_json` (see :class:`_RecordDocument`)."""
        try:
            parsed = validate_model(_RecordDocument, document, what="a custodian ledger record")
        except CodecError as exc:
            raise LedgerError(
                f"{exc}; restore the ledger from its backup, do not decrypt until then"
            ) from None
        return cls(
            round_id=parsed.round_id,
            public_context_sha256=parsed.public_context_sha256,
            contributors=tuple(parsed.contributors),
            aggregate_sha256=parsed.aggregate_sha256,
            decrypted_at=parsed.decrypted_at,
            previous_sha256=parsed.previous_sha256,
            dp_noise_multiplier=parsed.dp_noise_multiplier,
        )


class CustodianLedger:
    """Append-only, signed record of the custodian's decryptions, one per round."""

    def __init__(self, path: Path, signer: CompositeSigner) -> None:
        self.path = path
        self._signer = signer
        self._log = SignedLog(
            path,
            signer.public_key(),
            context=LEDGER_SIGNATURE_CONTEXT,
            error=LedgerError,
            name="custodian ledger",
            signer="this custodian's key",
            remedy="Restore the ledger from its backup; do not decrypt until then",
        )

    def records(self) -> list[DecryptionRecord]:
        """Every record, after checking each signature and the hash chain."""
        return [DecryptionRecord.from_json(record) for record in self._log.records()]

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
        fields = record.to_json()
        del fields[PREVIOUS_FIELD]  # the log chains the record after its current head
        self._log.append(self._signer, fields)
