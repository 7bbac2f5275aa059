"""Site updates: clipping, weights, envelope binding (DP: test_distributed_dp.py)."""

from __future__ import annotations

import numpy as np
import pytest

from tensorguard.federation._envelope import EnvelopeHeader, SealedEnvelope
from tensorguard.federation._errors import (
    EnvelopeError,
    FederationError,
    LayoutError,
)
from tensorguard.federation._layout import TensorLayout
from tensorguard.federation._packing import decrypt_vector, load_encrypted_vector
from tensorguard.federation._round_spec import RoundSpec
from tensorguard.federation._site_update import SiteUpdateConfig, clip_l2, update_delta
from tests.federation.conftest import MAX_SITE_WEIGHT, Federation


def _decrypt_update(fed: Federation, envelope: bytes, spec: RoundSpec) -> np.ndarray:
    payload = SealedEnvelope.from_bytes(envelope).payload
    vector = load_encrypted_vector(
        payload, fed.secret.context, fed.public.params, spec.tensor_layout.numel
    )
    return decrypt_vector(vector, fed.secret.context)


def test_clip_l2() -> None:
    values = np.array([3.0, 4.0])
    assert np.allclose(clip_l2(values, 1.0), [0.6, 0.8])
    assert clip_l2(values, 10.0) is values
    with pytest.raises(FederationError, match="NaN"):
        clip_l2(np.array([np.nan]), 1.0)


def test_update_is_the_clipped_weighted_delta(fed: Federation) -> None:
    spec = fed.spec()
    update = fed.update("site-03", spec, weight=1250.0, config=SiteUpdateConfig(clip_norm=0.2))
    delta = update_delta(fed.trained("site-03"), fed.reference, spec)
    assert np.linalg.norm(delta) > 0.2
    expected = clip_l2(delta, 0.2) * (1250.0 / MAX_SITE_WEIGHT)
    decrypted = _decrypt_update(fed, update.envelope, spec)
    assert np.linalg.norm(decrypted - expected) / np.linalg.norm(expected) < 1e-7

    key = fed.site_keys["site-03"].public_key()
    header = SealedEnvelope.from_bytes(update.envelope).verify(key)
    assert header == update.header
    assert header.round_id == spec.round_id
    assert header.base_model_digest == spec.base_model_digest
    assert header.reference_digest == spec.reference_digest
    assert header.public_context_sha256 == fed.public.digest
    assert header.layout == spec.tensor_layout
    assert (header.weight, header.clip_norm, header.dp) == (1250.0, 0.2, None)
    metadata = update.metadata()
    assert metadata["ciphertexts"] == header.ciphertext_count
    assert not any("norm" in key and key != "clip_norm" for key in metadata)


@pytest.mark.parametrize("weight", [0.0, -1.0, MAX_SITE_WEIGHT * 1.5, float("nan")])
def test_invalid_weights_are_refused(weight: float, fed: Federation) -> None:
    with pytest.raises(FederationError, match="max_site_weight"):
        fed.update("site-01", fed.spec(), weight=weight)


def test_wrong_reference_or_shapes_are_refused(fed: Federation) -> None:
    spec = fed.spec()
    trained = fed.trained("site-01")
    shifted = {name: tensor + 1e-3 for name, tensor in fed.reference.items()}
    with pytest.raises(FederationError, match="reference adapter is not the one"):
        update_delta(trained, shifted, spec)
    name = next(iter(fed.reference))
    reshaped = {**trained, name: trained[name][:, :-1]}
    with pytest.raises(LayoutError, match="has shape"):
        update_delta(reshaped, fed.reference, spec)
    missing = {k: v for k, v in trained.items() if k != name}
    with pytest.raises(LayoutError, match="missing"):
        update_delta(missing, fed.reference, spec)


def test_envelope_framing_and_header_parsing_are_strict(fed: Federation) -> None:
    update = fed.update("site-02", fed.spec())
    data = update.envelope
    for broken in (data[:-1], data + b"x", b"TGFX" + data[4:], data[:10]):
        with pytest.raises(EnvelopeError):
            SealedEnvelope.from_bytes(broken)
    sealed = SealedEnvelope.from_bytes(data)
    with pytest.raises(EnvelopeError, match="does not verify"):
        sealed.verify(fed.site_keys["site-01"].public_key())
    duplicated = sealed.header_bytes[:-1] + b',"weight":2}'
    with pytest.raises(EnvelopeError, match="repeats the object key"):
        EnvelopeHeader.from_bytes(duplicated)
    assert EnvelopeHeader.from_bytes(update.header.to_bytes()) == update.header
    assert TensorLayout.from_tensors(fed.reference) == update.header.layout
