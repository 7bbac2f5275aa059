"""The aggregator's running sum of encrypted updates, computed on the coefficients.

Adding two CKKS ciphertexts at the same level and scale adds their polynomials
coefficient by coefficient modulo each prime of the level; in NTT form too, since the
NTT is linear. That is all SEAL's ``add`` does, so :class:`CiphertextSum` does it in
numpy on the coefficients of the received bytes (:mod:`tensorguard.federation._seal_format`)
instead of building a TenSEAL object per chunk, and writes the sum as TGCV again.

Every chunk of every update is checked before anything of that update is added: the
wire framing and lengths (as :func:`~tensorguard.federation._packing.load_encrypted_vector`),
then the ciphertext as SEAL checks it on load (header, level, degree, primes, size,
NTT form, each coefficient below its prime) plus the federation's rules (the data
level, the federation scale, not transparent). A refused update raises
:class:`CiphertextError` and leaves the sum as it was. A chunk in an encoding the fast
reader does not implement (e.g. a zstd frame that really compressed, from a build
with smaller primes) sends its whole update through TenSEAL with full inspection; that
part of the sum is kept as TenSEAL ciphertexts and the two parts are added at the end.
"""

from __future__ import annotations

import numpy as np
import tenseal as ts

from tensorguard.codec import FrameError, FrameReader, FrameWriter
from tensorguard.federation._errors import CiphertextError
from tensorguard.federation._masking import mask_level
from tensorguard.federation._packing import (
    MAGIC,
    MAX_CHUNK_BYTES,
    EncryptedVector,
    Packing,
    chunk_sizes,
    load_encrypted_vector,
    refuse_other_packing,
)
from tensorguard.federation._params import FederationParams
from tensorguard.federation._seal_format import (
    CiphertextShape,
    UInt64Array,
    read_chunk,
    write_chunk_parts,
)


