"""Federated convergence against centralised training at equal compute.

Runs, on the demo base model and the three shipped non-IID demo sites, with the
project's own training, CKKS encryption, aggregation and custodian decryption:

* ``centralised``: one LoRA adapter trained on the pooled training data for
  ``sites × steps`` optimiser steps (the compute of the whole federation);
* ``fedavg_factors``: R rounds of FedAvg where sites train and send both LoRA factors;
* ``fedavg_frozen_a``: R rounds with every A frozen at the shared reference (FFA-LoRA,
  ``RoundSpec.frozen_lora_a``), which makes the average exact.

Every federated variant gives each site ``steps`` optimiser steps in total, split
evenly over the rounds, and starts each round from the previous global adapter. The
held-out loss (the union of the sites' ``eval.jsonl``) is measured after every round.
Masking is left out: it changes no number (the masked sum is byte-identical, see
tests/federation/test_masking.py) and DP is off by default, as in the pipeline.
The report goes to ``bench/results/convergence.json`` with a PNG plot beside it.

    .venv/bin/python bench/bench_convergence.py --rounds 5 --steps 60
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from tensorguard.crypto.composite import CompositeSigningKey
from tensorguard.federation.aggregation import aggregate_updates
from tensorguard.federation.context import create_federation_context, load_secret_context
from tensorguard.federation.custodian import Custodian, apply_update
from tensorguard.federation.custodian_ledger import CustodianLedger
from tensorguard.federation.peft_adapter import write_peft_adapter
from tensorguard.federation.round_spec import RoundSpec
from tensorguard.federation.server_optimizer import (
    ServerOptimizerRule,
    ServerOptimizerState,
    server_step,
)
from tensorguard.federation.site_update import SiteUpdateConfig, build_site_update
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

VARIANTS: list[tuple[str, bool, ServerOptimizerRule]] = [
    ("fedavg_factors", False, ServerOptimizerRule()),
    ("fedavg_frozen_a", True, ServerOptimizerRule()),
    ("fedavg_lr3_factors", False, ServerOptimizerRule(learning_rate=3.0)),
    ("fedavg_lr3_frozen_a", True, ServerOptimizerRule(learning_rate=3.0)),
    ("fedadam_factors", False, ServerOptimizerRule(name="fedadam", learning_rate=1e-2)),
]
"""(name, frozen A, server optimiser) of each federated variant."""
CLIP_NORM = 20.0
"""The pipeline's default clip norm (RoundSpecConfig.clip_norm)."""
ADAPTER = LoRAAdapterSpec()


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
    freeze_lora_a: bool = False,
) -> Path:
    config = LoRATrainingConfig(
        **ADAPTER.model_dump(), steps=steps, seed=seed, freeze_lora_a=freeze_lora_a
    )
    return train_site_adapter(
        setup.base_dir, dataset, config, out_dir, initial_adapter_dir=start
    ).adapter_dir


def centralised(setup: Setup, total_steps: int) -> list[float]:
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
        setup, pooled, setup.initial_adapter, setup.scratch / "central", steps=total_steps, seed=1
    )
    return [setup.loss(out)]


def federated(
    setup: Setup,
    rounds: int,
    steps: int,
    *,
    frozen_lora_a: bool,
    server: ServerOptimizerRule | None = None,
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
    label = ("frozen" if frozen_lora_a else "factors") + f"-{rule.name}-{rule.learning_rate:g}"
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
    assert isinstance(variants, dict)
    figure, axes = plt.subplots(figsize=(6.4, 4.0))
    axes.axhline(float(report["base_loss"]), color="grey", linestyle=":", label="base model")
    axes.axhline(
        variants["centralised"]["losses"][0], color="black", linestyle="--", label="centralised"
    )
    for name, variant in variants.items():
        if name == "centralised":
            continue
        losses = variant["losses"]
        axes.plot(range(1, len(losses) + 1), losses, marker="o", label=name)
    axes.set_xlabel("round")
    axes.set_ylabel("held-out loss")
    axes.set_title("Federated LoRA vs centralised at equal optimiser steps")
    axes.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def main() -> None:
    """Parse arguments, run every variant, write the JSON report and the plot."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5, help="federated rounds (≤ 10)")
    parser.add_argument("--steps", type=int, default=60, help="optimiser steps per site")
    parser.add_argument("--out", type=Path, default=Path("bench/results/convergence.json"))
    parser.add_argument(
        "--variant",
        action="append",
        choices=[name for name, _, _ in VARIANTS],
        help="federated variants to run (default: all)",
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch_name:
        scratch = Path(scratch_name)
        base_dir = scratch / "base"
        build_default_base_model(base_dir)
        registry = demo_site_registry()
        sites = {site: load_site_dataset(registry[site].data_dir) for site in sorted(registry)}
        initial = scratch / "initial"
        create_initial_adapter(base_dir, ADAPTER, initial, seed=0)
        held_out = load_held_out_set(base_dir, {s: registry[s].data_dir for s in registry})
        setup = Setup(base_dir, initial, sites, held_out, scratch)
        base_loss = held_out.loss(load_causal_lm(base_dir, dtype=torch.float32))
        print(f"base model held-out loss {base_loss:.4f}")
        total = args.steps * len(sites)
        central, central_s = timed(lambda: centralised(setup, total))
        print(f"centralised ({total} steps on pooled data): {central[0]:.4f}")
        variants: dict[str, dict[str, object]] = {
            "centralised": {"losses": central, "seconds": central_s, "steps": total}
        }
        for name, frozen, rule in VARIANTS:
            if args.variant and name not in args.variant:
                continue
            losses, seconds = timed(
                lambda frozen=frozen, rule=rule: federated(
                    setup, args.rounds, args.steps, frozen_lora_a=frozen, server=rule
                )
            )
            variants[name] = {"losses": losses, "seconds": seconds, **rule.model_dump()}
    finals = {name: v["losses"][-1] for name, v in variants.items() if name != "centralised"}  # type: ignore[index]
    gap = {name: (final - central[0]) / central[0] for name, final in finals.items()}
    report: dict[str, object] = {
        "machine": {"platform": platform.platform(), "python": platform.python_version()},
        "sites": sorted(sites),
        "steps_per_site": args.steps,
        "rounds": args.rounds,
        "base_loss": base_loss,
        "variants": variants,
        "final_gap_to_centralised": gap,
        "goal": "final federated loss within 5 % of centralised",
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    plot(report, args.out.with_suffix(".png"))
    for name, value in gap.items():
        print(f"{name}: final {finals[name]:.4f}, gap to centralised {value:+.1%}")
    print(f"wrote {args.out} and {args.out.with_suffix('.png')}")


if __name__ == "__main__":
    main()
