"""The default base model is built locally, meaningful, reproducible and validated."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pytest
import torch
from transformers import ViTConfig

from tensorguard.digest import sha256_tree
from tensorguard.hf import evaluate_token_loss, load_causal_lm
from tensorguard.training import base_model as base_model_module
from tensorguard.training.base_model import (
    BaseModelInfo,
    build_default_base_model,
    load_base_model_info,
    load_tokenizer,
)
from tensorguard.training.causal_lm import batches_in_order, encode_texts, pad_token_id_of
from tensorguard.training.dataset import load_site_dataset
from tensorguard.training.demo_data import DEMO_SITE_IDS, default_corpus_dir, demo_sites_root
from tensorguard.training.errors import BaseModelError, DatasetError
from tests.training.conftest import BASE_MODEL_SEED, files_of


def test_info_describes_the_built_model(base_model: BaseModelInfo) -> None:
    model = load_causal_lm(base_model.path, dtype=torch.float32)
    assert base_model.architecture == "LlamaForCausalLM" == type(model).__name__
    assert base_model.model_type == "llama"
    assert base_model.built_locally
    assert base_model.vocab_size == len(load_tokenizer(base_model.path))
    assert base_model.parameter_count == sum(p.numel() for p in model.parameters())
    assert base_model.digest == sha256_tree(base_model.path)
    assert (base_model.path / "model.safetensors").is_file()


def test_build_record_names_the_corpus_bytes(base_model: BaseModelInfo) -> None:
    record = json.loads((base_model.path / "tensorguard_base_model.json").read_text())
    assert record["corpus_digest"] == sha256_tree(default_corpus_dir())
    assert record["seed"] == BASE_MODEL_SEED
    assert len(record["loss_curve"]) == record["pretrain_steps"]


def test_pretraining_made_the_base_meaningful(base_model: BaseModelInfo) -> None:
    """Loss fell during pretraining and the base predicts held-out site text well."""
    assert base_model.pretrain_loss_first is not None
    assert base_model.pretrain_loss_last is not None
    assert base_model.pretrain_loss_first > math.log(base_model.vocab_size) - 0.5
    assert base_model.pretrain_loss_last < base_model.pretrain_loss_first / 3
    tokenizer = load_tokenizer(base_model.path)
    model = load_causal_lm(base_model.path, dtype=torch.float32)
    for site_id in DEMO_SITE_IDS:
        texts = load_site_dataset(demo_sites_root() / site_id).eval_texts
        sequences = encode_texts(tokenizer, texts, max_length=128)
        batches = batches_in_order(sequences, 16, pad_token_id_of(tokenizer))
        loss = evaluate_token_loss(model, batches)
        assert loss < math.log(base_model.vocab_size) / 2, site_id


@pytest.mark.usefixtures("deterministic_torch")
def test_determinism_gives_byte_identical_base_models(
    base_model: BaseModelInfo, tmp_path: Path
) -> None:
    again = build_default_base_model(tmp_path / "again", seed=BASE_MODEL_SEED)
    assert files_of(again.path) == files_of(base_model.path)
    assert again.digest == base_model.digest


def test_a_different_seed_gives_a_different_model(
    base_model: BaseModelInfo, tmp_path: Path
) -> None:
    other = build_default_base_model(tmp_path / "other", seed=1, pretrain_steps=1)
    assert other.digest != base_model.digest


def test_loaded_model_runs_offline(
    base_model: BaseModelInfo, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    tokenizer = load_tokenizer(base_model.path)
    batch = tokenizer(["Sodium 139 mmol/L"], return_tensors="pt")
    assert batch["input_ids"][0, 0].item() == tokenizer.bos_token_id
    assert batch["input_ids"][0, -1].item() == tokenizer.eos_token_id
    with torch.inference_mode():
        logits = load_causal_lm(base_model.path, dtype=torch.float32)(**batch).logits
    assert logits.shape[-1] == base_model.vocab_size


def _copy(base_model: BaseModelInfo, tmp_path: Path) -> Path:
    copy = tmp_path / "copy"
    shutil.copytree(base_model.path, copy)
    return copy


def test_missing_directory(tmp_path: Path) -> None:
    with pytest.raises(BaseModelError, match="base model directory not found") as error:
        load_base_model_info(tmp_path / "absent")
    assert str(tmp_path / "absent") in str(error.value)


def test_directory_without_config(tmp_path: Path) -> None:
    (tmp_path / "weights.txt").write_text("not a model")
    with pytest.raises(BaseModelError, match=r"not a Hugging Face model directory \(config"):
        load_base_model_info(tmp_path)


def test_corrupt_config(base_model: BaseModelInfo, tmp_path: Path) -> None:
    copy = _copy(base_model, tmp_path)
    (copy / "config.json").write_text("{not json")
    with pytest.raises(BaseModelError, match=r"config\.json: cannot be loaded"):
        load_base_model_info(copy)


def test_pickle_weights_are_refused(base_model: BaseModelInfo, tmp_path: Path) -> None:
    copy = _copy(base_model, tmp_path)
    (copy / "model.safetensors").rename(copy / "pytorch_model.bin")
    with pytest.raises(BaseModelError, match="only pickle weights"):
        load_base_model_info(copy)


def test_missing_weights(base_model: BaseModelInfo, tmp_path: Path) -> None:
    copy = _copy(base_model, tmp_path)
    (copy / "model.safetensors").unlink()
    with pytest.raises(BaseModelError, match="no model weights"):
        load_base_model_info(copy)


def test_truncated_weights(base_model: BaseModelInfo, tmp_path: Path) -> None:
    copy = _copy(base_model, tmp_path)
    weights = copy / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    with pytest.raises(BaseModelError, match=r"model\.safetensors: not a readable safetensors"):
        load_base_model_info(copy)


def test_missing_tokenizer(base_model: BaseModelInfo, tmp_path: Path) -> None:
    copy = _copy(base_model, tmp_path)
    (copy / "tokenizer.json").unlink()
    with pytest.raises(BaseModelError, match="no tokenizer found"):
        load_base_model_info(copy)


def test_model_without_lm_head_is_refused(base_model: BaseModelInfo, tmp_path: Path) -> None:
    copy = _copy(base_model, tmp_path)
    config = json.loads((copy / "config.json").read_text())
    config["architectures"] = ["LlamaForSequenceClassification"]
    (copy / "config.json").write_text(json.dumps(config))
    with pytest.raises(BaseModelError, match="has no causal language-modelling head"):
        load_base_model_info(copy)


def test_non_language_model_is_refused(base_model: BaseModelInfo, tmp_path: Path) -> None:
    copy = _copy(base_model, tmp_path)
    ViTConfig(hidden_size=8, num_hidden_layers=1, num_attention_heads=1).save_pretrained(copy)
    with pytest.raises(BaseModelError, match="'vit' is not a causal language model"):
        load_base_model_info(copy)


def test_forged_build_record_is_refused(base_model: BaseModelInfo, tmp_path: Path) -> None:
    copy = _copy(base_model, tmp_path)
    (copy / "tensorguard_base_model.json").write_text(json.dumps({"builder": "someone"}))
    with pytest.raises(BaseModelError, match="not a TensorGuard build record"):
        load_base_model_info(copy)


def test_bad_corpus_leaves_nothing_behind(tmp_path: Path) -> None:
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "corpus.jsonl").write_text('{"text": "fine"}\n{"txt": "typo"}\n')
    output = tmp_path / "out" / "model"
    with pytest.raises(DatasetError, match=r"corpus\.jsonl:2: unexpected field"):
        build_default_base_model(output, corpus_dir=corpus)
    assert not output.exists()


def test_failure_while_saving_keeps_the_previous_model(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    output = tmp_path / "model"
    first = build_default_base_model(output, pretrain_steps=1)
    before = files_of(output)

    def fail(*_args: object, **_kwargs: object) -> None:
        raise OSError("disk full")

    tokenizer_class = type(load_tokenizer(output))
    monkeypatch.setattr(tokenizer_class, "save_pretrained", fail)
    with pytest.raises(OSError, match="disk full"):
        build_default_base_model(output, seed=7, pretrain_steps=1)
    assert files_of(output) == before
    assert load_base_model_info(output).digest == first.digest
    assert sorted(path.name for path in tmp_path.iterdir()) == ["model"]


def test_zero_pretraining_steps_is_refused(tmp_path: Path) -> None:
    with pytest.raises(BaseModelError, match="pretrain_steps must be at least 1"):
        build_default_base_model(tmp_path / "model", pretrain_steps=0)


def test_module_never_passes_remote_code() -> None:
    source = Path(base_model_module.__file__).read_text(encoding="utf-8")
    assert "trust_remote_code=True" not in source
    assert source.count("local_files_only=True") >= 3