class CiphertextSum:
    """Slot-wise sum of TGCV payloads of ``length`` values in ``packing`` under
    ``context`` (a public context is enough)."""

    def __init__(
        self, context: ts.Context, params: FederationParams, length: int, packing: Packing
    ) -> None:
        """Prepare an empty sum; the context's level must be the one ``params`` make."""
        level = mask_level(context, params)
        self._context = context
        self._params = params
        self._length = length
        self._packing = packing
        self._shape = CiphertextShape(level.parms_id, level.primes, level.degree, params.scale)
        self._sizes = chunk_sizes(length, params, packing)
        self._moduli = np.array(level.primes, dtype=np.uint64).reshape(1, 1, -1, 1)
        # Values below q_max can be added this many times to a reduced sum before the
        # uint64 total could wrap: (pending + 1) * q_max <= 2^64.
        self._headroom = (1 << 64) // max(level.primes) - 1
        self._total: UInt64Array | None = None
        self._scratch: UInt64Array | None = None
        self._pending = 0
        self._fallback: EncryptedVector | None = None
        self.count = 0
        """Number of updates summed."""

    def add(self, payload: bytes | memoryview) -> None:
        """Check ``payload`` completely, then add it; :class:`CiphertextError` if it is
        refused (the sum is then unchanged)."""
        chunks = self._read(payload)
        if chunks is None:
            vector = load_encrypted_vector(
                payload,
                self._context,
                self._params,
                self._length,
                packing=self._packing,
                inspect_ciphertexts=True,
            )
            if self._fallback is None:
                self._fallback = vector
            else:
                self._fallback.add_in_place(vector)
        else:
            self._add_coefficients(chunks)
        self.count += 1

    def _read(self, payload: bytes | memoryview) -> UInt64Array | None:
        """Every chunk's coefficients (in the scratch array), or ``None`` if a chunk is
        in an encoding read only by TenSEAL."""
        refuse_other_packing(payload, self._packing)
        scratch = self._scratch_array()
        rows = scratch.reshape(len(self._sizes), -1)
        try:
            reader = FrameReader(
                payload, magic=MAGIC, version=self._packing.wire_version, what="encrypted payload"
            )
            length = reader.uint(8, "value count")
            count = reader.uint(4, "ciphertext count")
            if length != self._length:
                raise CiphertextError(
                    f"encrypted payload holds {length} values, the layout has {self._length}"
                )
            if count != len(self._sizes):
                raise CiphertextError(
                    f"encrypted payload has {count} ciphertexts, {len(self._sizes)} expected"
                )
            unit = "slots" if self._packing is Packing.COMPLEX else "values"
            for index, expected_size in enumerate(self._sizes):
                what = f"ciphertext chunk {index}"
                data = reader.frame_view(length_size=4, max_bytes=MAX_CHUNK_BYTES, field=what)
                size = read_chunk(data, self._shape, what, rows[index].data.cast("B"))
                if size is None:
                    return None
                if size != expected_size:
                    raise CiphertextError(f"{what} holds {size} {unit}, {expected_size} expected")
            reader.finish()
        except FrameError as exc:
            raise CiphertextError(str(exc)) from exc
        self._check_coefficients(scratch)
        return scratch

    def _scratch_array(self) -> UInt64Array:
        """The array one update is read into, reused (no new pages per update)."""
        if self._scratch is None:
            self._scratch = np.empty((len(self._sizes), *self._shape.coefficient_shape), "<u8")
        return self._scratch

    def _check_coefficients(self, chunks: UInt64Array) -> None:
        """What SEAL checks on load (each coefficient below its prime) and the
        federation's rule that a ciphertext is not transparent (``c1 = 0``)."""
        primes = np.array(self._shape.primes, dtype=np.uint64)
        if bool(np.any(chunks.max(axis=(0, 1, 3)) >= primes)):
            bad = np.any(chunks.max(axis=(1, 3)) >= primes, axis=1)
            raise CiphertextError(
                f"ciphertext chunk {int(np.argmax(bad))} has a coefficient that is not below "
                "its prime"
            )
        encrypted = chunks[:, 1].any(axis=(1, 2))
        if not bool(encrypted.all()):
            raise CiphertextError(
                f"ciphertext chunk {int(np.argmin(encrypted))} is transparent (not encrypted)"
            )

    def _add_coefficients(self, chunks: UInt64Array) -> None:
        if self._total is None:
            self._total, self._scratch = chunks, None
            return
        if self._pending >= self._headroom:
            self._reduce()
        np.add(self._total, chunks, out=self._total)
        self._pending += 1

    def _reduce(self) -> None:
        if self._total is not None and self._pending:
            np.remainder(self._total, self._moduli, out=self._total)
        self._pending = 0

    def to_bytes(self) -> bytes:
        """The sum as a TGCV payload (reduced coefficients, uncompressed SEAL chunks)."""
        if self.count == 0:
            raise CiphertextError("no encrypted update was added to the sum")
        self._reduce()
        if self._fallback is None:
            if self._total is None:
                raise CiphertextError("the sum holds no ciphertexts")
            return self._write(self._total)
        if self._total is None:
            return self._fallback.to_bytes()
        return (self._fallback + self._as_vector(self._total)).to_bytes()

    def _write(self, total: UInt64Array) -> bytes:
        writer = FrameWriter(MAGIC, self._packing.wire_version)
        writer.uint(self._length, 8).uint(len(self._sizes), 4)
        for coefficients, size in zip(total, self._sizes, strict=True):
            parts = write_chunk_parts(coefficients, size, self._shape)
            writer.uint(sum(len(part) for part in parts), 4)
            for part in parts:
                writer.raw(part)
        return writer.to_bytes()

    def _as_vector(self, total: UInt64Array) -> EncryptedVector:
        """The coefficient part of the sum as TenSEAL ciphertexts."""
        chunks: list[ts.CKKSVector] = []
        for index, (coefficients, size) in enumerate(zip(total, self._sizes, strict=True)):
            proto = b"".join(write_chunk_parts(coefficients, size, self._shape))
            try:
                chunks.append(ts.ckks_vector_from(self._context, proto))
            except (ValueError, RuntimeError, TypeError) as exc:
                raise CiphertextError(
                    f"SEAL refused the summed ciphertext chunk {index} ({type(exc).__name__})"
                ) from exc
        return EncryptedVector(tuple(chunks), self._length, self._packing)
