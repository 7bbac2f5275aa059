"""Federated convergence against centralised training at equal compute.

Runs, on the demo base model (or ``--model llama``: a larger Llama-layout checkpoint
built once by ``larger_checkpoint.py`` and cached under the output directory's
``checkpoints/``) and the three shipped non-IID demo sites, with the project's own
training, CKKS encryption, aggregation and custodian decryption:

* ``centralised``: one LoRA adapter trained on the pooled training data for
  ``sites × steps`` optimiser steps (the compute of the whole federation), at each
  ``--central-lr``; the gaps are measured against the best of them;
* the federated ``VARIANTS``: factor averaging or frozen A (FFA-LoRA), a server
  optimiser (FedAvg with η, FedAvgM, FedAdam) and the sites' learning rate.

Every federated variant gives each site ``steps`` optimiser steps in total, split
evenly over the rounds, and starts each round from the previous global adapter. The
held-out loss (the union of the sites' ``eval.jsonl``) is measured after every round.
Masking is left out: it changes no number (the masked sum is byte-identical, see
tests/federation/test_masking.py) and DP is off by default, as in the pipeline.
The report goes to ``bench/results/convergence.json`` with a PNG plot beside it;
variants run in separate processes (``--variant``, ``--no-centralised``, ``--out``)
are merged with ``--combine``.

    .venv/bin/python bench/bench_convergence.py --rounds 10 --steps 60
    .venv/bin/python bench/bench_convergence.py --model llama --variant fedavg_factors
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import torch
from larger_checkpoint import LlamaRecipe, build_larger_checkpoint

from tensorguard.crypto import CompositeSigningKey
from tensorguard.federation import (
    Custodian,
    CustodianLedger,
    RoundSpec,
    ServerOptimizerRule,
    ServerOptimizerState,
    SiteUpdateConfig,
    aggregate_updates,
    apply_update,
    build_site_update,
    create_federation_context,
    load_secret_context,
    server_step,
    write_peft_adapter,
)
from tensorguard.held_out import HeldOutSet, load_held_out_set, load_with_adapter
from tensorguard.hf import load_causal_lm, read_adapter_tensors
from tensorguard.sites import demo_site_registry
from tensorguard.training.base_model import build_default_base_model
from tensorguard.training.dataset import SiteDataset, load_site_dataset
from tensorguard.training.lora import (
    LoRAAdapterSpec,
    LoRATrainingConfig,
    create_initial_adapter,
    train_site_adapter,
)

FEDAVG = ServerOptimizerRule()


@dataclass(frozen=True)
class Variant:
    """One federated configuration: aggregation rule, server optimiser, site step size."""

    name: str
    frozen_lora_a: bool = False
    server: ServerOptimizerRule = FEDAVG
    site_learning_rate: float | None = None
    """The sites' AdamW learning rate; None is the pipeline's site_adapter default."""


VARIANTS: list[Variant] = [
    Variant("fedavg_factors"),
    Variant("fedavg_frozen_a", frozen_lora_a=True),
    Variant("fedavg_lr2_factors", server=ServerOptimizerRule(learning_rate=2.0)),
    Variant("fedadam_factors", server=ServerOptimizerRule(name="fedadam", learning_rate=1e-2)),
    Variant("fedavg_site5e-3", site_learning_rate=5e-3),
    Variant("fedavg_site8e-3", site_learning_rate=8e-3),
    Variant("fedavgm_0.5_factors", server=ServerOptimizerRule(name="fedavgm", beta1=0.5)),
    Variant(
        "fedavgm_0.5_site5e-3",
        server=ServerOptimizerRule(name="fedavgm", beta1=0.5),
        site_learning_rate=5e-3,
    ),
]
"""The federated variants, the pipeline's defaults first."""
CENTRAL_LEARNING_RATES = (3e-3, 5e-3)
"""Centralised runs, the pipeline's site learning rate first; the gap is measured
against the best (the sweep in docs/FEDERATION.md tuned both sides alike)."""
CLIP_NORM = 20.0
"""The pipeline's default clip norm (RoundSpecConfig.clip_norm)."""
ADAPTER = LoRAAdapterSpec()
SITE_LEARNING_RATE = LoRATrainingConfig().learning_rate
"""The sites' AdamW learning rate by default (the pipeline's site_adapter default)."""


