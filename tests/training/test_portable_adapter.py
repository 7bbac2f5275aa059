"""Adapter configs name the base model by digest, never by the publisher's local path."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from tensorguard.federation._peft_adapter import write_peft_adapter
from tensorguard.hf import (
    ADAPTER_CONFIG_FILE,
    load_adapter,
    load_causal_lm,
    read_adapter_config,
    read_adapter_tensors,
    require_base_model,
)
from tensorguard.model_reference import base_model_reference
from tensorguard.training.base_model import BaseModelInfo
from tensorguard.training.dataset import load_site_dataset
from tensorguard.training.demo_data import DEMO_SITE_IDS, demo_sites_root
from tensorguard.training.errors import AdapterError
from tensorguard.training.lora import (
    LoRAAdapterSpec,
    LoRATrainingConfig,
    create_initial_adapter,
    train_site_adapter,
)

SPEC = LoRAAdapterSpec(r=2, alpha=4, target_modules=("q_proj", "v_proj"))


def _files_without_paths(directory: Path, *paths: Path) -> None:
    for file in directory.rglob("*"):
        if file.is_file():
            data = file.read_bytes()
            for path in paths:
                assert str(path).encode() not in data, f"{file} holds {path}"
                assert str(path.parent).encode() not in data, f"{file} holds {path.parent}"


def test_two_base_model_locations_give_identical_adapter_configs(
    base_model: BaseModelInfo, tmp_path: Path
) -> None:
    """The same base model at two paths (two state directories): initial and trained
    adapters' configs are byte-identical and name base-model@sha256:<digest>."""
    elsewhere = tmp_path / "elsewhere" / "artifacts" / "base_model" / "model"
    shutil.copytree(base_model.path, elsewhere)
    configs: list[bytes] = []
    for index, base_dir in enumerate((base_model.path, elsewhere)):
        initial = tmp_path / f"initial{index}"
        create_initial_adapter(base_dir, SPEC, initial, seed=3)
        trained = tmp_path / f"trained{index}"
        train_site_adapter(
            base_dir,
            load_site_dataset(demo_sites_root() / DEMO_SITE_IDS[0]),
            LoRATrainingConfig(**SPEC.model_dump(), steps=2),
            trained,
            initial_adapter_dir=initial,
            base_model_digest=base_model.digest,
        )
        for directory in (initial, trained):
            configs.append((directory / ADAPTER_CONFIG_FILE).read_bytes())
            _files_without_paths(directory, base_model.path, elsewhere)
    assert configs[0] == configs[2]
    assert configs[1] == configs[3]
    document = json.loads(configs[1])
    assert document["base_model_name_or_path"] == base_model_reference(base_model.digest)


def test_written_adapters_keep_the_reference_and_refuse_local_paths(
    base_model: BaseModelInfo, tmp_path: Path
) -> None:
    template = tmp_path / "template"
    create_initial_adapter(base_model.path, SPEC, template, base_model_digest=base_model.digest)
    tensors = read_adapter_tensors(template)
    out = write_peft_adapter(tensors, template, tmp_path / "global")
    assert read_adapter_config(out) == read_adapter_config(template)
    # A template that names its base model by a local path (what peft writes) is refused.
    config = read_adapter_config(template)
    config["base_model_name_or_path"] = str(base_model.path)
    (template / ADAPTER_CONFIG_FILE).write_text(json.dumps(config), encoding="utf-8")
    with pytest.raises(AdapterError, match="not a base-model reference"):
        write_peft_adapter(tensors, template, tmp_path / "leaky")
    assert not (tmp_path / "leaky").exists()
    # ... unless the writer names the base model itself.
    fixed = write_peft_adapter(
        tensors, template, tmp_path / "fixed", base_model_digest=base_model.digest
    )
    assert read_adapter_config(fixed)["base_model_name_or_path"] == base_model_reference(
        base_model.digest
    )


def test_an_adapter_loads_only_onto_the_base_model_it_names(
    base_model: BaseModelInfo, tmp_path: Path
) -> None:
    adapter = tmp_path / "adapter"
    create_initial_adapter(base_model.path, SPEC, adapter, base_model_digest=base_model.digest)
    require_base_model(adapter, base_model.digest)
    model = load_causal_lm(base_model.path, dtype=torch.float32)
    load_adapter(model, adapter, trainable=False, base_model_digest=base_model.digest)
    other = "0" * 64
    with pytest.raises(AdapterError, match="made for base model"):
        require_base_model(adapter, other)
    with pytest.raises(AdapterError, match="made for base model"):
        load_adapter(model, adapter, trainable=False, base_model_digest=other)
