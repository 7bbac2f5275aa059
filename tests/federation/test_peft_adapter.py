"""A full round on real PEFT adapters: train, encrypt, aggregate, decrypt, reload."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from peft import LoraConfig, PeftModel, get_peft_model
from transformers import GPT2Config, GPT2LMHeadModel

from tensorguard.crypto._composite import CompositeSigningKey, CompositeVerifyKey
from tensorguard.federation._aggregation import aggregate_updates
from tensorguard.federation._context import PublicFederation, SecretFederation
from tensorguard.federation._custodian import Custodian, apply_update
from tensorguard.federation._custodian_ledger import CustodianLedger
from tensorguard.federation._errors import AdapterFormatError
from tensorguard.federation._lora_factors import average_factors
from tensorguard.federation._peft_adapter import write_peft_adapter
from tensorguard.federation._round_spec import RoundSpec
from tensorguard.federation._site_update import SiteUpdateConfig, build_site_update
from tensorguard.hf import ADAPTER_CONFIG_FILE, read_adapter_tensors
from tensorguard.training.errors import AdapterError

VOCAB = 64


def _base_model() -> GPT2LMHeadModel:
    torch.manual_seed(0)
    config = GPT2Config(
        n_layer=2,
        n_head=2,
        n_embd=32,
        vocab_size=VOCAB,
        n_positions=32,
        bos_token_id=0,
        eos_token_id=0,
    )
    model = GPT2LMHeadModel(config)
    model.train(False)
    return model


def _train_site(reference_dir: Path, out_dir: Path, seed: int) -> None:
    model = PeftModel.from_pretrained(_base_model(), reference_dir, is_trainable=True)
    optimiser = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.5)
    generator = torch.Generator().manual_seed(seed)
    model.train()
    for _ in range(3):
        tokens = torch.randint(0, VOCAB, (4, 16), generator=generator)
        loss = model(input_ids=tokens, labels=tokens).loss
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    model.save_pretrained(str(out_dir))


@pytest.fixture(scope="module")
def reference_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("reference")
    torch.manual_seed(1234)  # the shared seed: every site starts from the same random A
    model = get_peft_model(
        _base_model(),
        LoraConfig(r=4, lora_alpha=8, target_modules=["c_attn"], fan_in_fan_out=True),
    )
    model.save_pretrained(str(path))
    return path


def test_round_on_real_adapters_loads_with_peft(
    tmp_path: Path,
    reference_dir: Path,
    public: PublicFederation,
    secret: SecretFederation,
    site_keys: dict[str, CompositeSigningKey],
    registered: dict[str, CompositeVerifyKey],
) -> None:
    reference = read_adapter_tensors(reference_dir)
    assert all(torch.count_nonzero(t) == 0 for name, t in reference.items() if "lora_B" in name)
    spec = RoundSpec.from_reference("round-peft", "a" * 64, reference, max_site_weight=1000.0)
    sites = {"site-00": 300.0, "site-01": 1000.0, "site-02": 50.0}
    trained: dict[str, dict[str, torch.Tensor]] = {}
    envelopes = []
    for index, (site_id, weight) in enumerate(sites.items()):
        site_dir = tmp_path / site_id
        _train_site(reference_dir, site_dir, seed=index)
        trained[site_id] = read_adapter_tensors(site_dir)
        envelopes.append(
            build_site_update(
                trained=trained[site_id],
                reference=reference,
                spec=spec,
                site_id=site_id,
                weight=weight,
                public=public,
                signer=site_keys[site_id],
                config=SiteUpdateConfig(clip_norm=100.0),
            ).envelope
        )

    result = aggregate_updates(envelopes, registered, spec, public, min_sites=3)
    ledger = CustodianLedger(tmp_path / "ledger.jsonl", CompositeSigningKey.generate())
    custodian = Custodian(secret, registered, ledger)
    global_tensors = apply_update(reference, custodian.decrypt(result, envelopes).mean_delta)
    expected = average_factors(list(trained.values()), list(sites.values()))
    for name, tensor in global_tensors.items():
        assert tensor.dtype == reference[name].dtype
        assert torch.allclose(tensor.double(), expected[name], atol=1e-6, rtol=0)

    out_dir = write_peft_adapter(global_tensors, reference_dir, tmp_path / "g")
    loaded = PeftModel.from_pretrained(_base_model(), out_dir)
    state = loaded.state_dict()
    for name, tensor in global_tensors.items():
        key = name.replace(".weight", ".default.weight")
        assert torch.equal(state[key], tensor)
    tokens = torch.randint(0, VOCAB, (1, 8), generator=torch.Generator().manual_seed(9))
    with torch.no_grad():
        assert not torch.allclose(loaded(tokens).logits, _base_model()(tokens).logits)


def test_write_refuses_existing_dirs_and_non_lora_configs(
    tmp_path: Path, reference_dir: Path
) -> None:
    tensors = read_adapter_tensors(reference_dir)
    out = write_peft_adapter(tensors, reference_dir, tmp_path / "out")
    assert read_adapter_tensors(out).keys() == tensors.keys()
    with pytest.raises(AdapterFormatError, match="already exists"):
        write_peft_adapter(tensors, reference_dir, out)
    prefix_tuning = tmp_path / "prefix"
    prefix_tuning.mkdir()
    (prefix_tuning / ADAPTER_CONFIG_FILE).write_text(json.dumps({"peft_type": "PREFIX_TUNING"}))
    with pytest.raises(AdapterError, match="not a PEFT LoRA"):
        write_peft_adapter(tensors, prefix_tuning, tmp_path / "other")
    assert not (tmp_path / "other").exists()
    with pytest.raises(AdapterError, match="not a PEFT adapter"):
        read_adapter_tensors(tmp_path)


def test_replace_swaps_the_adapter_only_when_the_new_one_is_complete(
    tmp_path: Path, reference_dir: Path
) -> None:
    tensors = read_adapter_tensors(reference_dir)
    out = write_peft_adapter(tensors, reference_dir, tmp_path / "out")
    doubled = {name: tensor * 2 for name, tensor in tensors.items()}
    write_peft_adapter(doubled, reference_dir, out, replace=True)
    assert all(torch.equal(read_adapter_tensors(out)[n], t) for n, t in doubled.items())
    with pytest.raises(AdapterError, match="LoRA weights"):
        write_peft_adapter({"not_a_lora.weight": torch.zeros(1)}, reference_dir, out, replace=True)
    assert all(torch.equal(read_adapter_tensors(out)[n], t) for n, t in doubled.items())
    assert sorted(path.name for path in tmp_path.iterdir()) == ["out"]