@dataclass(frozen=True)
class Setup:
    """What every variant shares: the base model, the sites' data and the held-out set."""

    base_dir: Path
    initial_adapter: Path
    sites: dict[str, SiteDataset]
    held_out: HeldOutSet
    scratch: Path

    def loss(self, adapter_dir: Path) -> float:
        """Held-out loss of the base model with ``adapter_dir``."""
        return self.held_out.loss(load_with_adapter(self.base_dir, adapter_dir))


def _train(
    setup: Setup,
    dataset: SiteDataset,
    start: Path,
    out_dir: Path,
    *,
    steps: int,
    seed: int,
    learning_rate: float,
    freeze_lora_a: bool = False,
) -> Path:
    config = LoRATrainingConfig(
        **ADAPTER.model_dump(),
        steps=steps,
        seed=seed,
        learning_rate=learning_rate,
        freeze_lora_a=freeze_lora_a,
    )
    return train_site_adapter(
        setup.base_dir, dataset, config, out_dir, initial_adapter_dir=start
    ).adapter_dir


def centralised(setup: Setup, total_steps: int, learning_rate: float) -> list[float]:
    """One adapter on the pooled training texts, for the federation's total steps."""
    pooled = SiteDataset(
        site_dir=setup.scratch,
        train_texts=tuple(t for d in setup.sites.values() for t in d.train_texts),
        eval_texts=tuple(t for d in setup.sites.values() for t in d.eval_texts),
        train_sha256="pooled",
        eval_sha256="pooled",
        digest="pooled",
    )
    out = _train(
        setup,
        pooled,
        setup.initial_adapter,
        setup.scratch / f"central-{learning_rate:g}",
        steps=total_steps,
        seed=1,
        learning_rate=learning_rate,
    )
    return [setup.loss(out)]


