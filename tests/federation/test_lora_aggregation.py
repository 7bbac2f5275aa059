"""Exact LoRA aggregation: with the A factors frozen (FFA-LoRA) the global adapter's
weight delta is exactly the weighted mean of the sites' weight deltas; averaging both
factors is not."""

from __future__ import annotations

import pytest
import torch

from tensorguard.federation._aggregation import aggregate_updates
from tensorguard.federation._custodian import apply_update
from tensorguard.federation._errors import FederationError
from tensorguard.federation._lora_factors import is_lora_a
from tensorguard.federation._round_spec import RoundSpec
from tensorguard.federation._site_update import build_site_update
from tensorguard.training.lora import freeze_lora_a_factors
from tests.federation.conftest import (
    BASE_DIGEST,
    MAX_SITE_WEIGHT,
    NO_CLIPPING,
    Federation,
    site_weight,
)

SITES = ("site-00", "site-01", "site-02")


def _spec(fed: Federation, round_id: str, *, frozen: bool) -> RoundSpec:
    return RoundSpec.from_reference(
        round_id, BASE_DIGEST, fed.reference, MAX_SITE_WEIGHT, frozen_lora_a=frozen
    )


def _trained(fed: Federation, site: str, *, train_a: bool) -> dict[str, torch.Tensor]:
    """The reference after a site's 'training': B always moves, A only if ``train_a``."""
    generator = torch.Generator().manual_seed(500 + SITES.index(site))
    return {
        name: tensor
        if is_lora_a(name) and not train_a
        else tensor + 0.05 * torch.randn(tensor.shape, generator=generator)
        for name, tensor in fed.reference.items()
    }


def _weight_deltas(adapter: dict[str, torch.Tensor], fed: Federation) -> list[torch.Tensor]:
    """Each adapted module's weight delta ``B·A`` minus the reference's."""
    deltas = []
    for name in sorted(fed.reference):
        if not is_lora_a(name):
            continue
        b_name = name.replace(".lora_A.", ".lora_B.")
        merged = adapter[b_name].double() @ adapter[name].double()
        deltas.append(merged - fed.reference[b_name].double() @ fed.reference[name].double())
    return deltas


def _global(
    fed: Federation, spec: RoundSpec, trained: dict[str, dict[str, torch.Tensor]]
) -> dict[str, torch.Tensor]:
    envelopes = [
        build_site_update(
            trained=trained[site],
            reference=fed.reference,
            spec=spec,
            site_id=site,
            weight=site_weight(site),
            public=fed.public,
            signer=fed.site_keys[site],
            config=NO_CLIPPING,
        ).envelope
        for site in SITES
    ]
    result = aggregate_updates(envelopes, fed.registered, spec, fed.public, min_sites=2)
    return apply_update(fed.reference, fed.decrypt(result, envelopes, dtype=torch.float64))


def _exact_mean(fed: Federation, trained: dict[str, dict[str, torch.Tensor]]) -> list[torch.Tensor]:
    total = sum(site_weight(site) for site in SITES)
    per_site = {site: _weight_deltas(trained[site], fed) for site in SITES}
    return [
        sum(site_weight(site) * per_site[site][index] for site in SITES) / total
        for index in range(len(per_site[SITES[0]]))
    ]


def _relative_gap(got: list[torch.Tensor], expected: list[torch.Tensor]) -> float:
    num = sum(float((g - e).pow(2).sum()) for g, e in zip(got, expected, strict=True))
    den = sum(float(e.pow(2).sum()) for e in expected)
    return (num / den) ** 0.5


def test_frozen_a_aggregate_is_the_exact_mean_of_the_weight_deltas(fed: Federation) -> None:
    spec = _spec(fed, "ffa-0001", frozen=True)
    assert all(not is_lora_a(name) for name in spec.tensor_layout.names)
    assert spec.tensor_layout.numel < _spec(fed, "ffa-0001", frozen=False).tensor_layout.numel
    trained = {site: _trained(fed, site, train_a=False) for site in SITES}
    global_adapter = _global(fed, spec, trained)
    for name, tensor in fed.reference.items():
        if is_lora_a(name):
            assert torch.equal(global_adapter[name], tensor)  # A is the reference's
    gap = _relative_gap(_weight_deltas(global_adapter, fed), _exact_mean(fed, trained))
    print(f"frozen A: global delta vs exact mean of deltas, relative gap {gap:.2e}")
    assert gap < 1e-6


def test_averaging_both_factors_is_not_the_mean_of_the_weight_deltas(fed: Federation) -> None:
    """The reason for the option: with A trained too, mean(B)·mean(A) != mean(B·A)."""
    spec = _spec(fed, "factors-0001", frozen=False)
    trained = {site: _trained(fed, site, train_a=True) for site in SITES}
    gap = _relative_gap(_weight_deltas(_global(fed, spec, trained), fed), _exact_mean(fed, trained))
    print(f"factor averaging: global delta vs exact mean of deltas, relative gap {gap:.2e}")
    assert gap > 1e-3


def test_a_site_that_trained_a_frozen_factor_is_refused(fed: Federation) -> None:
    spec = _spec(fed, "ffa-0002", frozen=True)
    with pytest.raises(FederationError, match="freezes the LoRA A factors"):
        build_site_update(
            trained=_trained(fed, "site-00", train_a=True),
            reference=fed.reference,
            spec=spec,
            site_id="site-00",
            weight=site_weight("site-00"),
            public=fed.public,
            signer=fed.site_keys["site-00"],
            config=NO_CLIPPING,
        )


def test_freezing_stops_gradients_to_every_a_factor_only() -> None:
    from peft import LoraConfig, get_peft_model

    class Tiny(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.q_proj = torch.nn.Linear(8, 8)
            self.v_proj = torch.nn.Linear(8, 8)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.v_proj(self.q_proj(x))

    model = get_peft_model(Tiny(), LoraConfig(r=2, target_modules=["q_proj", "v_proj"]))
    assert freeze_lora_a_factors(model) == 2
    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    assert all(".lora_B." in name for name in trainable)
    assert len(trainable) == 2
