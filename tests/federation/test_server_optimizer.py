"""Server optimisers (FedAvg with a server learning rate, FedAdam, FedYogi): the update
rule, the state kept between rounds, and the state sealed in the custodian's vault."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tensorguard.crypto._composite import CompositeSigningKey
from tensorguard.federation._custodian import advance_global_adapter
from tensorguard.federation._layout import tensors_digest
from tensorguard.federation._round_spec import RoundSpec, load_signed_round_spec, sign_round_spec
from tensorguard.federation._server_optimizer import (
    ServerOptimizerError,
    ServerOptimizerRule,
    ServerOptimizerState,
    server_step,
)
from tensorguard.keys._errors import WrongMasterKeyError
from tensorguard.keys._file_provider import FileKeyProvider
from tensorguard_resources.federation import ServerStateVault

REFERENCE = {"a.lora_B.weight": torch.zeros(3, 2), "a.lora_A.weight": torch.ones(2, 4)}
DELTAS = [
    {
        name: torch.full_like(t, 0.1 * (k + 1)) * (1 + torch.arange(t.numel()).reshape(t.shape))
        for name, t in REFERENCE.items()
    }
    for k in range(3)
]
ADAM = ServerOptimizerRule(name="fedadam", learning_rate=0.01, beta1=0.9, beta2=0.99, tau=1e-3)


class MemoryStateStore:
    def __init__(self) -> None:
        self.states: dict[str, bytes] = {}

    def load_state(self, adapter_digest: str) -> bytes | None:
        return self.states.get(adapter_digest)

    def store_state(self, adapter_digest: str, state: bytes) -> None:
        self.states[adapter_digest] = state


def _adam_by_hand(deltas: list[dict[str, torch.Tensor]], rule: ServerOptimizerRule) -> list:
    m = {n: torch.zeros_like(t, dtype=torch.float64) for n, t in REFERENCE.items()}
    v = {n: torch.zeros_like(t, dtype=torch.float64) for n, t in REFERENCE.items()}
    steps = []
    for delta in deltas:
        step = {}
        for name, d in delta.items():
            d64 = d.double()
            m[name] = rule.beta1 * m[name] + (1 - rule.beta1) * d64
            v[name] = rule.beta2 * v[name] + (1 - rule.beta2) * d64 * d64
            step[name] = rule.learning_rate * m[name] / (v[name].sqrt() + rule.tau)
        steps.append(step)
    return steps


def test_fedavg_scales_the_mean_update_by_the_server_learning_rate() -> None:
    plain, state = server_step(ServerOptimizerRule(), DELTAS[0], None)
    assert state is None
    doubled, _ = server_step(ServerOptimizerRule(learning_rate=2.0), DELTAS[0], None)
    for name, delta in DELTAS[0].items():
        assert torch.allclose(plain[name], delta.double())
        assert torch.allclose(doubled[name], 2 * delta.double())


def test_fedadam_matches_the_rule_by_hand_across_rounds() -> None:
    expected = _adam_by_hand(DELTAS, ADAM)
    state = None
    for delta, by_hand in zip(DELTAS, expected, strict=True):
        step, state = server_step(ADAM, delta, state)
        assert state is not None
        state = ServerOptimizerState.from_bytes(state.to_bytes())  # as if kept sealed
        for name in delta:
            assert torch.allclose(step[name], by_hand[name], rtol=1e-12, atol=0)
    # Without the kept state the third step is a different (first-round) step.
    fresh, _ = server_step(ADAM, DELTAS[2], None)
    assert not torch.allclose(fresh["a.lora_B.weight"], expected[2]["a.lora_B.weight"])


def test_fedyogi_grows_the_second_moment_more_slowly_than_adam() -> None:
    yogi = ADAM.model_copy(update={"name": "fedyogi"})
    _, adam_state = server_step(ADAM, DELTAS[0], None)
    _, yogi_state = server_step(yogi, DELTAS[0], None)
    assert adam_state is not None
    assert yogi_state is not None
    assert torch.allclose(
        adam_state.second["a.lora_B.weight"], yogi_state.second["a.lora_B.weight"]
    )
    _, adam_state = server_step(ADAM, DELTAS[1], adam_state)
    _, yogi_state = server_step(yogi, DELTAS[1], yogi_state)
    assert bool(
        (yogi_state.second["a.lora_B.weight"] != adam_state.second["a.lora_B.weight"]).any()
    )


def test_the_state_continues_only_from_the_adapter_it_produced() -> None:
    store = MemoryStateStore()
    first = advance_global_adapter(REFERENCE, DELTAS[0], ADAM, store)
    assert not first.state_continued
    assert set(store.states) == {tensors_digest(first.adapter)}
    second = advance_global_adapter(first.adapter, DELTAS[1], ADAM, store)
    assert second.state_continued
    by_hand = _adam_by_hand(DELTAS[:2], ADAM)
    expected = first.adapter["a.lora_B.weight"].double() + by_hand[1]["a.lora_B.weight"]
    assert torch.allclose(second.adapter["a.lora_B.weight"].double(), expected, atol=1e-6)
    # A round from another adapter starts a fresh optimiser.
    assert not advance_global_adapter(REFERENCE, DELTAS[1], ADAM, store).state_continued


def test_a_state_for_other_tensors_is_refused() -> None:
    _, state = server_step(ADAM, DELTAS[0], None)
    other = {"b.lora_B.weight": torch.zeros(3, 2)}
    with pytest.raises(ServerOptimizerError, match="other tensors"):
        server_step(ADAM, other, state)
    with pytest.raises(ServerOptimizerError, match="not safetensors"):
        ServerOptimizerState.from_bytes(b"not a state")


def test_the_state_is_sealed_in_the_custodians_vault(tmp_path: Path) -> None:
    master = {"TG_KEY_MASTER": "m" * 48}
    vault = ServerStateVault(FileKeyProvider.from_env(tmp_path / "keys", master))
    _, state = server_step(ADAM, DELTAS[0], None)
    assert state is not None
    raw = state.to_bytes()
    vault.store_state("ab" * 32, raw)
    assert vault.load_state("ab" * 32) == raw
    assert vault.load_state("cd" * 32) is None
    for path in (tmp_path / "keys").rglob("*"):
        if path.is_file():
            assert raw[-64:] not in path.read_bytes()  # moments never on disk in clear
    other = ServerStateVault(
        FileKeyProvider.from_env(tmp_path / "keys", {"TG_KEY_MASTER": "x" * 48})
    )
    with pytest.raises(WrongMasterKeyError):
        other.load_state("ab" * 32)


def test_the_signed_round_spec_carries_the_server_optimiser() -> None:
    spec = RoundSpec.from_reference("opt-0001", "b" * 64, REFERENCE, 10.0, server_optimizer=ADAM)
    signer = CompositeSigningKey.generate()
    loaded = load_signed_round_spec(sign_round_spec(spec, signer), signer.public_key())
    assert loaded.server_optimizer == ADAM


MOMENTUM = ServerOptimizerRule(name="fedavgm", learning_rate=1.5, beta1=0.5)


def test_fedavgm_matches_the_rule_by_hand_across_rounds() -> None:
    # m1 = d0, m2 = 0.5·d0 + d1, m3 = 0.25·d0 + 0.5·d1 + d2; step = 1.5·m.
    weights = [[1.0], [0.5, 1.0], [0.25, 0.5, 1.0]]
    state = None
    for k, coefficients in enumerate(weights):
        step, state = server_step(MOMENTUM, DELTAS[k], state)
        assert state is not None
        state = ServerOptimizerState.from_bytes(state.to_bytes())  # as if kept sealed
        for name in REFERENCE:
            momentum = sum(c * DELTAS[j][name].double() for j, c in enumerate(coefficients))
            assert torch.allclose(step[name], 1.5 * momentum, rtol=1e-12, atol=0)
    # Without the kept momentum the third step is plain (scaled) FedAvg.
    fresh, _ = server_step(MOMENTUM, DELTAS[2], None)
    assert torch.allclose(fresh["a.lora_B.weight"], 1.5 * DELTAS[2]["a.lora_B.weight"].double())


def test_fedavgm_momentum_is_sealed_and_resumed_by_the_custodian(tmp_path: Path) -> None:
    master = {"TG_KEY_MASTER": "m" * 48}
    vault = ServerStateVault(FileKeyProvider.from_env(tmp_path / "keys", master))
    first = advance_global_adapter(REFERENCE, DELTAS[0], MOMENTUM, vault)
    assert not first.state_continued
    # A new vault object over the same sealed store, as in the next round's process.
    reopened = ServerStateVault(FileKeyProvider.from_env(tmp_path / "keys", master))
    second = advance_global_adapter(first.adapter, DELTAS[1], MOMENTUM, reopened)
    assert second.state_continued
    name = "a.lora_B.weight"
    expected = first.adapter[name].double() + 1.5 * (
        0.5 * DELTAS[0][name].double() + DELTAS[1][name].double()
    )
    assert torch.allclose(second.adapter[name].double(), expected, atol=1e-6)
    for path in (tmp_path / "keys").rglob("*"):
        if path.is_file():  # the momentum never lies on disk in clear
            raw = vault.load_state(tensors_digest(first.adapter))
            assert raw is not None
            assert raw[-64:] not in path.read_bytes()
