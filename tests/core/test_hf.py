"""tensorguard.hf: the model loader's dtype, adapter files bit for bit, padding-free loss."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from peft import LoraConfig, PeftModel, get_peft_model, get_peft_model_state_dict
from safetensors.torch import load_file, save_file
from transformers import LlamaForCausalLM

from tensorguard.hf import (
    ADAPTER_CONFIG_FILE,
    ADAPTER_WEIGHTS_FILE,
    CHECKPOINT_DTYPE,
    IGNORE_INDEX,
    TokenBatch,
    evaluate_token_loss,
    load_adapter,
    load_causal_lm,
    read_adapter_config,
    read_adapter_tensors,
    save_peft_adapter,
    token_loss,
    write_adapter,
)
from tensorguard.training.errors import AdapterError, BaseModelError, TrainingError
from tests.optimize.tiny_model import tiny_llama_config

VOCAB = 48
PAD = 0
BASE_DIGEST = "ab" * 32
LORA_CONFIG = {"peft_type": "LORA", "r": 2, "lora_alpha": 4, "target_modules": ["q_proj"]}


def _tiny_model(seed: int = 0) -> LlamaForCausalLM:
    torch.manual_seed(seed)
    model = LlamaForCausalLM(tiny_llama_config(vocab_size=VOCAB, num_hidden_layers=1))
    model.train(False)
    return model


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("model")
    _tiny_model().save_pretrained(directory)
    return directory


# --- loader -------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_loader_honours_the_requested_dtype(model_dir: Path, dtype: torch.dtype) -> None:
    model = load_causal_lm(model_dir, dtype=dtype)
    assert {parameter.dtype for parameter in model.parameters()} == {dtype}
    assert not model.training


def test_checkpoint_dtype_keeps_the_saved_dtype(tmp_path: Path) -> None:
    _tiny_model().bfloat16().save_pretrained(tmp_path)
    model = load_causal_lm(tmp_path, dtype=CHECKPOINT_DTYPE)
    assert {parameter.dtype for parameter in model.parameters()} == {torch.bfloat16}
    as_float32 = load_causal_lm(tmp_path, dtype=torch.float32)
    assert {parameter.dtype for parameter in as_float32.parameters()} == {torch.float32}


def test_loaded_weights_equal_the_saved_ones(model_dir: Path) -> None:
    loaded = load_causal_lm(model_dir, dtype=torch.float32).state_dict()
    for name, tensor in _tiny_model().state_dict().items():
        assert torch.equal(loaded[name], tensor), name


def test_loader_refuses_missing_and_pickle_only_directories(
    model_dir: Path, tmp_path: Path
) -> None:
    with pytest.raises(BaseModelError, match="model directory not found"):
        load_causal_lm(tmp_path / "absent", dtype=torch.float32)
    with pytest.raises(BaseModelError, match=r"config\.json is missing"):
        load_causal_lm(tmp_path, dtype=torch.float32)
    pickled = tmp_path / "pickled"
    pickled.mkdir()
    (pickled / "config.json").write_bytes((model_dir / "config.json").read_bytes())
    torch.save(_tiny_model().state_dict(), pickled / "pytorch_model.bin")
    with pytest.raises(BaseModelError, match="cannot be loaded"):
        load_causal_lm(pickled, dtype=torch.float32)


# --- adapter files --------------------------------------------------------------------

_DTYPES = st.sampled_from([torch.float32, torch.float16, torch.bfloat16, torch.float64])


@settings(max_examples=25, deadline=None)
@given(
    shapes=st.lists(st.tuples(st.integers(1, 5), st.integers(1, 7)), min_size=1, max_size=4),
    dtype=_DTYPES,
    seed=st.integers(0, 2**31 - 1),
)
def test_adapter_round_trip_is_bit_exact(
    tmp_path_factory: pytest.TempPathFactory,
    shapes: list[tuple[int, int]],
    dtype: torch.dtype,
    seed: int,
) -> None:
    generator = torch.Generator().manual_seed(seed)
    tensors = {
        f"base_model.model.layers.{index}.q_proj.lora_A.weight": torch.randn(
            rows, cols, generator=generator
        )
        .to(dtype)
        .t()  # non-contiguous on purpose
        for index, (rows, cols) in enumerate(shapes)
    }
    directory = tmp_path_factory.mktemp("adapter")
    write_adapter(directory, LORA_CONFIG, tensors)
    read_back = read_adapter_tensors(directory)
    assert read_back.keys() == tensors.keys()
    for name, tensor in tensors.items():
        assert read_back[name].dtype == tensor.dtype
        assert torch.equal(read_back[name], tensor), name
    assert read_adapter_config(directory) == LORA_CONFIG


def test_write_checks_before_writing_anything(tmp_path: Path) -> None:
    tensor = {"x.lora_A.weight": torch.ones(2, 2)}
    with pytest.raises(AdapterError, match="not a PEFT LoRA"):
        write_adapter(tmp_path, {"peft_type": "PREFIX_TUNING"}, tensor)
    with pytest.raises(AdapterError, match="non-empty set of LoRA weights"):
        write_adapter(tmp_path, LORA_CONFIG, {"x.weight": torch.ones(2, 2)})
    with pytest.raises(AdapterError, match="non-empty set of LoRA weights"):
        write_adapter(tmp_path, LORA_CONFIG, {})
    assert list(tmp_path.iterdir()) == []


def test_readers_name_the_missing_file(tmp_path: Path) -> None:
    (tmp_path / ADAPTER_CONFIG_FILE).write_text(json.dumps(LORA_CONFIG))
    with pytest.raises(AdapterError, match=r"adapter_model\.safetensors is missing"):
        read_adapter_tensors(tmp_path)
    (tmp_path / ADAPTER_CONFIG_FILE).write_text("{not json")
    with pytest.raises(AdapterError, match="cannot read adapter config"):
        read_adapter_config(tmp_path)


def _trained_peft_model() -> PeftModel:
    peft_model = get_peft_model(
        _tiny_model(), LoraConfig(r=2, lora_alpha=4, target_modules=["q_proj", "v_proj"])
    )
    assert isinstance(peft_model, PeftModel)
    with torch.no_grad():
        for name, parameter in peft_model.named_parameters():
            if "lora_B" in name:
                parameter.normal_(generator=torch.Generator().manual_seed(7))
    return peft_model


def test_saved_adapter_loads_unchanged_onto_a_fresh_model(tmp_path: Path) -> None:
    peft_model = _trained_peft_model()
    save_peft_adapter(peft_model, tmp_path, base_model_digest=BASE_DIGEST)
    assert sorted(path.name for path in tmp_path.iterdir()) == sorted(
        [ADAPTER_CONFIG_FILE, ADAPTER_WEIGHTS_FILE]
    )
    loaded = load_adapter(_tiny_model(), tmp_path, trainable=False)
    expected = get_peft_model_state_dict(peft_model)
    actual = get_peft_model_state_dict(loaded)
    assert expected.keys() == actual.keys()
    assert all(torch.equal(actual[key], expected[key]) for key in expected)
    tokens = torch.tensor([[1, 2, 3, 4, 5]])
    with torch.no_grad():
        assert torch.equal(loaded(tokens).logits, peft_model(tokens).logits)


def test_adapter_tensor_matching_no_module_is_refused(tmp_path: Path) -> None:
    save_peft_adapter(_trained_peft_model(), tmp_path, base_model_digest=BASE_DIGEST)
    weights = tmp_path / ADAPTER_WEIGHTS_FILE
    tensors = load_file(weights)
    key = next(name for name in tensors if "layers.0.self_attn.q_proj.lora_A" in name)
    tensors[key.replace("layers.0", "layers.5")] = tensors.pop(key)
    save_file(tensors, weights)
    with pytest.raises(AdapterError, match=r"layers\.5\.self_attn\.q_proj\.lora_A.*matches no"):
        load_adapter(_tiny_model(), tmp_path, trainable=False)


# --- token loss -------------------------------------------------------------------------

SEQUENCES = ([5, 6, 7, 8, 9, 10], [11, 12, 13], [14, 15, 16, 17], [18, 19])


def _padded(sequences: tuple[list[int], ...] | list[list[int]]) -> TokenBatch:
    width = max(len(ids) for ids in sequences)
    input_ids = torch.full((len(sequences), width), PAD, dtype=torch.long)
    attention_mask = torch.zeros_like(input_ids)
    for row, ids in enumerate(sequences):
        input_ids[row, : len(ids)] = torch.tensor(ids)
        attention_mask[row, : len(ids)] = 1
    # labels deliberately NOT masked: the attention mask alone must keep padding out
    return TokenBatch(input_ids=input_ids, attention_mask=attention_mask, labels=input_ids)


def test_padding_never_changes_the_loss() -> None:
    model = _tiny_model()
    with torch.no_grad():
        separate = [token_loss(model, _padded([ids])) for ids in SEQUENCES]
        padded_sum, padded_count = token_loss(model, _padded(SEQUENCES))
    assert (
        padded_count
        == sum(count for _, count in separate)
        == sum(len(ids) - 1 for ids in SEQUENCES)
    )
    assert padded_sum.item() == pytest.approx(sum(loss.item() for loss, _ in separate), rel=1e-5)


def test_labels_of_minus_100_are_not_counted() -> None:
    model = _tiny_model()
    batch = TokenBatch.from_ids(torch.tensor([[5, 6, 7, 8]]), torch.ones(1, 4, dtype=torch.long))
    ignored = TokenBatch(
        input_ids=batch.input_ids,
        attention_mask=batch.attention_mask,
        labels=torch.tensor([[5, 6, IGNORE_INDEX, 8]]),
    )
    with torch.no_grad():
        full_sum, full_count = token_loss(model, batch)
        part_sum, part_count = token_loss(model, ignored)
        first_sum, _ = token_loss(model, _padded([[5, 6]]))
    assert (full_count, part_count) == (3, 2)
    assert part_sum.item() < full_sum.item()
    assert first_sum.item() < part_sum.item()


def test_mean_loss_does_not_depend_on_batching_and_restores_mode() -> None:
    model = _tiny_model()
    model.train()
    one_batch = evaluate_token_loss(model, [_padded(SEQUENCES)])
    assert model.training
    singles = evaluate_token_loss(model, (_padded([ids]) for ids in SEQUENCES))
    assert one_batch == pytest.approx(singles, rel=1e-5)


def test_loss_keeps_its_gradient_for_training() -> None:
    model = _tiny_model()
    loss_sum, count = token_loss(model, _padded(SEQUENCES))
    (loss_sum / count).backward()  # type: ignore[no-untyped-call]
    assert model.lm_head.weight.grad is not None


def test_nothing_to_predict_is_an_error() -> None:
    with pytest.raises(TrainingError, match="no predicted tokens"):
        evaluate_token_loss(_tiny_model(), [_padded([[5], [6]])])
