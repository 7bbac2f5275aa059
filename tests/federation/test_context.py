"""The key ceremony: public export without secret key, secret only via the store."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import tenseal as ts

from tensorguard.federation._context import (
    DEFAULT_SECRET_NAME,
    PARAMS_FILENAME,
    PUBLIC_CONTEXT_FILENAME,
    FederationKeys,
    PublicFederation,
    create_federation_context,
    load_secret_context,
    load_secret_from_store,
    run_key_ceremony,
)
from tensorguard.federation._errors import ContextError
from tensorguard.federation._params import FederationParams
from tests.federation.conftest import InMemorySecretStore


def test_ceremony_writes_only_public_material(tmp_path: Path) -> None:
    store = InMemorySecretStore()
    record = run_key_ceremony(tmp_path, store)

    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [PUBLIC_CONTEXT_FILENAME, PARAMS_FILENAME]
    )
    public_context = ts.context_from(record.public_context_path.read_bytes())
    assert public_context.is_private() is False
    assert public_context.has_secret_key() is False
    secret_context = ts.context_from(store.blobs[DEFAULT_SECRET_NAME])
    assert secret_context.is_private() is True
    assert store.blobs[DEFAULT_SECRET_NAME] not in record.public_context_path.read_bytes()

    public = PublicFederation.read(tmp_path)
    assert public.digest == record.public_context_sha256
    secret = load_secret_from_store(store, public)
    vector = ts.ckks_vector(public.load_context(), [1.5, -2.0])
    vector.link_context(secret.context)
    assert vector.decrypt() == pytest.approx([1.5, -2.0], abs=1e-9)
    summary = json.loads((tmp_path / PARAMS_FILENAME).read_text())
    assert summary["security_level_bits"] == 256


def test_public_context_cannot_decrypt(public: PublicFederation) -> None:
    context = public.load_context()
    vector = ts.ckks_vector(context, [3.0])
    with pytest.raises(ValueError, match="secret"):
        vector.decrypt()


def test_a_secret_context_is_refused_as_public(federation_keys: FederationKeys) -> None:
    with pytest.raises(ContextError, match="secret key"):
        PublicFederation(federation_keys.public.params, federation_keys.secret_context_bytes)


def test_secret_from_another_ceremony_is_refused(public: PublicFederation) -> None:
    other = create_federation_context()
    with pytest.raises(ContextError, match="does not belong"):
        load_secret_context(other.secret_context_bytes, public)


def test_public_context_alone_is_refused_as_secret(public: PublicFederation) -> None:
    with pytest.raises(ContextError, match="no secret key"):
        load_secret_context(public.context_bytes, public)


def test_modified_public_files_are_detected(tmp_path: Path) -> None:
    run_key_ceremony(tmp_path, InMemorySecretStore())
    other = create_federation_context()
    (tmp_path / PUBLIC_CONTEXT_FILENAME).write_bytes(other.public.context_bytes)
    with pytest.raises(ContextError, match="does not match the digest"):
        PublicFederation.read(tmp_path)


def test_params_mismatch_is_detected(federation_keys: FederationKeys) -> None:
    with pytest.raises(ContextError, match="scale"):
        PublicFederation(FederationParams(scale_bits=40), federation_keys.public.context_bytes)


def test_repr_never_shows_key_material(federation_keys: FederationKeys) -> None:
    text = repr(federation_keys)
    assert "secret_context_bytes" not in text
    assert len(text) < 400
