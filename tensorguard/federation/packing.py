"""Packing a flat float vector into CKKS ciphertexts, and the wire format for them.

Values are batched N/2 per ciphertext (every CKKS slot used), so a vector of ``n``
values becomes ``ceil(n / (N/2))`` ciphertexts. Each chunk is one TenSEAL
``CKKSVector`` holding exactly one ciphertext at the data level.

Wire format (all integers big-endian)::

    b"TGCV" | version u8 = 1 | length u64 | chunk_count u32 |
    chunk_count x ( chunk_len u32 | TenSEAL CKKSVector serialisation )

Loading validates every chunk against the federation parameters: it must parse under
the context (SEAL checks the ciphertext's metadata and coefficient ranges), hold the
expected number of values, and, when inspected, be one ciphertext at the data level of
this context (same ``parms_id``), at the federation scale and not transparent.
Anything else is a :class:`CiphertextError`, so a malformed update is refused before
it is summed.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import tenseal as ts

from tensorguard.codec import FrameError, FrameReader, FrameWriter
from tensorguard.federation.errors import CiphertextError, ContextError, EncodingCapacityError
from tensorguard.federation.layout import FloatVector
from tensorguard.federation.params import FederationParams

MAGIC = b"TGCV"
VERSION = 1
MAX_CHUNK_BYTES = 64 * 1024 * 1024


@dataclass(frozen=True)
class EncryptedVector:
    """A float vector encrypted as CKKS chunks of N/2 values each."""

    chunks: tuple[ts.CKKSVector, ...]
    length: int

    @property
    def ciphertext_count(self) -> int:
        """Number of CKKS ciphertexts."""
        return len(self.chunks)

    def to_bytes(self) -> bytes:
        """Serialise in the documented wire format."""
        writer = FrameWriter(MAGIC, VERSION).uint(self.length, 8).uint(len(self.chunks), 4)
        for chunk in self.chunks:
            data: bytes = chunk.serialize()
            writer.frame(data, length_size=4)
        return writer.to_bytes()

    def __add__(self, other: EncryptedVector) -> EncryptedVector:
        """Slot-wise homomorphic sum (a new vector; operands are unchanged)."""
        if self.length != other.length or len(self.chunks) != len(other.chunks):
            raise CiphertextError(
                f"cannot add encrypted vectors of {self.length} and {other.length} values"
            )
        try:
            summed = tuple(a + b for a, b in zip(self.chunks, other.chunks, strict=True))
        except (ValueError, RuntimeError, TypeError) as exc:
            raise CiphertextError(f"homomorphic addition failed: {exc}") from exc
        return EncryptedVector(summed, self.length)


def chunk_lengths(length: int, slot_count: int) -> list[int]:
    """How many values each ciphertext holds for a vector of ``length`` values."""
    if length <= 0:
        raise CiphertextError("cannot pack an empty vector")
    full, rest = divmod(length, slot_count)
    return [slot_count] * full + ([rest] if rest else [])


def encrypt_vector(
    values: FloatVector, context: ts.Context, params: FederationParams
) -> EncryptedVector:
    """Encrypt ``values`` under the (public) ``context``, N/2 values per ciphertext.

    Raises :class:`EncodingCapacityError` if any |value| exceeds the per-site bound
    that keeps a sum of ``params.max_sites`` updates decodable.
    """
    if values.ndim != 1:
        raise CiphertextError(f"expected a flat vector, got shape {values.shape}")
    if not np.all(np.isfinite(values)):
        raise EncodingCapacityError("the update contains NaN or infinite values")
    peak = float(np.max(np.abs(values))) if values.size else 0.0
    bound = params.site_value_bound
    if peak > bound:
        raise EncodingCapacityError(
            f"the weighted update has a value of magnitude {peak:.3g}, above the per-site "
            f"CKKS bound {bound:.3g} (scale 2^{params.scale_bits}, "
            f"{params.data_modulus_bits}-bit data modulus, {params.max_sites} sites); "
            "lower the clip norm or the weight, or choose a smaller scale at the ceremony"
        )
    chunks: list[ts.CKKSVector] = []
    offset = 0
    for count in chunk_lengths(values.size, params.slot_count):
        chunks.append(ts.ckks_vector(context, values[offset : offset + count].tolist()))
        offset += count
    return EncryptedVector(tuple(chunks), int(values.size))


def decrypt_vector(encrypted: EncryptedVector, secret_context: ts.Context) -> FloatVector:
    """Decrypt with a context that holds the secret key."""
    if not secret_context.is_private():
        raise ContextError("decryption needs the custodian's secret context")
    parts: list[list[float]] = []
    for chunk in encrypted.chunks:
        chunk.link_context(secret_context)
        parts.append(chunk.decrypt())
    return np.concatenate([np.asarray(part, dtype=np.float64) for part in parts])


def load_encrypted_vector(
    data: bytes | memoryview,
    context: ts.Context,
    params: FederationParams,
    expected_length: int,
    *,
    inspect_ciphertexts: bool = True,
) -> EncryptedVector:
    """Parse and validate the wire format against ``context`` and ``params``.

    SEAL checks every ciphertext's metadata and coefficients against the context when
    it loads it. ``inspect_ciphertexts`` additionally reads each ciphertext's level,
    scale, size and transparency, which copies it; a caller that adds the vector to
    an already inspected one may skip this, because SEAL refuses to add ciphertexts
    whose level or scale differ.
    """
    try:
        return _read_encrypted_vector(
            FrameReader(data, magic=MAGIC, version=VERSION, what="encrypted payload"),
            context,
            params,
            expected_length,
            inspect_ciphertexts,
        )
    except FrameError as exc:
        raise CiphertextError(str(exc)) from exc


def _read_encrypted_vector(
    reader: FrameReader,
    context: ts.Context,
    params: FederationParams,
    expected_length: int,
    inspect_ciphertexts: bool,
) -> EncryptedVector:
    length = reader.uint(8, "value count")
    count = reader.uint(4, "ciphertext count")
    if length != expected_length:
        raise CiphertextError(
            f"encrypted payload holds {length} values, the layout has {expected_length}"
        )
    expected_counts = chunk_lengths(length, params.slot_count)
    if count != len(expected_counts):
        raise CiphertextError(
            f"encrypted payload has {count} ciphertexts, {len(expected_counts)} expected"
        )
    first_parms_id = context.seal_context().data.first_parms_id()
    chunks: list[ts.CKKSVector] = []
    for index, expected_count in enumerate(expected_counts):
        chunk_bytes = reader.frame(
            length_size=4, max_bytes=MAX_CHUNK_BYTES, field=f"ciphertext chunk {index}"
        )
        chunk = _load_chunk(chunk_bytes, context, index)
        if chunk.size() != expected_count:
            raise CiphertextError(
                f"ciphertext chunk {index} holds {chunk.size()} values, {expected_count} expected"
            )
        if inspect_ciphertexts:
            _inspect_chunk(chunk, index, first_parms_id, params)
        chunks.append(chunk)
    reader.finish()
    return EncryptedVector(tuple(chunks), length)


def _load_chunk(data: bytes, context: ts.Context, index: int) -> ts.CKKSVector:
    try:
        return ts.ckks_vector_from(context, data)
    except (ValueError, RuntimeError, TypeError) as exc:
        raise CiphertextError(
            f"ciphertext chunk {index} does not parse under the federation context "
            f"({type(exc).__name__})"
        ) from exc


def sole_ciphertext(chunk: ts.CKKSVector, what: str) -> Any:
    """The one SEAL ciphertext ``chunk`` holds; :class:`CiphertextError` if it holds more.

    ``what`` names the chunk in the message (e.g. ``"ciphertext chunk 3"``).
    """
    ciphertexts = chunk.ciphertext()
    if len(ciphertexts) != 1:
        raise CiphertextError(f"{what} holds {len(ciphertexts)} ciphertexts, expected one")
    return ciphertexts[0]


def _inspect_chunk(
    chunk: ts.CKKSVector,
    index: int,
    first_parms_id: Sequence[int],
    params: FederationParams,
) -> None:
    ciphertext = sole_ciphertext(chunk, f"ciphertext chunk {index}")
    if (
        ciphertext.size() < 2
        or ciphertext.poly_modulus_degree() != params.poly_modulus_degree
        or list(ciphertext.parms_id()) != list(first_parms_id)
        or not math.isclose(ciphertext.scale, params.scale, rel_tol=0.0, abs_tol=0.0)
    ):
        raise CiphertextError(
            f"ciphertext chunk {index} is not a ciphertext at the federation's data level and scale"
        )
    if ciphertext.is_transparent():
        raise CiphertextError(f"ciphertext chunk {index} is transparent (not encrypted)")
