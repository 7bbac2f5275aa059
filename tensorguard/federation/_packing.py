"""Packing a flat float vector into CKKS ciphertexts, and the wire format for them.

A CKKS ciphertext of ring degree N has N/2 slots, and each slot holds a complex number.
Two packings (:class:`Packing`; the round spec fixes which one a round uses):

``complex`` (the default for new rounds)
    Two real values per slot: values ``2j`` and ``2j + 1`` of a chunk are the real and
    imaginary parts of slot ``j``, encoded with SEAL's complex CKKS encoder through
    ``tenseal.sealapi``. A vector of ``n`` values becomes ``ceil(n / N)`` ciphertexts,
    half as many as with ``real``, so the update is half the size and the aggregator
    adds half as many ciphertexts. Slot-wise addition adds real and imaginary parts
    independently, so the sum of packed vectors is the packing of the sum. Decryption
    decodes the complex slots and reads both parts back (an odd-length chunk leaves the
    last imaginary part zero). The decryption error of each part has the same standard
    deviation as the real part alone (the error polynomial's evaluation at a slot is a
    complex number whose real and imaginary parts have equal variance), so the
    fixed-point grid of :mod:`tensorguard.federation._fixed_point` applies unchanged.
``real`` (rounds whose signed spec predates packing: their spec has no packing field)
    One value per slot, TenSEAL's real ``CKKSVector`` encoding: ``ceil(n / (N/2))``
    ciphertexts.

Every chunk is one TenSEAL ``CKKSVector`` holding exactly one ciphertext at the data
level, so homomorphic addition, masking (:mod:`tensorguard.federation._masking`, which
adds to ``c0`` whatever the encoding) and validation are the same for both packings.
A complex chunk's ``CKKSVector`` size is the number of slots it uses.

Capacity: a plaintext polynomial's coefficients are at most ``Δ · max |slot|`` in
magnitude, so what must stay below the per-site bound is the modulus of each slot,
``|x + iy| = sqrt(x² + y²)`` for complex packing (``|x|`` for real). A delta clipped
to L2 norm ``C`` has every such pair of norm at most ``C``, so the clip-norm check of
:meth:`~tensorguard.federation._params.FederationParams.check_clip_norm` still
guarantees that an honest site can encode its update.

Wire format (all integers big-endian)::

    b"TGCV" | version u8 | length u64 | chunk_count u32 |
    chunk_count x ( chunk_len u32 | TenSEAL CKKSVector serialisation )

The version byte names the packing: 1 for ``real`` (the original format, unchanged),
2 for ``complex``. A payload whose version is not the packing the round spec names is
refused with a :class:`CiphertextError` that says which packing each side used.

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
from enum import StrEnum
from typing import Any

import numpy as np
import tenseal as ts
import tenseal.sealapi as sealapi

from tensorguard.codec import FrameError, FrameReader, FrameWriter
from tensorguard.federation._errors import CiphertextError, ContextError, EncodingCapacityError
from tensorguard.federation._layout import FloatVector
from tensorguard.federation._params import FederationParams
from tensorguard.federation._seal_format import ciphertext_saver, ckks_vector_proto

MAGIC = b"TGCV"
MAX_CHUNK_BYTES = 64 * 1024 * 1024


class Packing(StrEnum):
    """How many real values one CKKS slot carries (see the module docstring)."""

    REAL = "real"
    COMPLEX = "complex"

    @property
    def wire_version(self) -> int:
        """The TGCV version byte of this packing."""
        return _WIRE_VERSIONS[self]

    def values_per_ciphertext(self, params: FederationParams) -> int:
        """How many real values one ciphertext holds: N/2 (real) or N (complex)."""
        return params.slot_count * (2 if self is Packing.COMPLEX else 1)


_WIRE_VERSIONS = {Packing.REAL: 1, Packing.COMPLEX: 2}
VERSION = Packing.REAL.wire_version
"""The original (real-packing) wire version, kept for readers of version-1 payloads."""


@dataclass(frozen=True)
class EncryptedVector:
    """A float vector encrypted as CKKS chunks, one ciphertext each, in one packing."""

    chunks: tuple[ts.CKKSVector, ...]
    length: int
    packing: Packing = Packing.COMPLEX

    @property
    def ciphertext_count(self) -> int:
        """Number of CKKS ciphertexts."""
        return len(self.chunks)

    def to_bytes(self) -> bytes:
        """Serialise in the documented wire format."""
        writer = FrameWriter(MAGIC, self.packing.wire_version)
        writer.uint(self.length, 8).uint(len(self.chunks), 4)
        for chunk in self.chunks:
            data: bytes = chunk.serialize()
            writer.frame(data, length_size=4)
        return writer.to_bytes()

    def _check_addable(self, other: EncryptedVector) -> None:
        if self.length != other.length or len(self.chunks) != len(other.chunks):
            raise CiphertextError(
                f"cannot add encrypted vectors of {self.length} and {other.length} values"
            )
        if self.packing is not other.packing:
            raise CiphertextError(
                f"cannot add a {self.packing}-packed vector to a {other.packing}-packed one"
            )

    def __add__(self, other: EncryptedVector) -> EncryptedVector:
        """Slot-wise homomorphic sum (a new vector; operands are unchanged)."""
        self._check_addable(other)
        try:
            summed = tuple(a + b for a, b in zip(self.chunks, other.chunks, strict=True))
        except (ValueError, RuntimeError, TypeError) as exc:
            raise CiphertextError(f"homomorphic addition failed: {exc}") from exc
        return EncryptedVector(summed, self.length, self.packing)

    def add_in_place(self, other: EncryptedVector) -> None:
        """Add ``other`` into this vector's own chunks (no new ciphertexts).

        For a running sum whose chunks nobody else holds. If SEAL refuses chunk ``k``
        (another level or scale), the ``k`` chunks already added are restored by
        subtracting the same ciphertexts, which is exact modulo the primes, so the sum
        is unchanged when :class:`CiphertextError` is raised.
        """
        self._check_addable(other)
        added = 0
        try:
            for total, addend in zip(self.chunks, other.chunks, strict=True):
                total.add_(addend)
                added += 1
        except (ValueError, RuntimeError, TypeError) as exc:
            for total, addend in zip(self.chunks[:added], other.chunks[:added], strict=True):
                total.sub_(addend)
            raise CiphertextError(f"homomorphic addition failed: {exc}") from exc


def chunk_lengths(length: int, slot_count: int) -> list[int]:
    """How many values each ciphertext holds for a vector of ``length`` values, when one
    ciphertext holds ``slot_count`` of them (see :meth:`Packing.values_per_ciphertext`)."""
    if length <= 0:
        raise CiphertextError("cannot pack an empty vector")
    full, rest = divmod(length, slot_count)
    return [slot_count] * full + ([rest] if rest else [])


def chunk_sizes(length: int, params: FederationParams, packing: Packing) -> list[int]:
    """The ``CKKSVector`` size of each chunk: its values (real) or its slots (complex)."""
    counts = chunk_lengths(length, packing.values_per_ciphertext(params))
    if packing is Packing.COMPLEX:
        return [(count + 1) // 2 for count in counts]
    return counts


def _check_encodable(values: FloatVector, params: FederationParams, packing: Packing) -> None:
    """Refuse NaN/inf and any slot whose modulus exceeds the per-site bound."""
    if values.ndim != 1:
        raise CiphertextError(f"expected a flat vector, got shape {values.shape}")
    if not np.all(np.isfinite(values)):
        raise EncodingCapacityError("the update contains NaN or infinite values")
    if packing is Packing.COMPLEX:
        padded = np.concatenate([values, np.zeros(values.size % 2)])
        magnitudes = np.hypot(padded[0::2], padded[1::2])
    else:
        magnitudes = np.abs(values)
    peak = float(np.max(magnitudes)) if values.size else 0.0
    bound = params.site_value_bound
    if peak > bound:
        what = "a slot (pair of values) of magnitude" if packing is Packing.COMPLEX else "a value"
        raise EncodingCapacityError(
            f"the weighted update has {what} {peak:.3g}, above the per-site "
            f"CKKS bound {bound:.3g} (scale 2^{params.scale_bits}, "
            f"{params.data_modulus_bits}-bit data modulus, {params.max_sites} sites); "
            "lower the clip norm or the weight, or choose a smaller scale at the ceremony"
        )


def encrypt_vector(
    values: FloatVector,
    context: ts.Context,
    params: FederationParams,
    packing: Packing = Packing.COMPLEX,
) -> EncryptedVector:
    """Encrypt ``values`` under the (public) ``context`` in ``packing``.

    Raises :class:`EncodingCapacityError` if any slot's magnitude exceeds the per-site
    bound that keeps a sum of ``params.max_sites`` updates decodable.
    """
    values = np.asarray(values, dtype=np.float64)
    _check_encodable(values, params, packing)
    if packing is Packing.COMPLEX:
        return _encrypt_complex(values, context, params)
    chunks: list[ts.CKKSVector] = []
    offset = 0
    for count in chunk_lengths(values.size, params.slot_count):
        chunks.append(ts.ckks_vector(context, values[offset : offset + count].tolist()))
        offset += count
    return EncryptedVector(tuple(chunks), int(values.size), Packing.REAL)


def _encrypt_complex(
    values: FloatVector, context: ts.Context, params: FederationParams
) -> EncryptedVector:
    """Complex packing: SEAL's complex encoder and public-key encryptor, one ciphertext
    per ``N`` values, each wrapped as a TenSEAL ``CKKSVector``.

    ``sealapi`` writes a ciphertext only to a file path, so each one passes through an
    anonymous in-memory file (:func:`~tensorguard.federation._seal_format.ciphertext_saver`)
    and is loaded back with ``ts.ckks_vector_from``, which validates it like any
    received chunk.
    """
    seal = context.seal_context().data
    encoder = sealapi.CKKSEncoder(seal)
    encryptor = sealapi.Encryptor(seal, context.public_key().data)
    per_chunk = Packing.COMPLEX.values_per_ciphertext(params)
    chunks: list[ts.CKKSVector] = []
    with ciphertext_saver() as save:
        for offset in range(0, values.size, per_chunk):
            part = values[offset : offset + per_chunk]
            if part.size % 2:
                part = np.append(part, 0.0)
            slots = np.ascontiguousarray(part).view(np.complex128)
            plaintext = sealapi.Plaintext()
            ciphertext = sealapi.Ciphertext()
            try:
                encoder.encode(slots.tolist(), params.scale, plaintext)
                encryptor.encrypt(plaintext, ciphertext)
                saved = save(ciphertext)
            except (ValueError, RuntimeError, TypeError) as exc:
                raise CiphertextError(f"SEAL could not encrypt chunk {len(chunks)}: {exc}") from exc
            proto = ckks_vector_proto(slots.size, saved, params.scale)
            chunks.append(_load_chunk(proto, context, len(chunks)))
    return EncryptedVector(tuple(chunks), int(values.size), Packing.COMPLEX)


def decrypt_vector(encrypted: EncryptedVector, secret_context: ts.Context) -> FloatVector:
    """Decrypt with a context that holds the secret key (in the vector's packing)."""
    if not secret_context.is_private():
        raise ContextError("decryption needs the custodian's secret context")
    if encrypted.packing is Packing.COMPLEX:
        return _decrypt_complex(encrypted, secret_context)
    parts: list[list[float]] = []
    for chunk in encrypted.chunks:
        chunk.link_context(secret_context)
        parts.append(chunk.decrypt())
    return np.concatenate([np.asarray(part, dtype=np.float64) for part in parts])


def _decrypt_complex(encrypted: EncryptedVector, secret_context: ts.Context) -> FloatVector:
    seal = secret_context.seal_context().data
    encoder = sealapi.CKKSEncoder(seal)
    decryptor = sealapi.Decryptor(seal, secret_context.secret_key().data)
    decoded = np.empty(2 * encoder.slot_count() * len(encrypted.chunks), dtype=np.float64)
    width = 2 * encoder.slot_count()
    for index, chunk in enumerate(encrypted.chunks):
        plaintext = sealapi.Plaintext()
        try:
            decryptor.decrypt(sole_ciphertext(chunk, f"ciphertext chunk {index}"), plaintext)
            slots = encoder.decode_complex(plaintext)
        except (ValueError, RuntimeError, TypeError) as exc:
            raise CiphertextError(f"SEAL could not decrypt chunk {index}: {exc}") from exc
        decoded[index * width : (index + 1) * width] = np.asarray(slots, dtype=np.complex128).view(
            np.float64
        )
    return decoded[: encrypted.length].copy()


def load_encrypted_vector(
    data: bytes | memoryview,
    context: ts.Context,
    params: FederationParams,
    expected_length: int,
    *,
    packing: Packing = Packing.COMPLEX,
    inspect_ciphertexts: bool = True,
) -> EncryptedVector:
    """Parse and validate the wire format against ``context``, ``params`` and the
    round's ``packing``.

    SEAL checks every ciphertext's metadata and coefficients against the context when
    it loads it. ``inspect_ciphertexts`` additionally reads each ciphertext's level,
    scale, size and transparency, which copies it; a caller that adds the vector to
    an already inspected one may skip this, because SEAL refuses to add ciphertexts
    whose level or scale differ.
    """
    refuse_other_packing(data, packing)
    try:
        return _read_encrypted_vector(
            FrameReader(data, magic=MAGIC, version=packing.wire_version, what="encrypted payload"),
            context,
            params,
            expected_length,
            packing,
            inspect_ciphertexts,
        )
    except FrameError as exc:
        raise CiphertextError(str(exc)) from exc


def refuse_other_packing(data: bytes | memoryview, packing: Packing) -> None:
    """Refuse, with both packings named, a payload written in another packing."""
    head = bytes(memoryview(data)[: len(MAGIC) + 1])
    if len(head) <= len(MAGIC) or head[: len(MAGIC)] != MAGIC:
        return  # FrameReader reports the bad magic or truncation
    found = {version: name for name, version in _WIRE_VERSIONS.items()}.get(head[-1])
    if found is not None and found is not packing:
        raise CiphertextError(
            f"the encrypted payload is {found}-packed (version {found.wire_version}), but the "
            f"round spec says {packing}-packed; the site and this reader follow different "
            "round specs. Rebuild the update from the round's signed spec"
        )


def _read_encrypted_vector(
    reader: FrameReader,
    context: ts.Context,
    params: FederationParams,
    expected_length: int,
    packing: Packing,
    inspect_ciphertexts: bool,
) -> EncryptedVector:
    length = reader.uint(8, "value count")
    count = reader.uint(4, "ciphertext count")
    if length != expected_length:
        raise CiphertextError(
            f"encrypted payload holds {length} values, the layout has {expected_length}"
        )
    expected_sizes = chunk_sizes(length, params, packing)
    if count != len(expected_sizes):
        raise CiphertextError(
            f"encrypted payload has {count} ciphertexts, {len(expected_sizes)} expected"
        )
    unit = "slots" if packing is Packing.COMPLEX else "values"
    first_parms_id = context.seal_context().data.first_parms_id()
    chunks: list[ts.CKKSVector] = []
    for index, expected_size in enumerate(expected_sizes):
        chunk_bytes = reader.frame(
            length_size=4, max_bytes=MAX_CHUNK_BYTES, field=f"ciphertext chunk {index}"
        )
        chunk = _load_chunk(chunk_bytes, context, index)
        if chunk.size() != expected_size:
            raise CiphertextError(
                f"ciphertext chunk {index} holds {chunk.size()} {unit}, {expected_size} expected"
            )
        if inspect_ciphertexts:
            _inspect_chunk(chunk, index, first_parms_id, params)
        chunks.append(chunk)
    reader.finish()
    return EncryptedVector(tuple(chunks), length, packing)


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
