"""Shared fixtures for the federation tests: one ceremony, site keys, LoRA tensors."""

from __future__ import annotations

import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from tensorguard.crypto._composite import CompositeSigningKey, CompositeVerifyKey
from tensorguard.federation._aggregation import AggregationResult
from tensorguard.federation._context import (
    FederationKeys,
    PublicFederation,
    SecretFederation,
    create_federation_context,
    load_secret_context,
)
from tensorguard.federation._custodian import Custodian
from tensorguard.federation._custodian_ledger import CustodianLedger
from tensorguard.federation._packing import Packing
from tensorguard.federation._privacy import PrivacyLedger
from tensorguard.federation._round_spec import RoundSpec
from tensorguard.federation._site_update import SiteUpdate, SiteUpdateConfig, build_site_update

BASE_DIGEST = "b" * 64
MAX_SITE_WEIGHT = 5000.0
CUSTODIAN_KEY = CompositeSigningKey.generate()


class InMemorySecretStore:
    """A SecretStore for tests: a dict, plus a record of what was stored."""

    def __init__(self) -> None:
        self.blobs: dict[str, bytes] = {}

    def store_secret(self, name: str, data: bytes) -> None:
        self.blobs[name] = bytes(data)

    def load_secret(self, name: str) -> bytes:
        return self.blobs[name]


def lora_reference(seed: int = 7, modules: int = 3, rank: int = 4) -> dict[str, torch.Tensor]:
    """A PEFT-style LoRA state dict: random A (shared by seed), zero B."""
    generator = torch.Generator().manual_seed(seed)
    tensors: dict[str, torch.Tensor] = {}
    for index in range(modules):
        prefix = f"base_model.model.layers.{index}.attn.q_proj"
        fan_in, fan_out = 48 + 16 * index, 40 + 8 * index
        tensors[f"{prefix}.lora_A.weight"] = (
            torch.rand(rank, fan_in, generator=generator) * 2 - 1
        ) / fan_in**0.5
        tensors[f"{prefix}.lora_B.weight"] = torch.zeros(fan_out, rank)
    return tensors


def trained_like(
    reference: dict[str, torch.Tensor], seed: int, scale: float = 1e-2
) -> dict[str, torch.Tensor]:
    """The reference after 'training': a site-specific perturbation of every tensor."""
    generator = torch.Generator().manual_seed(1000 + seed)
    return {
        name: tensor + scale * torch.randn(tensor.shape, generator=generator)
        for name, tensor in reference.items()
    }


@pytest.fixture(scope="session")
def federation_keys() -> FederationKeys:
    return create_federation_context()


@pytest.fixture(scope="session")
def public(federation_keys: FederationKeys) -> PublicFederation:
    return federation_keys.public


@pytest.fixture(scope="session")
def secret(federation_keys: FederationKeys) -> SecretFederation:
    return load_secret_context(federation_keys.secret_context_bytes, federation_keys.public)


@pytest.fixture(scope="session")
def site_keys() -> dict[str, CompositeSigningKey]:
    return {f"site-{index:02d}": CompositeSigningKey.generate() for index in range(12)}


@pytest.fixture(scope="session")
def registered(site_keys: dict[str, CompositeSigningKey]) -> dict[str, CompositeVerifyKey]:
    return {site_id: key.public_key() for site_id, key in site_keys.items()}


@pytest.fixture(scope="session")
def reference() -> dict[str, torch.Tensor]:
    return lora_reference()


SITE_WEIGHTS = (4800.0, 130.0, 2200.0, 960.0, 1.0, 3100.0, 45.0, 5000.0, 700.0, 2500.0)
NO_CLIPPING = SiteUpdateConfig(clip_norm=1e6)


def site_index(site_id: str) -> int:
    return int(site_id.split("-")[1])


def site_weight(site_id: str) -> float:
    return SITE_WEIGHTS[site_index(site_id) % len(SITE_WEIGHTS)]


@dataclass(frozen=True)
class Federation:
    """One federation for tests: keys, registered sites and a reference adapter."""

    public: PublicFederation
    secret: SecretFederation
    site_keys: dict[str, CompositeSigningKey]
    registered: dict[str, CompositeVerifyKey]
    reference: dict[str, torch.Tensor]

    def spec(
        self,
        round_id: str = "round-0001",
        base_digest: str = BASE_DIGEST,
        packing: Packing = Packing.COMPLEX,
    ) -> RoundSpec:
        return RoundSpec.from_reference(
            round_id, base_digest, self.reference, MAX_SITE_WEIGHT, ckks_packing=packing
        )

    def custodian(
        self, ledger_path: Path, registered: Mapping[str, CompositeVerifyKey] | None = None
    ) -> Custodian:
        """A custodian with a signed ledger at ``ledger_path``."""
        ledger = CustodianLedger(ledger_path, CUSTODIAN_KEY)
        return Custodian(self.secret, registered or self.registered, ledger)

    def decrypt(
        self,
        result: AggregationResult,
        envelopes: Sequence[bytes],
        dtype: torch.dtype = torch.float32,
        registered: Mapping[str, CompositeVerifyKey] | None = None,
    ) -> dict[str, torch.Tensor]:
        """The custodian's verified decryption, with a throwaway ledger."""
        with tempfile.TemporaryDirectory() as scratch:
            custodian = self.custodian(Path(scratch) / "ledger.jsonl", registered)
            return custodian.decrypt(result, envelopes, dtype).mean_delta

    def trained(self, site_id: str) -> dict[str, torch.Tensor]:
        return trained_like(self.reference, site_index(site_id))

    def update(
        self,
        site_id: str,
        spec: RoundSpec,
        *,
        weight: float | None = None,
        config: SiteUpdateConfig = NO_CLIPPING,
        ledger: PrivacyLedger | None = None,
    ) -> SiteUpdate:
        return build_site_update(
            trained=self.trained(site_id),
            reference=self.reference,
            spec=spec,
            site_id=site_id,
            weight=site_weight(site_id) if weight is None else weight,
            public=self.public,
            signer=self.site_keys[site_id],
            config=config,
            ledger=ledger,
        )


@pytest.fixture(scope="session")
def fed(
    public: PublicFederation,
    secret: SecretFederation,
    site_keys: dict[str, CompositeSigningKey],
    registered: dict[str, CompositeVerifyKey],
    reference: dict[str, torch.Tensor],
) -> Federation:
    return Federation(public, secret, site_keys, registered, reference)
