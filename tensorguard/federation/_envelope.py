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
UTC) and the signer's key fingerprint. The header's schema is the strict pydantic model
:class:`_HeaderDocument`: a missing, unknown or mistyped field is refused by name, both
when a header is parsed and before one is signed.

Parsing never trusts the header before the signature verifies, except to read the
claimed site id in order to look up that site's registered key.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Any, Literal, get_args

from pydantic import BeforeValidator, ConfigDict, Field, JsonValue

from tensorguard.codec import (
    MAX_SAFE_INTEGER,
    CodecError,
    FrameError,
    FrameReader,
    FrameWriter,
    Sha256Hex,
    StrictModel,
    canonical_json,
    parse_json_object,
    validate_model,
)
from tensorguard.crypto import CompositeSigner, CompositeVerifyKey, SignatureError
from tensorguard.federation._errors import EnvelopeError, LayoutError
from tensorguard.federation._layout import TensorLayout

MAGIC = b"TGFU"
VERSION = 1
HeaderFormat = Literal["tensorguard.federation.site-update/v1"]
HEADER_FORMAT: str = get_args(HeaderFormat)[0]
SIGNATURE_CONTEXT = b"tensorguard/federation/site-update/v1"
MAX_HEADER_BYTES = 4 * 1024 * 1024
MAX_SIGNATURE_BYTES = 16 * 1024
_TIME_FORMAT = "%Y-%m-%dT%H:%M:%S.%fZ"
_TIME_PATTERN = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}\.[0-9]{6}Z")
_WHAT = "envelope header"


def _layout_from_json(value: object) -> TensorLayout:
    """The header's ``[[name, [dim, ...]], ...]`` as a :class:`TensorLayout`."""
    if not isinstance(value, list):
        raise ValueError("must be an array of [name, [dims...]] entries")
    try:
        return TensorLayout.from_json(value)
    except LayoutError as exc:
        raise ValueError(str(exc)) from None


def _time_from_json(value: object) -> datetime:
    """The header's creation time, written by :func:`_format_time` (RFC 3339, UTC, µs)."""
    if not isinstance(value, str) or _TIME_PATTERN.fullmatch(value) is None:
        raise ValueError("must be an RFC 3339 UTC time such as 2026-01-31T12:00:00.000000Z")
    try:
        return datetime.strptime(value, _TIME_FORMAT).replace(tzinfo=UTC)
    except ValueError:
        raise ValueError("is not a valid date and time") from None


FiniteNumber = Annotated[float, Field(allow_inf_nan=False)]
Count = Annotated[int, Field(ge=0, le=MAX_SAFE_INTEGER)]


class _PayloadFields(StrictModel):
    """The header's ``payload`` object: what binds the ciphertexts to the signature."""

    sha256: Sha256Hex
    bytes: Count
    ciphertexts: Count


class _HeaderDocument(StrictModel):
    """The signed header exactly as it is on the wire (see the module docstring).

    Types only: whether the values suit a round (its id, digests, weights, DP rule) is
    the aggregator's check, which names the rule that was broken.
    """

    model_config = ConfigDict(arbitrary_types_allowed=True)

    format: HeaderFormat
    round_id: Annotated[str, Field(min_length=1)]
    site_id: Annotated[str, Field(min_length=1)]
    base_model_digest: Sha256Hex
    reference_digest: Sha256Hex
    public_context_sha256: Sha256Hex
    layout: Annotated[TensorLayout, BeforeValidator(_layout_from_json)]
    weight: FiniteNumber
    max_site_weight: FiniteNumber
    clip_norm: FiniteNumber
    dp: dict[str, JsonValue] | None
    payload: _PayloadFields
    nonce: Annotated[str, Field(pattern=r"^[0-9a-f]{32}$")]
    created_at: Annotated[datetime, BeforeValidator(_time_from_json)]
    signer_fingerprint: Sha256Hex


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
            validate_model(_HeaderDocument, document, what=_WHAT)
            return canonical_json(document)
        except CodecError as exc:
            raise EnvelopeError(f"envelope header cannot be encoded: {exc}") from exc

    @classmethod
    def from_bytes(cls, data: bytes) -> EnvelopeHeader:
        """Parse and type-check a header (does not verify anything cryptographic)."""
        document = _strict_json(data)
        try:
            parsed = validate_model(_HeaderDocument, document, what=_WHAT)
        except CodecError as exc:
            raise EnvelopeError(str(exc)) from None
        return cls(
            round_id=parsed.round_id,
            site_id=parsed.site_id,
            base_model_digest=parsed.base_model_digest,
            reference_digest=parsed.reference_digest,
            public_context_sha256=parsed.public_context_sha256,
            layout=parsed.layout,
            weight=parsed.weight,
            max_site_weight=parsed.max_site_weight,
            clip_norm=parsed.clip_norm,
            dp=parsed.dp,
            payload_sha256=parsed.payload.sha256,
            payload_bytes=parsed.payload.bytes,
            ciphertext_count=parsed.payload.ciphertexts,
            nonce=parsed.nonce,
            created_at=parsed.created_at,
            signer_fingerprint=parsed.signer_fingerprint,
        )


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


def _format_time(moment: datetime) -> str:
    if moment.tzinfo is None:
        raise EnvelopeError("envelope times must be timezone-aware")
    return moment.astimezone(UTC).strftime(_TIME_FORMAT)
