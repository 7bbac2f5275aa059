"""Measure how CKKS decryption noise spreads over the slots, and what that means for the
aggregate's fixed-point grid (#15; docs/REPRODUCIBILITY.md §2).

For ``--keys`` fresh key ceremonies with the federation's default parameters, encrypts one
full ciphertext of random values (N values, two per slot, complex packing as rounds use)
``--encryptions`` times and decrypts it, and sums ``--sites`` fresh encryptions
``--aggregates`` times. Reports, per key and pooled:

* the error scale (root mean square) against the model ``σ₁ = N / (6 · Δ)``;
* each slot's standard deviation (real and imaginary part pooled) relative to the mean
  over the slots: min, 1 %, median, 99 %, max; the model says ``σ_j² = σ² · X_j`` with
  ``X_j`` exponential (mean 1), so ``mean(X²)`` should be 2;
* the split-half correlation of that per-slot pattern (it belongs to the key) and the
  correlation between two keys' patterns (none);
* the pooled kurtosis (Laplace: 6, Gaussian: 3) and tail fractions ``P(|e| > t·σ₁)``
  against the Laplace tail ``exp(-√2 t)`` and the Gaussian ``erfc(t/√2)``;
* for the ``--sites`` sums: ``σ_S / (√S · σ₁)`` and the correlation of their per-slot
  pattern with the single encryptions';
* the refusal probability of a full round (``max_sites`` sites; ``MAX_ROUND_VALUES`` and
  10^6 values) extrapolated from each key's measured per-slot noise (Gaussian per slot,
  union bound), the model's per-round bounds averaged over key ceremonies
  (``round_failure_bounds``), and the bound for a key at the 10^-9 quantile of key
  generation, at the grid the old mean-error rule chose (2^-27), at 2^-26 and at the
  chosen grid.

Writes JSON (default ``bench/results/slot_noise.json``).
Run: ``.venv/bin/python bench/bench_slot_noise.py [--keys 4] [--encryptions 256]
[--sites 64] [--aggregates 16]`` (about 2 minutes on one core with the defaults).
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from tensorguard.federation import (
    MAX_ROUND_VALUES,
    ROUND_FAILURE_BOUND,
    WORST_SLOT_SAFETY,
    FederationParams,
    Packing,
    ckks_noise_std,
    create_federation_context,
    decrypt_vector,
    encrypt_vector,
    grid_bits_for,
    load_secret_context,
    round_failure_bounds,
    worst_key_refusal_bound,
    worst_slot_scale,
)

OLD_GRID_BITS = 27
TAIL_POINTS = (2.0, 4.0, 6.0, 8.0, 10.0)


def slot_std(errors: np.ndarray) -> np.ndarray:
    """Per-slot standard deviation of ``errors`` (shape ``(samples, N)``, complex-packed:
    values ``2j`` and ``2j+1`` are slot ``j``'s real and imaginary part)."""
    result: np.ndarray = np.sqrt(np.mean(errors.reshape(errors.shape[0], -1, 2) ** 2, axis=(0, 2)))
    return result


def refusal_probability(
    per_slot: np.ndarray, params: FederationParams, bits: int, values: int
) -> float:
    """Union bound over a round of ``values`` values, each Gaussian with its slot's
    measured standard deviation times √max_sites, past a quarter grid step."""
    margin = 0.25 * math.ldexp(1.0, -bits)
    scaled = per_slot * math.sqrt(params.max_sites)
    tails = np.array([math.erfc(margin / (s * math.sqrt(2.0))) for s in scaled])
    return min(1.0, float(values * np.mean(tails)))


def worst_key_bounds(params: FederationParams, grids: tuple[int, ...]) -> dict[str, Any]:
    """A key at the ``ROUND_FAILURE_BOUND`` quantile of key generation: its worst slot's
    standard deviation over the mean (``worst_slot_scale``) and the per-round refusal
    bound at each grid with every value as noisy as that slot (no safety factor)."""
    return {"worst_slot_over_sigma": worst_slot_scale(params)} | {
        f"k={k},values={MAX_ROUND_VALUES}": worst_key_refusal_bound(params, k, MAX_ROUND_VALUES)
        for k in grids
    }


def measure_key(
    params: FederationParams, encryptions: int, sites: int, aggregates: int, seed: int
) -> tuple[dict[str, Any], np.ndarray, np.ndarray]:
    """One key ceremony's measurements, its single-encryption errors and per-slot std."""
    keys = create_federation_context(params)
    public = keys.public
    secret = load_secret_context(keys.secret_context_bytes, public)
    context = public.load_context()
    rng = np.random.default_rng(seed)
    values = rng.uniform(-1.0, 1.0, params.poly_modulus_degree)
    errors = np.stack(
        [
            decrypt_vector(encrypt_vector(values, context, params, Packing.COMPLEX), secret.context)
            - values
            for _ in range(encryptions)
        ]
    )
    sigma1 = ckks_noise_std(params, 1)
    per_slot = slot_std(errors)
    relative = per_slot / float(np.mean(per_slot))
    x = per_slot**2 / float(np.mean(per_slot**2))
    halves = np.corrcoef(slot_std(errors[::2]), slot_std(errors[1::2]))[0, 1]
    pooled = errors.ravel() / sigma1
    sums = []
    for _ in range(aggregates):
        total = encrypt_vector(values, context, params, Packing.COMPLEX)
        for _ in range(sites - 1):
            total.add_in_place(encrypt_vector(values, context, params, Packing.COMPLEX))
        sums.append(decrypt_vector(total, secret.context) - sites * values)
    sum_errors = np.stack(sums)
    sum_slot = slot_std(sum_errors)
    bits = grid_bits_for(params)
    report: dict[str, Any] = {
        "rms_over_sigma1": float(np.sqrt(np.mean(errors**2)) / sigma1),
        "slot_std_over_mean": {
            name: float(np.quantile(relative, q))
            for name, q in (("min", 0.0), ("q01", 0.01), ("median", 0.5), ("q99", 0.99))
        }
        | {"max": float(relative.max())},
        "worst_slot_over_sigma1": float(per_slot.max() / sigma1),
        "mean_x_squared": float(np.mean(x**2)),
        "x_max": float(x.max()),
        "split_half_correlation": float(halves),
        "kurtosis": float(np.mean(pooled**4) / np.mean(pooled**2) ** 2),
        "tail": {f"{t:g}": float(np.mean(np.abs(pooled) > t)) for t in TAIL_POINTS},
        "max_abs_over_sigma1": float(np.max(np.abs(pooled))),
        f"sum{sites}_rms_over_sqrtS_sigma1": float(
            np.sqrt(np.mean(sum_errors**2)) / (math.sqrt(sites) * sigma1)
        ),
        f"sum{sites}_slot_pattern_correlation": float(np.corrcoef(per_slot, sum_slot)[0, 1]),
        f"sum{sites}_max_abs_over_quarter_step": float(
            np.max(np.abs(sum_errors)) / (0.25 * math.ldexp(1.0, -bits))
        ),
        "round_refusal_from_measured_slots": {
            f"k={k},values={n}": refusal_probability(per_slot, params, k, n)
            for k in (OLD_GRID_BITS, OLD_GRID_BITS - 1, bits)
            for n in (10**6, MAX_ROUND_VALUES)
        },
    }
    return report, errors, per_slot


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--keys", type=int, default=4)
    parser.add_argument("--encryptions", type=int, default=256)
    parser.add_argument("--sites", type=int, default=64)
    parser.add_argument("--aggregates", type=int, default=16)
    parser.add_argument("--out", type=Path, default=Path("bench/results/slot_noise.json"))
    args = parser.parse_args()
    params = FederationParams()
    sigma1 = ckks_noise_std(params, 1)
    keys, all_errors, patterns = [], [], []
    for index in range(args.keys):
        report, errors, per_slot = measure_key(
            params, args.encryptions, args.sites, args.aggregates, seed=index
        )
        keys.append(report)
        all_errors.append(errors.ravel() / sigma1)
        patterns.append(per_slot)
        print(f"key {index}: {json.dumps(report, indent=1)}")
    pooled = np.concatenate(all_errors)
    bits = grid_bits_for(params)
    model = {
        f"k={k}": {
            f"values={n}": dict(
                zip(
                    ("refused", "misrounded", "refused_safety", "misrounded_safety"),
                    (
                        *round_failure_bounds(params, k, n, safety=1.0),
                        *round_failure_bounds(params, k, n),
                    ),
                    strict=True,
                )
            )
            for n in (10**6, MAX_ROUND_VALUES)
        }
        for k in (OLD_GRID_BITS, OLD_GRID_BITS - 1, bits)
    }
    summary: dict[str, Any] = {
        "params": params.summary(),
        "sigma1_model": sigma1,
        "grid_bits": bits,
        "round_failure_bound": ROUND_FAILURE_BOUND,
        "worst_slot_safety": WORST_SLOT_SAFETY,
        "max_round_values": MAX_ROUND_VALUES,
        "encryptions_per_key": args.encryptions,
        "sites": args.sites,
        "aggregates_per_key": args.aggregates,
        "pooled_values": int(pooled.size),
        "pooled_kurtosis": float(np.mean(pooled**4) / np.mean(pooled**2) ** 2),
        "pooled_abs_quantiles_over_sigma1": {
            f"{q:g}": float(np.quantile(np.abs(pooled), q)) for q in (0.5, 0.99, 0.9999, 0.999999)
        }
        | {"max": float(np.max(np.abs(pooled)))},
        "pooled_tail": {
            f"{t:g}": {
                "measured": float(np.mean(np.abs(pooled) > t)),
                "laplace": math.exp(-math.sqrt(2.0) * t),
                "laplace_safety": math.exp(-math.sqrt(2.0) * t / WORST_SLOT_SAFETY),
                "gaussian": math.erfc(t / math.sqrt(2.0)),
            }
            for t in TAIL_POINTS
        },
        "worst_key": worst_key_bounds(params, (OLD_GRID_BITS, OLD_GRID_BITS - 1, bits)),
        "cross_key_pattern_correlation": float(np.corrcoef(patterns[0], patterns[-1])[0, 1])
        if len(patterns) > 1
        else None,
        "model_round_failure": model,
        "keys": keys,
    }
    print(json.dumps({k: v for k, v in summary.items() if k != "keys"}, indent=1))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(summary, indent=1) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