def federated(
    setup: Setup,
    rounds: int,
    steps: int,
    *,
    frozen_lora_a: bool,
    server: ServerOptimizerRule | None = None,
    site_learning_rate: float = SITE_LEARNING_RATE,
) -> list[float]:
    """Held-out loss after each of ``rounds`` encrypted rounds (FedAvg unless ``server``
    names another server optimiser)."""
    rule = server or ServerOptimizerRule()
    state: ServerOptimizerState | None = None
    keys = create_federation_context()
    secret = load_secret_context(keys.secret_context_bytes, keys.public)
    signers = {site: CompositeSigningKey.generate() for site in setup.sites}
    registered = {site: key.public_key() for site, key in signers.items()}
    weights = {site: float(d.train_count) for site, d in setup.sites.items()}
    label = (
        "frozen" if frozen_lora_a else "factors"
    ) + f"-{rule.name}-{rule.learning_rate:g}-site{site_learning_rate:g}"
    local_steps = max(1, steps // rounds)
    reference_dir = setup.initial_adapter
    losses: list[float] = []
    for round_index in range(rounds):
        round_id = f"{label}-{round_index:03d}"
        reference = read_adapter_tensors(reference_dir)
        spec = RoundSpec.from_reference(
            round_id,
            "b" * 64,
            reference,
            max(weights.values()),
            clip_norm=CLIP_NORM,
            frozen_lora_a=frozen_lora_a,
        )
        envelopes = []
        for index, (site, dataset) in enumerate(setup.sites.items()):
            trained_dir = _train(
                setup,
                dataset,
                reference_dir,
                setup.scratch / round_id / site,
                steps=local_steps,
                seed=100 * round_index + index,
                learning_rate=site_learning_rate,
                freeze_lora_a=frozen_lora_a,
            )
            envelopes.append(
                build_site_update(
                    trained=read_adapter_tensors(trained_dir),
                    reference=reference,
                    spec=spec,
                    site_id=site,
                    weight=weights[site],
                    public=keys.public,
                    signer=signers[site],
                    config=SiteUpdateConfig(clip_norm=CLIP_NORM),
                ).envelope
            )
        result = aggregate_updates(envelopes, registered, spec, keys.public, min_sites=2)
        ledger = CustodianLedger(
            setup.scratch / f"{round_id}.ledger", CompositeSigningKey.generate()
        )
        mean_delta = Custodian(secret, registered, ledger).decrypt(result, envelopes).mean_delta
        next_dir = setup.scratch / round_id / "global"
        step, state = server_step(rule, mean_delta, state)
        write_peft_adapter(apply_update(reference, step), reference_dir, next_dir)
        reference_dir = next_dir
        losses.append(setup.loss(next_dir))
        print(f"  {label} round {round_index + 1}/{rounds}: held-out loss {losses[-1]:.4f}")
    return losses


def timed(run: Callable[[], list[float]]) -> tuple[list[float], float]:
    """``run()`` and its wall-clock seconds."""
    started = time.perf_counter()
    return run(), time.perf_counter() - started


def plot(report: dict[str, object], path: Path) -> None:
    """Held-out loss per round for each variant, the centralised result as a line."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as exc:
        raise SystemExit(
            "the plot needs matplotlib: .venv/bin/pip install -c constraints.txt '.[bench]'"
        ) from exc
    variants = report["variants"]
    best = report["centralised_best"]
    model = report["model"]
    assert isinstance(variants, dict)
    assert isinstance(best, dict)
    assert isinstance(model, dict)
    figure, axes = plt.subplots(figsize=(7.2, 4.4))
    base_loss = report["base_loss"]
    assert isinstance(base_loss, float)
    axes.axhline(base_loss, color="grey", linestyle=":", label="base model")
    central = float(best["loss"])
    axes.axhline(
        central, color="black", linestyle="--", label=f"centralised (lr {best['learning_rate']:g})"
    )
    axes.axhline(central * 1.05, color="black", linestyle=":", linewidth=0.8, label="+5 %")
    for name, variant in variants.items():
        losses = variant["losses"]
        axes.plot(range(1, len(losses) + 1), losses, marker="o", label=name)
    axes.set_xlabel("round")
    axes.set_ylabel("held-out loss")
    axes.set_title(f"Federated LoRA vs centralised at equal optimiser steps ({model['name']})")
    axes.legend(fontsize="small")
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def _base_model(
    model: str, out: Path, scratch: Path, pretrain_steps: int
) -> tuple[Path, dict[str, object]]:
    """The base model directory and a description of it for the report."""
    if model == "demo":
        info = build_default_base_model(scratch / "base")
        return info.path, {"name": "demo", "parameters": info.parameter_count}
    checkpoint = out.parent / "checkpoints" / "llama"
    summary = build_larger_checkpoint(checkpoint, LlamaRecipe(pretrain_steps=pretrain_steps))
    return checkpoint, {"name": "llama", "path": str(checkpoint), **summary}


def main() -> None:
    """Parse arguments, run every variant, write the JSON report and the plot."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=10, help="federated rounds (≤ 10)")
    parser.add_argument("--steps", type=int, default=60, help="optimiser steps per site")
    parser.add_argument(
        "--model",
        choices=["demo", "llama"],
        default="demo",
        help="demo: the pipeline's default base model; llama: a larger Llama-layout "
        "checkpoint built once and cached under the output directory's checkpoints/",
    )
    parser.add_argument(
        "--out", type=Path, help="report path (default bench/results/convergence[_llama].json)"
    )
    parser.add_argument(
        "--variant",
        action="append",
        choices=[variant.name for variant in VARIANTS],
        help="federated variants to run (default: all)",
    )
    parser.add_argument(
        "--central-lr",
        action="append",
        type=float,
        help=f"centralised learning rates to try (default: {CENTRAL_LEARNING_RATES})",
    )
    parser.add_argument(
        "--no-centralised",
        action="store_true",
        help="run only the federated variants (combine with a report that has centralised)",
    )
    parser.add_argument(
        "--pretrain-steps",
        type=int,
        default=LlamaRecipe().pretrain_steps,
        help="pretraining steps of the llama checkpoint (part of its cache key)",
    )
    parser.add_argument(
        "--combine",
        nargs="+",
        type=Path,
        help="merge these reports of the same setup into --out instead of running",
    )
    args = parser.parse_args()
    out: Path = args.out or Path(
        "bench/results/convergence.json"
        if args.model == "demo"
        else "bench/results/convergence_llama.json"
    )
    if args.combine:
        combine(args.combine, out)
        return
    central_rates = () if args.no_centralised else tuple(args.central_lr or CENTRAL_LEARNING_RATES)
    with tempfile.TemporaryDirectory() as scratch_name:
        scratch = Path(scratch_name)
        base_dir, model_report = _base_model(args.model, out, scratch, args.pretrain_steps)
        registry = demo_site_registry()
        sites = {site: load_site_dataset(registry[site].data_dir) for site in sorted(registry)}
        initial = scratch / "initial"
        create_initial_adapter(base_dir, ADAPTER, initial, seed=0)
        held_out = load_held_out_set(base_dir, {s: registry[s].data_dir for s in registry})
        setup = Setup(base_dir, initial, sites, held_out, scratch)
        base_loss = held_out.loss(load_causal_lm(base_dir, dtype=torch.float32))
        print(f"base model held-out loss {base_loss:.4f}")
        total = args.steps * len(sites)
        central: dict[str, dict[str, object]] = {}
        for rate in central_rates:
            losses, seconds = timed(partial(centralised, setup, total, rate))
            print(f"centralised ({total} steps on pooled data, lr {rate:g}): {losses[0]:.4f}")
            central[f"{rate:g}"] = {"loss": losses[0], "seconds": seconds, "steps": total}
        variants: dict[str, dict[str, object]] = {}
        for variant in VARIANTS:
            if args.variant and variant.name not in args.variant:
                continue
            site_rate = variant.site_learning_rate or SITE_LEARNING_RATE
            losses, seconds = timed(
                partial(
                    federated,
                    setup,
                    args.rounds,
                    args.steps,
                    frozen_lora_a=variant.frozen_lora_a,
                    server=variant.server,
                    site_learning_rate=site_rate,
                )
            )
            variants[variant.name] = {
                "losses": losses,
                "seconds": seconds,
                "frozen_lora_a": variant.frozen_lora_a,
                "site_learning_rate": site_rate,
                "server": variant.server.model_dump(),
            }
    report: dict[str, object] = {
        "machine": {"platform": platform.platform(), "python": platform.python_version()},
        "model": model_report,
        "sites": sorted(sites),
        "steps_per_site": args.steps,
        "rounds": args.rounds,
        "local_steps": max(1, args.steps // args.rounds),
        "base_loss": base_loss,
        "centralised": central,
        "variants": variants,
    }
    write_report(report, out)


def combine(paths: list[Path], out: Path) -> None:
    """Merge reports of the same setup (e.g. variants run in parallel processes)."""
    reports = [json.loads(path.read_text()) for path in paths]
    first = reports[0]
    same = ("sites", "steps_per_site", "rounds", "base_loss")
    for path, other in zip(paths[1:], reports[1:], strict=True):
        differing = [key for key in same if other[key] != first[key]]
        if other["model"]["name"] != first["model"]["name"]:
            differing.append("model")
        if differing:
            raise SystemExit(f"{path}: another setup than {paths[0]} ({', '.join(differing)})")
    merged = {key: first[key] for key in ("machine", "model", *same, "local_steps")}
    merged["centralised"] = {k: v for r in reports for k, v in r["centralised"].items()}
    merged["variants"] = {k: v for r in reports for k, v in r["variants"].items()}
    merged["combined_from"] = [str(path) for path in paths]
    write_report(merged, out)


def write_report(report: dict[str, Any], out: Path) -> None:
    """Add the best centralised loss and every variant's gap to it; write JSON and PNG."""
    central: dict[str, dict[str, float]] = report["centralised"]
    variants: dict[str, dict[str, Any]] = report["variants"]
    if central:
        best_rate = min(central, key=lambda rate: central[rate]["loss"])
        best = central[best_rate]["loss"]
        report["centralised_best"] = {"learning_rate": float(best_rate), "loss": best}
        report["final_gap_to_centralised"] = {
            name: (v["losses"][-1] - best) / best for name, v in variants.items()
        }
        report["goal"] = "final federated loss within 5 % of the best centralised loss"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    if central:
        plot(report, out.with_suffix(".png"))
        for name, value in report["final_gap_to_centralised"].items():
            final = variants[name]["losses"][-1]
            print(f"{name}: final {final:.4f}, gap to centralised {value:+.1%}")
    print(f"wrote {out}" + (f" and {out.with_suffix('.png')}" if central else ""))


if __name__ == "__main__":
    main()
