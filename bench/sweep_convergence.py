"""A fast plaintext replica of bench_convergence's federated loop, for tuning sweeps.

On a shared CPU one encrypted ten-round run takes many minutes, mostly spent outside
the optimiser (reloading the model per site and round, evaluating, encrypting). This
replica keeps one model in memory and runs the same ``run_training_loop`` per site and
round (fresh AdamW, the same seeds, batch size, clip norm and equal weights), takes the
mean update in plaintext and applies the server rule (FedAvg with η, FedAvgM, FedAdam),
with an optional cosine decay of the site learning rate over the rounds. CKKS changes
the mean by about 1e-9 relative, so the replica tracks the encrypted run up to the
dropout stream (default FedAvg: 0.9926 here vs 0.9925 encrypted). Confirm a winner with
``bench_convergence.py``. One JSON line per configuration is appended to ``--out``.

    .venv/bin/python bench/sweep_convergence.py \\
        '{"kind": "central", "lr": 5e-3}' '{"lr": 5e-3, "momentum": 0.5}'
"""

from __future__ import annotations

import argparse
import json
import math
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from tensorguard.held_out import load_held_out_set
from tensorguard.hf import load_causal_lm
from tensorguard.hf.adapter import load_adapter
from tensorguard.sites import demo_site_registry
from tensorguard.training.base_model import build_default_base_model, load_tokenizer
from tensorguard.training.causal_lm import encode_texts, pad_token_id_of
from tensorguard.training.dataset import load_site_dataset
from tensorguard.training.lora import LoRAAdapterSpec, create_initial_adapter
from tensorguard.training.train_loop import LoopSettings, run_training_loop

CLIP_NORM = 20.0
Weights = dict[str, torch.Tensor]


def main() -> None:
    """Run each JSON configuration given on the command line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("configs", nargs="+", help="JSON objects (see _federated)")
    parser.add_argument("--out", type=Path, default=Path("bench/results/convergence_sweep.jsonl"))
    args = parser.parse_args()
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as scratch_name:
        scratch = Path(scratch_name)
        base = build_default_base_model(scratch / "base").path
        create_initial_adapter(base, LoRAAdapterSpec(), scratch / "initial", seed=0)
        registry = demo_site_registry()
        sites = {s: load_site_dataset(registry[s].data_dir) for s in sorted(registry)}
        held_out = load_held_out_set(base, {s: registry[s].data_dir for s in registry})
        tokenizer = load_tokenizer(base)
        pad = pad_token_id_of(tokenizer)
        data = {s: encode_texts(tokenizer, d.train_texts, 128) for s, d in sites.items()}
        model = load_adapter(
            load_causal_lm(base, dtype=torch.float32), scratch / "initial", trainable=True
        )
        params = {n: p for n, p in model.named_parameters() if p.requires_grad}

        def load(weights: Weights) -> None:
            with torch.no_grad():
                for name, parameter in params.items():
                    parameter.copy_(weights[name])

        def train(
            start: Weights, texts: list[list[int]], steps: int, lr: float, seed: int
        ) -> Weights:
            load(start)
            torch.manual_seed(seed)
            settings = LoopSettings(steps, 8, lr, 0.0, seed, 10**6, "sweep")
            run_training_loop(model, texts, pad, settings)
            return {n: p.detach().clone() for n, p in params.items()}

        def loss(weights: Weights) -> float:
            load(weights)
            value = held_out.loss(model)
            model.train()
            return value

        initial = {n: p.detach().clone() for n, p in params.items()}
        for raw in args.configs:
            config: dict[str, Any] = json.loads(raw)
            started = time.perf_counter()
            if config.get("kind") == "central":
                pooled = [seq for site in sorted(data) for seq in data[site]]
                losses = [loss(train(initial, pooled, 180, config["lr"], 1))]
            else:
                losses = _federated(config, initial, data, train, loss)
            record = config | {"losses": losses, "seconds": time.perf_counter() - started}
            args.out.parent.mkdir(parents=True, exist_ok=True)
            with args.out.open("a") as handle:
                handle.write(json.dumps(record) + "\n")
            print(json.dumps(record), flush=True)


def _federated(
    config: dict[str, Any], initial: Weights, data: Any, train: Any, loss: Any
) -> list[float]:
    """Keys: lr (site), rounds (10), eta (1), momentum (0: FedAvg; >0: FedAvgM),
    server ("fedavg" or "fedadam" with b1, b2, tau), decay (null or "cos")."""
    rounds = config.get("rounds", 10)
    local = 60 // rounds
    eta = config.get("eta", 1.0)
    momentum = config.get("momentum", 0.0)
    b1, b2, tau = config.get("b1", 0.9), config.get("b2", 0.99), config.get("tau", 1e-3)
    reference = {n: t.clone() for n, t in initial.items()}
    first = {n: torch.zeros_like(t) for n, t in initial.items()}
    second = {n: torch.zeros_like(t) for n, t in initial.items()}
    losses = []
    for round_index in range(rounds):
        lr = config.get("lr", 3e-3)
        if config.get("decay") == "cos":
            lr *= 0.5 * (1 + math.cos(math.pi * round_index / rounds))
        deltas = []
        for index, site in enumerate(sorted(data)):
            trained = train(reference, data[site], local, lr, 100 * round_index + index)
            delta = {n: trained[n] - reference[n] for n in reference}
            norm = math.sqrt(sum(float((d * d).sum()) for d in delta.values()))
            scale = min(1.0, CLIP_NORM / norm) if norm > 0 else 1.0
            deltas.append({n: d * scale for n, d in delta.items()})
        for name in reference:
            mean = sum(d[name] for d in deltas) / len(deltas)
            if config.get("server", "fedavg") == "fedavg":
                first[name] = momentum * first[name] + mean
                step = eta * first[name]
            else:
                first[name] = b1 * first[name] + (1 - b1) * mean
                second[name] = b2 * second[name] + (1 - b2) * mean * mean
                step = eta * first[name] / (second[name].sqrt() + tau)
            reference[name] = reference[name] + step
        losses.append(loss(reference))
    return losses


if __name__ == "__main__":
    main()
