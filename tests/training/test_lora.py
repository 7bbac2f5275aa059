"""Real LoRA training per demo site: loss falls, the adapter reloads, runs reproduce."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import ValidationError
from safetensors import safe_open

from tensorguard.digest import sha256_tree
from tensorguard.training.base_model import BaseModelInfo
from tensorguard.training.dataset import SiteDataset, load_site_dataset
from tensorguard.training.demo_data import DEMO_SITE_IDS, demo_sites_root
from tensorguard.training.errors import AdapterError, BaseModelError
from tensorguard.training.lora import (
    LoRATrainingConfig,
    TrainingResult,
    create_initial_adapter,
    evaluate_adapter,
    train_site_adapter,
)
from tests.training.conftest import files_of

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT = LoRATrainingConfig()


def _dataset(site_id: str) -> SiteDataset:
    return load_site_dataset(demo_sites_root() / site_id)


@pytest.fixture(scope="module")
def trained(
    base_model: BaseModelInfo, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, TrainingResult]:
    """Each demo site trained once with the default configuration."""
    root = tmp_path_factory.mktemp("adapters")
    return {
        site_id: train_site_adapter(base_model.path, _dataset(site_id), DEFAULT, root / site_id)
        for site_id in DEMO_SITE_IDS
    }


@pytest.mark.parametrize("site_id", DEMO_SITE_IDS)
def test_eval_loss_falls_on_every_site(trained: dict[str, TrainingResult], site_id: str) -> None:
    result = trained[site_id]
    assert result.eval_loss_after < result.eval_loss_before * 0.9
    assert result.perplexity_after < result.perplexity_before
    assert result.perplexity_after == pytest.approx(math.exp(result.eval_loss_after))
    curve = result.loss_curve
    assert len(curve) == result.steps == DEFAULT.steps
    assert sum(curve[-10:]) / 10 < sum(curve[:10]) / 10


@pytest.mark.parametrize("site_id", DEMO_SITE_IDS)
def test_adapter_reloads_and_reproduces_the_recorded_loss(
    base_model: BaseModelInfo, trained: dict[str, TrainingResult], site_id: str
) -> None:
    result = trained[site_id]
    reloaded = evaluate_adapter(
        base_model.path,
        result.adapter_dir,
        _dataset(site_id).eval_texts,
        max_length=DEFAULT.max_length,
        batch_size=DEFAULT.eval_batch_size,
    )
    assert reloaded == pytest.approx(result.eval_loss_after, rel=1e-6)
    assert reloaded != pytest.approx(result.eval_loss_before, rel=1e-3)


def test_adapter_files_match_the_configuration(trained: dict[str, TrainingResult]) -> None:
    result = trained[DEMO_SITE_IDS[0]]
    assert sorted(path.name for path in result.adapter_dir.iterdir()) == [
        "adapter_config.json",
        "adapter_model.safetensors",
    ]
    config = json.loads((result.adapter_dir / "adapter_config.json").read_text())
    assert config["peft_type"] == "LORA"
    assert (config["r"], config["lora_alpha"]) == (DEFAULT.r, DEFAULT.alpha)
    assert config["target_modules"] == sorted(DEFAULT.target_modules)
    with safe_open(str(result.adapter_dir / "adapter_model.safetensors"), "pt") as weights:
        names = list(weights.keys())
        stored = sum(math.prod(weights.get_slice(name).get_shape()) for name in names)
    assert stored == result.trainable_parameters > 0
    for module in DEFAULT.target_modules:
        assert any(f"{module}.lora_A" in name for name in names)
        assert any(f"{module}.lora_B" in name for name in names)
    assert result.adapter_digest == sha256_tree(result.adapter_dir)


def test_throughput_is_measured(trained: dict[str, TrainingResult]) -> None:
    result = trained[DEMO_SITE_IDS[1]]
    assert result.train_examples == _dataset(DEMO_SITE_IDS[1]).train_count
    assert result.eval_examples == _dataset(DEMO_SITE_IDS[1]).eval_count
    assert result.tokens_processed > DEFAULT.steps * DEFAULT.batch_size * 10
    assert result.tokens_per_second == pytest.approx(result.tokens_processed / result.seconds)


@pytest.mark.usefixtures("deterministic_torch")
def test_determinism_gives_byte_identical_adapters(
    base_model: BaseModelInfo, tmp_path: Path
) -> None:
    """Same seed twice in-process, and once more in a process with other hash seeds."""
    dataset = _dataset(DEMO_SITE_IDS[2])
    config = LoRATrainingConfig(steps=15)
    first = train_site_adapter(base_model.path, dataset, config, tmp_path / "first")
    second = train_site_adapter(base_model.path, dataset, config, tmp_path / "second")
    assert files_of(first.adapter_dir) == files_of(second.adapter_dir)
    assert first.loss_curve == second.loss_curve
    script = (
        "import sys; from pathlib import Path\n"
        "from tensorguard.training.determinism import enable_determinism\n"
        "from tensorguard.training.dataset import load_site_dataset\n"
        "from tensorguard.training.lora import LoRATrainingConfig, train_site_adapter\n"
        "enable_determinism(0)\n"
        "train_site_adapter(Path(sys.argv[1]), load_site_dataset(Path(sys.argv[2])),\n"
        "                   LoRATrainingConfig(steps=15), Path(sys.argv[3]))\n"
    )
    subprocess.run(
        [
            sys.executable,
            "-c",
            script,
            str(base_model.path),
            str(dataset.site_dir),
            str(tmp_path / "third"),
        ],
        cwd=REPO_ROOT,
        env={**os.environ, "PYTHONHASHSEED": "12345"},
        check=True,
        capture_output=True,
    )
    assert files_of(tmp_path / "third") == files_of(first.adapter_dir)


def test_a_different_seed_gives_a_different_adapter(
    base_model: BaseModelInfo, trained: dict[str, TrainingResult], tmp_path: Path
) -> None:
    other = train_site_adapter(
        base_model.path,
        _dataset(DEMO_SITE_IDS[0]),
        LoRATrainingConfig(steps=2, seed=9),
        tmp_path / "other",
    )
    assert other.adapter_digest != trained[DEMO_SITE_IDS[0]].adapter_digest


def test_progress_reports_steps_and_losses(base_model: BaseModelInfo, tmp_path: Path) -> None:
    lines: list[str] = []
    train_site_adapter(
        base_model.path,
        _dataset(DEMO_SITE_IDS[0]),
        LoRATrainingConfig(steps=4, log_every=2),
        tmp_path / "adapter",
        progress=lines.append,
    )
    step_lines = [line for line in lines if line.startswith("LoRA training: step")]
    assert [line.split("step ")[1].split()[0] for line in step_lines] == ["2/4", "4/4"]
    assert all("loss" in line for line in step_lines)
    assert any(line.startswith("eval after training") for line in lines)


def test_failure_during_training_leaves_nothing(base_model: BaseModelInfo, tmp_path: Path) -> None:
    output = tmp_path / "adapter"

    def interrupt(line: str) -> None:
        if "step 2/" in line:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train_site_adapter(
            base_model.path,
            _dataset(DEMO_SITE_IDS[0]),
            LoRATrainingConfig(steps=4, log_every=1),
            output,
            progress=interrupt,
        )
    assert list(tmp_path.iterdir()) == []


def test_unknown_target_modules_fail_clearly(base_model: BaseModelInfo, tmp_path: Path) -> None:
    with pytest.raises(AdapterError, match=r"target_modules \['c_attn'\]"):
        train_site_adapter(
            base_model.path,
            _dataset(DEMO_SITE_IDS[0]),
            LoRATrainingConfig(target_modules=("c_attn",)),
            tmp_path / "adapter",
        )
    assert list(tmp_path.iterdir()) == []


def test_non_hf_base_directory_fails_before_training(tmp_path: Path) -> None:
    (tmp_path / "base").mkdir()
    with pytest.raises(BaseModelError, match=r"config\.json is missing"):
        train_site_adapter(
            tmp_path / "base", _dataset(DEMO_SITE_IDS[0]), DEFAULT, tmp_path / "adapter"
        )
    assert not (tmp_path / "adapter").exists()


@pytest.mark.parametrize(
    "fields",
    [
        {"r": 0},
        {"dropout": 1.0},
        {"learning_rate": 0},
        {"steps": 0},
        {"max_length": 1},
        {"target_modules": ()},
        {"target_modules": ("q_proj", "q_proj")},
        {"target_modules": ("q_proj; rm",)},
        {"rank": 8},
    ],
)
def test_invalid_configuration_is_rejected(fields: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        LoRATrainingConfig.model_validate(fields)


def test_missing_adapter_files_fail_clearly(
    base_model: BaseModelInfo, trained: dict[str, TrainingResult], tmp_path: Path
) -> None:
    (tmp_path / "adapter_config.json").write_bytes(
        (trained[DEMO_SITE_IDS[0]].adapter_dir / "adapter_config.json").read_bytes()
    )
    with pytest.raises(AdapterError, match=r"adapter_model\.safetensors is missing"):
        evaluate_adapter(base_model.path, tmp_path, ["text"], max_length=16, batch_size=1)


def test_corrupt_adapter_weights_fail_clearly(
    base_model: BaseModelInfo, trained: dict[str, TrainingResult], tmp_path: Path
) -> None:
    source = trained[DEMO_SITE_IDS[0]].adapter_dir
    for path in source.iterdir():
        (tmp_path / path.name).write_bytes(path.read_bytes())
    weights = tmp_path / "adapter_model.safetensors"
    weights.write_bytes(weights.read_bytes()[:200])
    with pytest.raises(AdapterError, match="the adapter cannot be loaded"):
        evaluate_adapter(base_model.path, tmp_path, ["text"], max_length=16, batch_size=1)


def test_initial_adapter_is_seeded_and_leaves_the_model_unchanged(
    base_model: BaseModelInfo, trained: dict[str, TrainingResult], tmp_path: Path
) -> None:
    spec = DEFAULT.adapter_spec
    digest = create_initial_adapter(base_model.path, spec, tmp_path / "a", seed=3)
    assert create_initial_adapter(base_model.path, spec, tmp_path / "b", seed=3) == digest
    assert files_of(tmp_path / "a") == files_of(tmp_path / "b")
    assert create_initial_adapter(base_model.path, spec, tmp_path / "c", seed=4) != digest
    with safe_open(str(tmp_path / "a" / "adapter_model.safetensors"), "pt") as weights:
        names = weights.keys()  # a safe_open handle is not iterable itself
        tensors = {name: weights.get_tensor(name) for name in names}
    assert all(t.abs().sum() == 0 for name, t in tensors.items() if "lora_B" in name)
    assert all(t.abs().sum() > 0 for name, t in tensors.items() if "lora_A" in name)
    site_id = DEMO_SITE_IDS[0]
    unchanged = evaluate_adapter(
        base_model.path,
        tmp_path / "a",
        _dataset(site_id).eval_texts,
        max_length=DEFAULT.max_length,
        batch_size=DEFAULT.eval_batch_size,
    )
    assert unchanged == pytest.approx(trained[site_id].eval_loss_before, rel=1e-6)


def test_training_starts_from_the_initial_adapter(
    base_model: BaseModelInfo, trained: dict[str, TrainingResult], tmp_path: Path
) -> None:
    site_id = DEMO_SITE_IDS[1]
    config = LoRATrainingConfig(steps=20)
    digest = create_initial_adapter(base_model.path, config.adapter_spec, tmp_path / "init")
    result = train_site_adapter(
        base_model.path,
        _dataset(site_id),
        config,
        tmp_path / "site",
        initial_adapter_dir=tmp_path / "init",
    )
    assert result.initial_adapter_digest == digest
    assert result.eval_loss_before == pytest.approx(trained[site_id].eval_loss_before, rel=1e-6)
    assert result.eval_loss_after < result.eval_loss_before
    saved = json.loads((tmp_path / "site" / "adapter_config.json").read_text())
    assert (saved["r"], saved["lora_alpha"]) == (config.r, config.alpha)


def test_initial_adapter_of_another_shape_is_refused(
    base_model: BaseModelInfo, tmp_path: Path
) -> None:
    create_initial_adapter(base_model.path, DEFAULT.adapter_spec, tmp_path / "init")
    with pytest.raises(AdapterError, match=r"r 8 \(config asks 4\)"):
        train_site_adapter(
            base_model.path,
            _dataset(DEMO_SITE_IDS[0]),
            LoRATrainingConfig(r=4),
            tmp_path / "site",
            initial_adapter_dir=tmp_path / "init",
        )
    assert not (tmp_path / "site").exists()
