"""One hash-chained, composite-signed, append-only JSON-lines log.

Each line is ``{"record": {...}, "signature": "<hex>"}``. The record is signed
(composite ML-DSA-65 + Ed25519 under the log's context) over its RFC 8785 canonical JSON
and names, in ``previous_sha256``, the SHA-256 of the previous line's canonical record
(:data:`GENESIS` for the first). So an edited line fails its signature, and a removed or
reordered line breaks the chain at the line after it. Removing the *last* lines leaves a
shorter valid log: only a head (count and digest) recorded elsewhere detects that, which
is what :meth:`SignedLog.verify` takes ``expected_head`` for. The whole file is
rewritten atomically on append.

Users: the custodian's decryption ledger (:mod:`tensorguard.federation._custodian_ledger`)
and the identity audit log (:mod:`tensorguard.identity.audit`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tensorguard.codec import CodecError, canonical_digest, canonical_json, parse_json_object
from tensorguard.crypto import CompositeSigner, CompositeVerifyKey, SignatureError
from tensorguard.durable import atomic_write_bytes, ensure_directory

GENESIS = "0" * 64
PREVIOUS_FIELD = "previous_sha256"

ErrorFactory = Callable[[str], Exception]


@dataclass(frozen=True)
class LogHead:
    """How many records a log holds and the digest of the last (GENESIS when empty)."""

    count: int
    digest: str


def record_digest(record: dict[str, Any]) -> str:
    """SHA-256 of a record's canonical JSON: the next record's ``previous_sha256``."""
    return canonical_digest(record)


@dataclass(frozen=True)
class SignedLog:
    """A signed, hash-chained log at ``path``, checked against ``verify_key``.

    ``name`` ("custodian ledger") and ``signer`` ("this custodian's key") word the
    messages; ``remedy`` says what to do about a broken log; ``error`` builds the
    caller's exception type from a message.
    """

    path: Path
    verify_key: CompositeVerifyKey
    context: bytes
    error: ErrorFactory
    name: str
    signer: str
    remedy: str

    def records(self) -> list[dict[str, Any]]:
        """Every record, after checking each signature and the hash chain."""
        if not self.path.exists():
            return []
        records: list[dict[str, Any]] = []
        previous = GENESIS
        for number, line in enumerate(self.path.read_bytes().splitlines(), start=1):
            record = self._verified_line(line, number)
            if record.get(PREVIOUS_FIELD) != previous:
                raise self.error(
                    f"{self.name} {self.path} line {number} does not follow line "
                    f"{number - 1} (hash chain broken): a record was removed, reordered or "
                    f"edited. {self.remedy}"
                )
            previous = record_digest(record)
            records.append(record)
        return records

    def verify(self, expected_head: LogHead | None = None) -> LogHead:
        """Check the whole log (and, given ``expected_head``, that nothing was cut off)."""
        records = self.records()
        head = head_of(records)
        if expected_head is not None and head != expected_head:
            raise self.error(
                f"{self.name} {self.path} ends at record {head.count} ({head.digest[:16]}…), "
                f"not at the recorded head, record {expected_head.count} "
                f"({expected_head.digest[:16]}…): records were removed from the end or the "
                f"log was rolled back. {self.remedy}"
            )
        return head

    def _verified_line(self, line: bytes, number: int) -> dict[str, Any]:
        try:
            document = parse_json_object(line, what=f"{self.name} line {number}")
            record = document["record"]
            signature = bytes.fromhex(str(document["signature"]))
            if not isinstance(record, dict) or set(document) != {"record", "signature"}:
                raise TypeError("not a {record, signature} object")
        except (CodecError, KeyError, TypeError, ValueError) as exc:
            raise self.error(
                f"{self.name} {self.path} line {number} is malformed ({exc}). {self.remedy}"
            ) from exc
        try:
            self.verify_key.verify(canonical_json(record), signature, self.context)
        except SignatureError as exc:
            raise self.error(
                f"{self.name} {self.path} line {number} is not signed by {self.signer}; it "
                f"was altered, forged or written with another key. {self.remedy}"
            ) from exc
        return record

    def append(self, signer: CompositeSigner, record: dict[str, Any]) -> dict[str, Any]:
        """Chain ``record`` after the current last record, sign it and append it.

        ``record`` must not set ``previous_sha256``; the stored record is returned.
        """
        if PREVIOUS_FIELD in record:
            raise ValueError(f"{PREVIOUS_FIELD} is set by the log, not by the caller")
        chained = {**record, PREVIOUS_FIELD: head_of(self.records()).digest}
        line = canonical_json(
            {
                "record": chained,
                "signature": signer.sign(canonical_json(chained), self.context).hex(),
            }
        )
        existing = self.path.read_bytes() if self.path.exists() else b""
        ensure_directory(self.path.parent)
        atomic_write_bytes(self.path, existing + line + b"\n")
        return chained


def head_of(records: list[dict[str, Any]]) -> LogHead:
    """The head of a verified record list."""
    return LogHead(len(records), record_digest(records[-1]) if records else GENESIS)
