"""Property-based tests of the wire formats: parsers fail only with their own errors."""

from __future__ import annotations

import contextlib

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tensorguard.federation._aggregation import AggregationResult
from tensorguard.federation._envelope import EnvelopeHeader, SealedEnvelope
from tensorguard.federation._errors import CiphertextError, EnvelopeError, FederationError
from tensorguard.federation._layout import TensorLayout, tensors_digest
from tensorguard.federation._packing import encrypt_vector, load_encrypted_vector
from tests.federation.conftest import Federation

FAST = settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


@pytest.fixture(scope="module")
def envelope(fed: Federation) -> bytes:
    return fed.update("site-01", fed.spec("round-formats")).envelope


@FAST
@given(position=st.integers(min_value=0), flip=st.integers(min_value=1, max_value=255))
def test_any_flipped_byte_is_refused(
    fed: Federation, envelope: bytes, position: int, flip: int
) -> None:
    index = position % len(envelope)
    mutated = bytearray(envelope)
    mutated[index] ^= flip
    key = fed.site_keys["site-01"].public_key()
    with pytest.raises(EnvelopeError):
        SealedEnvelope.from_bytes(bytes(mutated)).verify(key)


@FAST
@given(data=st.binary(max_size=512))
def test_arbitrary_bytes_fail_with_format_errors(data: bytes) -> None:
    with pytest.raises(EnvelopeError):
        SealedEnvelope.from_bytes(data)
    with pytest.raises(EnvelopeError):
        EnvelopeHeader.from_bytes(data)
    with pytest.raises(FederationError):
        AggregationResult.from_bytes(data)


@FAST
@given(data=st.binary(max_size=256))
def test_arbitrary_header_json_fails_with_envelope_errors(data: bytes) -> None:
    with pytest.raises(EnvelopeError):
        EnvelopeHeader.from_bytes(b'{"format":' + data)


# The wire header (magic, version, value count, ciphertext count, first chunk length: 21
# bytes) and SEAL's own serialisation header after it (magic, header size, version,
# compression mode: 6 bytes) are checked on load.
CHECKED_PREFIX = 21 + 6


@pytest.fixture(scope="module")
def ciphertext(fed: Federation) -> bytes:
    context = fed.public.load_context()
    return encrypt_vector(np.ones(50), context, fed.public.params).to_bytes()


@FAST
@given(position=st.integers(min_value=0, max_value=CHECKED_PREFIX - 1), flip=st.integers(1, 255))
def test_corrupted_ciphertext_headers_are_refused(
    fed: Federation, ciphertext: bytes, position: int, flip: int
) -> None:
    data = bytearray(ciphertext)
    data[position] ^= flip
    with pytest.raises(CiphertextError):
        load_encrypted_vector(bytes(data), fed.public.load_context(), fed.public.params, 50)


@pytest.mark.parametrize("cut", [1, 100, 50_000])
def test_truncated_or_extended_ciphertexts_are_refused(
    fed: Federation, ciphertext: bytes, cut: int
) -> None:
    context = fed.public.load_context()
    with pytest.raises(CiphertextError):
        load_encrypted_vector(ciphertext[:-cut], context, fed.public.params, 50)
    with pytest.raises(CiphertextError):
        load_encrypted_vector(ciphertext + bytes(cut), context, fed.public.params, 50)


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(position=st.integers(min_value=0), flip=st.integers(min_value=1, max_value=255))
def test_coefficient_flips_fail_only_with_ciphertext_errors(
    fed: Federation, ciphertext: bytes, position: int, flip: int
) -> None:
    """A flip inside a coefficient can leave a well-formed ciphertext (SEAL cannot tell):
    the site's signature over the envelope refuses it before any parsing
    (test_any_flipped_byte_is_refused). Here only the error type is checked."""
    index = CHECKED_PREFIX + position % (len(ciphertext) - CHECKED_PREFIX)
    data = bytearray(ciphertext)
    data[index] ^= flip
    with contextlib.suppress(CiphertextError):
        load_encrypted_vector(bytes(data), fed.public.load_context(), fed.public.params, 50)


@given(
    shapes=st.lists(
        st.lists(st.integers(min_value=1, max_value=5), min_size=0, max_size=3),
        min_size=1,
        max_size=5,
    )
)
def test_layout_flatten_round_trip_and_digest(shapes: list[list[int]]) -> None:
    generator = torch.Generator().manual_seed(len(shapes))
    tensors = {
        f"t{i}.lora_A.weight": torch.randn(tuple(s), generator=generator)
        for i, s in enumerate(shapes)
    }
    layout = TensorLayout.from_tensors(tensors)
    flat = layout.flatten(tensors)
    assert flat.shape == (layout.numel,)
    restored = layout.unflatten(flat)
    assert all(torch.equal(restored[name], tensors[name]) for name in tensors)
    assert TensorLayout.from_json(layout.to_json()) == layout
    assert tensors_digest(restored) == tensors_digest(dict(reversed(list(tensors.items()))))
    changed = dict(tensors)
    first = next(iter(changed))
    changed[first] = changed[first] + 1.0
    assert tensors_digest(changed) != tensors_digest(tensors)
