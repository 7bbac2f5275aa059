"""The signed envelope that carries one site's encrypted update.

Wire format (integers big-endian)::

    b"TGFU" | version u8 = 1
    | header_len u32 | header (RFC 8785 canonical JSON object, at most 4 MiB)
    | signature_len u32 | composite ML-DSA-65+Ed25519 signature over the header bytes
    | payload_len u64 | payload (the packed CKKS ciphertexts, see ``packing``)

The signature is made with context :data:`SIGNATURE_CONTEXT` over the exact header
bytes; the header binds the payload through its SHA-256, so one signature covers
everything. Header fields (see :class:`EnvelopeHeader`): format, round id, site id,
base-model digest, reference-adapter digest, public-context digest, tensor layout,
weight and the round's maximum site weight, clip norm, DP report (or null), payload
digest, size and ciphertext count, a 128-bit random nonce, the creation time (RFC 3339,
UTC) and the signer's key fingerprint.

Parsing never trusts the header before the signature verifies, except to read the
claimed site id in order to look up that site's registered key.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from tensorguard.codec import (
    CodecError,
    FrameError,
    FrameReader,
    FrameWriter,
    canonical_json,
    parse_json_object,
)
from tensorguard.crypto import CompositeSigner, CompositeVerifyKey, SignatureError
from tensorguard.federation._errors import EnvelopeError, LayoutError
from tensorguard.federation._layout import TensorLayout

MAGIC = b"TGFU"
VERSION = 1
HEADER_FORMAT = "tensorguard.federation.site-update/v1"
SIGNATURE_CONTEXT = b"tensorguard/federation/site-update/v1"
MAX_HEADER_BYTES = 4 * 1024 * 1024
MAX_SIGNATURE_BYTES = 16 * 1024


@dataclass(frozen=True)
class EnvelopeHeader:
    """Everything a site signs about its update."""

    round_id: str
    site_id: str
    base_model_digest: str
    reference_digest: str
    public_context_sha256: str
    layout: TensorLayout
    weight: float
    max_site_weight: float
    clip_norm: float
    dp: dict[str, Any] | None
    payload_sha256: str
    payload_bytes: int
    ciphertext_count: int
    nonce: str
    created_at: datetime
    signer_fingerprint: str

    def to_bytes(self) -> bytes:
        """RFC 8785 canonical JSON of the header (the bytes that are signed)."""
        document = {
            "format": HEADER_FORMAT,
            "round_id": self.round_id,
            "site_id": self.site_id,
            "base_model_digest": self.base_model_digest,
            "reference_digest": self.reference_digest,
            "public_context_sha256": self.public_context_sha256,
            "layout": self.layout.to_json(),
            "weight": self.weight,
            "max_site_weight": self.max_site_weight,
            "clip_norm": self.clip_norm,
            "dp": self.dp,
            "payload": {
                "sha256": self.payload_sha256,
                "bytes": self.payload_bytes,
                "ciphertexts": self.ciphertext_count,
            },
            "nonce": self.nonce,
            "created_at": _format_time(self.created_at),
            "signer_fingerprint": self.signer_fingerprint,
        }
        try:
            return canonical_json(document)
        except CodecError as exc:
            raise EnvelopeError(f"envelope header cannot be encoded: {exc}") from exc

    @classmethod
    def from_bytes(cls, data: bytes) -> EnvelopeHeader:
        """Parse and type-check a header (does not verify anything cryptographic)."""
        document = _strict_json(data)
        try:
            if document["format"] != HEADER_FORMAT:
                raise EnvelopeError(f"envelope header format {document['format']!r} unknown")
            payload = _as_dict(document["payload"], "payload")
            dp = document["dp"]
            if dp is not None and not isinstance(dp, dict):
                raise EnvelopeError("envelope header field dp must be an object or null")
            return cls(
                round_id=_as_str(document["round_id"], "round_id"),
                site_id=_as_str(document["site_id"], "site_id"),
                base_model_digest=_as_str(document["base_model_digest"], "base_model_digest"),
                reference_digest=_as_str(document["reference_digest"], "reference_digest"),
                public_context_sha256=_as_str(
                    document["public_context_sha256"], "public_context_sha256"
                ),
                layout=TensorLayout.from_json(_as_list(document["layout"], "layout")),
                weight=_as_float(document["weight"], "weight"),
                max_site_weight=_as_float(document["max_site_weight"], "max_site_weight"),
                clip_norm=_as_float(document["clip_norm"], "clip_norm"),
                dp=dp,
                payload_sha256=_as_str(payload["sha256"], "payload.sha256"),
                payload_bytes=_as_int(payload["bytes"], "payload.bytes"),
                ciphertext_count=_as_int(payload["ciphertexts"], "payload.ciphertexts"),
                nonce=_as_str(document["nonce"], "nonce"),
                created_at=_parse_time(_as_str(document["created_at"], "created_at")),
                signer_fingerprint=_as_str(document["signer_fingerprint"], "signer_fingerprint"),
            )
        except KeyError as exc:
            raise EnvelopeError(f"envelope header lacks field {exc.args[0]!r}") from exc
        except LayoutError as exc:
            raise EnvelopeError(f"envelope header layout is invalid: {exc}") from exc


@dataclass(frozen=True)
class SealedEnvelope:
    """A parsed but not yet verified envelope."""

    header_bytes: bytes
    signature: bytes
    payload: bytes | memoryview

    @property
    def digest(self) -> str:
        """Hex SHA-256 of the signed header: identifies this exact envelope."""
        return hashlib.sha256(self.header_bytes).hexdigest()

    def claimed_site_id(self) -> str:
        """The site id the (unverified) header claims; used only to pick a key."""
        document = _strict_json(self.header_bytes)
        site_id = document.get("site_id")
        if not isinstance(site_id, str):
            raise EnvelopeError("envelope header has no site_id")
        return site_id

    def verify(self, key: CompositeVerifyKey) -> EnvelopeHeader:
        """Verify the signature and payload digest; return the now-trusted header."""
        if not self.signature:
            raise EnvelopeError("envelope is unsigned")
        try:
            key.verify(self.header_bytes, self.signature, SIGNATURE_CONTEXT)
        except SignatureError as exc:
            raise EnvelopeError(f"envelope signature does not verify: {exc}") from exc
        header = EnvelopeHeader.from_bytes(self.header_bytes)
        if header.signer_fingerprint != key.fingerprint():
            raise EnvelopeError(
                "envelope names a different signer key than the one it verifies under"
            )
        if (
            len(self.payload) != header.payload_bytes
            or hashlib.sha256(self.payload).hexdigest() != header.payload_sha256
        ):
            raise EnvelopeError("envelope payload does not match the signed digest")
        return header

    def to_bytes(self) -> bytes:
        """Serialise in the documented wire format."""
        return (
            FrameWriter(MAGIC, VERSION)
            .frame(self.header_bytes, length_size=4)
            .frame(self.signature, length_size=4)
            .frame(self.payload, length_size=8)
            .to_bytes()
        )

    @classmethod
    def from_bytes(cls, data: bytes) -> SealedEnvelope:
        """Parse the framing strictly (lengths, limits, no trailing bytes).

        The payload is a read-only view into ``data`` (no copy of the ciphertexts).
        """
        try:
            reader = FrameReader(data, magic=MAGIC, version=VERSION, what="site-update envelope")
            header_bytes = reader.frame(length_size=4, max_bytes=MAX_HEADER_BYTES, field="header")
            signature = reader.frame(
                length_size=4, max_bytes=MAX_SIGNATURE_BYTES, field="signature"
            )
            payload = reader.frame_view(length_size=8, max_bytes=None, field="payload")
            reader.finish()
        except FrameError as exc:
            raise EnvelopeError(str(exc)) from exc
        return cls(header_bytes, signature, payload)


def seal_envelope(
    header: EnvelopeHeader, payload: bytes | memoryview, signer: CompositeSigner
) -> bytes:
    """Sign ``header`` (which must bind ``payload``) and frame the envelope."""
    if header.payload_sha256 != hashlib.sha256(payload).hexdigest() or header.payload_bytes != len(
        payload
    ):
        raise EnvelopeError("the header does not bind this payload (digest or size differ)")
    if header.signer_fingerprint != signer.public_key().fingerprint():
        raise EnvelopeError("the header names a different key than the signer's")
    header_bytes = header.to_bytes()
    signature = signer.sign(header_bytes, SIGNATURE_CONTEXT)
    return SealedEnvelope(header_bytes, signature, payload).to_bytes()


def _strict_json(data: bytes) -> dict[str, Any]:
    try:
        return parse_json_object(data, what="envelope header")
    except CodecError as exc:
        raise EnvelopeError(str(exc)) from exc


def _as_str(value: object, name: str) -> str:
    if not isinstance(value, str):
        raise EnvelopeError(f"envelope header field {name} must be a string")
    return value


def _as_int(value: object, name: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise EnvelopeError(f"envelope header field {name} must be a non-negative integer")
    return value


def _as_float(value: object, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise EnvelopeError(f"envelope header field {name} must be a finite number")
    return float(value)


def _as_dict(value: object, name: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise EnvelopeError(f"envelope header field {name} must be an object")
    return value


def _as_list(value: object, name: str) -> list[Any]:
    if not isinstance(value, list):
        raise EnvelopeError(f"envelope header field {name} must be a list")
    return value


def _format_time(moment: datetime) -> str:
    if moment.tzinfo is None:
        raise EnvelopeError("envelope times must be timezone-aware")
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _parse_time(text: str) -> datetime:
    try:
        return datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)
    except ValueError as exc:
        raise EnvelopeError(f"envelope created_at {text!r} is not RFC 3339 UTC") from exc
