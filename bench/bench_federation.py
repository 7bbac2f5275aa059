"""Benchmark encrypted federated aggregation against baselines measured in the same run.

Measures, for ``--sites`` sites each sending ``--params`` LoRA values:

* ciphertext expansion vs fp32 for TensorGuard's parameters (the round's packing, complex:
  N values per ciphertext, and the older real packing, N/2, for comparison) and for
  NVIDIA FLARE's default TenSEAL CKKS setting (N=8192, primes [60, 40, 40], scale 2^40),
  packed N/2 values per ciphertext by the same loop as the real packing;
* site encryption time (the whole site update: delta, clip, weight, encrypt, sign)
  and CKKS encryption alone, also for the FLARE setting;
* aggregation time (signature checks, ciphertext validation, homomorphic sum) versus
  the plaintext weighted FedAvg of the same values in numpy;
* custodian time (recompute the sum from the signed envelopes, ledger, decrypt) and
  the relative error against plaintext FedAvg;
* pairwise masking (secure aggregation over the CKKS ciphertexts): pair-secret
  establishment through a mailbox (once per key epoch), the per-round masking cost of
  one site (seed derivation + masking every chunk), and a masked round against an
  unmasked round of the same sites (site updates, aggregation, custodian), with the
  masked wire size and a dropout recovered from the survivors' seed reveals.

The masked and unmasked site updates are built alternately, site by site, so load
changes on a shared machine hit both.

Prints ratios and writes JSON (default ``bench/results/federation.json``).
Run: ``.venv/bin/python bench/bench_federation.py [--params 1000000] [--sites 10]``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import numpy as np
import tenseal as ts
import torch

from tensorguard.crypto import CompositeSigningKey, XWingPrivateKey
from tensorguard.federation import (
    Custodian,
    CustodianLedger,
    FederationParams,
    InMemoryPairSecretStore,
    Packing,
    PairwiseMailbox,
    PairwiseSecrets,
    RoundSpec,
    SiteUpdateConfig,
    TensorLayout,
    aggregate_updates,
    build_site_update,
    chunk_lengths,
    close_round_in_process,
    create_federation_context,
    encrypt_vector,
    load_secret_context,
    mask_encrypted_vector,
    mask_level,
    site_pairwise_secrets,
)

T = TypeVar("T")
FLARE_N = 8192
FLARE_PRIMES = [60, 40, 40]
FLARE_SCALE = 2.0**40
ROUND_ID = "bench-round"
AGGREGATION_REPEATS = 3
MASK_EPOCH = "bench-epoch"


def timed(function: Callable[[], T], repeats: int = 1) -> tuple[T, float]:
    """Run ``function`` ``repeats`` times; return its last result and the fastest time.

    The minimum is the least noisy estimate on a shared machine.
    """
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        result = function()
        best = min(best, time.perf_counter() - started)
    return result, best


def lora_like(parameters: int, rank: int = 16, width: int = 1024) -> dict[str, torch.Tensor]:
    """A LoRA-shaped reference adapter of about ``parameters`` values (B zero, A random)."""
    per_module = 2 * rank * width
    modules = max(1, -(-parameters // per_module))
    generator = torch.Generator().manual_seed(0)
    tensors: dict[str, torch.Tensor] = {}
    for index in range(modules):
        prefix = f"base_model.model.layers.{index:03d}.q_proj"
        tensors[f"{prefix}.lora_A.weight"] = (
            torch.rand(rank, width, generator=generator) * 2 - 1
        ) / width**0.5
        tensors[f"{prefix}.lora_B.weight"] = torch.zeros(width, rank)
    return tensors


def flare_encrypt(values: np.ndarray) -> bytes:
    """FLARE's default CKKS setting, packed N/2 per ciphertext by the same loop as ours."""
    context = ts.context(ts.SCHEME_TYPE.CKKS, FLARE_N, coeff_mod_bit_sizes=FLARE_PRIMES)
    context.global_scale = FLARE_SCALE
    blobs, offset = [], 0
    for count in chunk_lengths(values.size, FLARE_N // 2):
        blobs.append(ts.ckks_vector(context, values[offset : offset + count].tolist()).serialize())
        offset += count
    return b"".join(blobs)


def establish_pair_secrets(
    signers: dict[str, CompositeSigningKey], mailbox_dir: Path
) -> tuple[dict[str, PairwiseSecrets], list[float]]:
    """Every site's pair secrets via one mailbox, sites in roster order; per-site seconds.

    The first site makes every offer of its pairs, the last opens every one.
    """
    kem_keys = {site: XWingPrivateKey.generate() for site in signers}
    roster_kem = {site: key.public_key() for site, key in kem_keys.items()}
    verify_keys = {site: signer.public_key() for site, signer in signers.items()}
    mailbox = PairwiseMailbox(mailbox_dir)
    secrets: dict[str, PairwiseSecrets] = {}
    seconds: list[float] = []
    for site, signer in signers.items():
        started = time.perf_counter()
        secrets[site] = site_pairwise_secrets(
            epoch_id=MASK_EPOCH,
            site_id=site,
            roster=list(signers),
            mailbox=mailbox,
            store=InMemoryPairSecretStore(),
            signer=signer,
            kem_private=kem_keys[site],
            roster_kem_keys=roster_kem,
            signing_keys=verify_keys,
        )
        seconds.append(time.perf_counter() - started)
    return secrets, seconds


def run(parameters: int, sites: int) -> dict[str, object]:
    """Run every measurement once and return the report."""
    params = FederationParams()
    keys, ceremony_seconds = timed(lambda: create_federation_context(params))
    secret = load_secret_context(keys.secret_context_bytes, keys.public)
    reference = lora_like(parameters)
    layout = TensorLayout.from_tensors(reference)
    signers = {f"site-{i:02d}": CompositeSigningKey.generate() for i in range(sites)}
    weights = {site: float(500 + 731 * i % 9000) for i, site in enumerate(signers)}
    caps = dict.fromkeys(signers, 1e4)
    spec = RoundSpec.from_reference(
        ROUND_ID, "0" * 64, reference, max_site_weight=1e4, site_weight_caps=caps
    )
    masked_spec = RoundSpec.from_reference(
        ROUND_ID,
        "0" * 64,
        reference,
        max_site_weight=1e4,
        site_weight_caps=caps,
        mask_epoch=MASK_EPOCH,
    )
    rng = np.random.default_rng(1)
    trained = {
        site: {
            name: tensor + torch.from_numpy(rng.normal(0, 1e-2, tensor.shape).astype(np.float32))
            for name, tensor in reference.items()
        }
        for site in signers
    }

    scratch_dir = tempfile.TemporaryDirectory()
    scratch = Path(scratch_dir.name)
    pair_secrets, establish_seconds = establish_pair_secrets(signers, scratch / "mailbox")

    envelopes: list[bytes] = []
    masked_envelopes: list[bytes] = []
    site_seconds: list[float] = []
    masked_site_seconds: list[float] = []
    encrypt_seconds: list[float] = []
    masked_encrypt_seconds: list[float] = []
    for site, signer in signers.items():
        for masked in (False, True):  # alternately, so load changes hit both
            started = time.perf_counter()
            update = build_site_update(
                trained=trained[site],
                reference=reference,
                spec=masked_spec if masked else spec,
                site_id=site,
                weight=weights[site],
                public=keys.public,
                signer=signer,
                config=SiteUpdateConfig(clip_norm=1e6),
                pairwise=pair_secrets[site] if masked else None,
            )
            seconds = time.perf_counter() - started
            (masked_envelopes if masked else envelopes).append(update.envelope)
            (masked_site_seconds if masked else site_seconds).append(seconds)
            (masked_encrypt_seconds if masked else encrypt_seconds).append(update.encrypt_seconds)

    registered = {site: signer.public_key() for site, signer in signers.items()}

    def custodian_for(ledger_name: str) -> Custodian:
        ledger = CustodianLedger(scratch / ledger_name, CompositeSigningKey.generate())
        return Custodian(secret, registered, ledger)

    # Unmasked and masked aggregation interleaved, AGGREGATION_REPEATS times each, wall
    # and CPU time of every run, with the load average around them (the machine is shared).
    load_before = os.getloadavg()[0]
    runs: dict[bool, list[tuple[float, float]]] = {False: [], True: []}
    for _ in range(AGGREGATION_REPEATS):
        for masked in (False, True):
            started, cpu_started = time.perf_counter(), time.process_time()
            outcome = aggregate_updates(
                masked_envelopes if masked else envelopes,
                registered,
                masked_spec if masked else spec,
                keys.public,
                min_sites=sites,
            )
            runs[masked].append((time.perf_counter() - started, time.process_time() - cpu_started))
            if masked:
                masked_result = outcome
            else:
                result = outcome
    load_after = os.getloadavg()[0]
    aggregate_seconds = min(wall for wall, _ in runs[False])
    masked_aggregate_seconds = min(wall for wall, _ in runs[True])
    aggregate_cpu = min(cpu for _, cpu in runs[False])
    masked_aggregate_cpu = min(cpu for _, cpu in runs[True])

    def run_stats(masked: bool) -> dict[str, object]:
        walls = [wall for wall, _ in runs[masked]]
        cpus = [cpu for _, cpu in runs[masked]]
        return {
            "wall_seconds": walls,
            "wall_min": min(walls),
            "wall_median": float(np.median(walls)),
            "cpu_seconds": cpus,
            "cpu_min": min(cpus),
            "cpu_median": float(np.median(cpus)),
        }

    # The ledger lets the custodian re-derive the very same aggregate, so repeats are fine.
    custodian = custodian_for("ledger.jsonl")
    decryption, decrypt_seconds = timed(
        lambda: custodian.decrypt(result, envelopes, dtype=torch.float64), repeats=2
    )
    # Closing the masked round: every site acknowledges the accepted set, then reveals
    # its self seed; the custodian removes the self masks before decrypting.
    masked_reveals, close_seconds = timed(
        lambda: close_round_in_process(
            pair_secrets,
            signers,
            round_id=ROUND_ID,
            accepted=list(signers),
            dropped=[],
            signing_keys=registered,
        )
    )
    masked_custodian = custodian_for("masked-ledger.jsonl")
    masked_decryption, masked_decrypt_seconds = timed(
        lambda: masked_custodian.decrypt(
            masked_result, masked_envelopes, dtype=torch.float64, reveals=masked_reveals
        ),
        repeats=2,
    )

    # One site's masking alone: seed derivation plus masking every chunk of its update.
    context = keys.public.load_context()
    first_site = next(iter(signers))
    site_values = (
        weights[first_site]
        / spec.max_site_weight
        * (layout.flatten(trained[first_site]) - layout.flatten(reference)).astype(np.float64)
    )
    site_ciphertexts = encrypt_vector(site_values, context, params)

    def mask_one_site() -> bytes:
        seeds = pair_secrets[first_site].mask_seeds(ROUND_ID)
        level = mask_level(context, params)
        return mask_encrypted_vector(site_ciphertexts, first_site, seeds, level).to_bytes()

    seeds_only, seed_seconds = timed(
        lambda: pair_secrets[first_site].mask_seeds(ROUND_ID), repeats=3
    )
    masked_payload, masking_seconds = timed(mask_one_site, repeats=2)
    unmasked_payload = site_ciphertexts.to_bytes()

    # Dropout: the first site never reports; the survivors reveal their seeds with it.
    survivors = list(signers)[1:]
    dropout_result = aggregate_updates(
        masked_envelopes[1:], registered, masked_spec, keys.public, min_sites=2
    )
    reveals, reveal_seconds = timed(
        lambda: close_round_in_process(
            pair_secrets,
            signers,
            round_id=ROUND_ID,
            accepted=survivors,
            dropped=[first_site],
            signing_keys=registered,
        )
    )
    dropout_custodian = custodian_for("dropout-ledger.jsonl")
    dropout_decryption, dropout_decrypt_seconds = timed(
        lambda: dropout_custodian.decrypt(
            dropout_result, masked_envelopes[1:], dtype=torch.float64, reveals=reveals
        )
    )
    scratch_dir.cleanup()
    mean_delta = decryption.mean_delta

    reference_flat = layout.flatten(reference).astype(np.float32)
    plain_updates = [
        layout.flatten(trained[site]).astype(np.float32) - reference_flat for site in signers
    ]
    weight_vector = np.array([weights[site] for site in signers], dtype=np.float64)

    def plaintext_fedavg(first: int = 0) -> np.ndarray:
        total = np.zeros(layout.numel, dtype=np.float64)
        for weight, update in zip(weight_vector[first:], plain_updates[first:], strict=True):
            total += weight * update
        mean: np.ndarray = total / weight_vector[first:].sum()
        return mean

    def relative_error(mean: dict[str, torch.Tensor], expected: np.ndarray) -> float:
        decrypted = layout.flatten(mean)
        return float(np.linalg.norm(decrypted - expected) / np.linalg.norm(expected))

    expected, plain_seconds = timed(plaintext_fedavg, repeats=5)
    error = relative_error(mean_delta, expected)
    masked_error = relative_error(masked_decryption.mean_delta, expected)
    dropout_error = relative_error(dropout_decryption.mean_delta, plaintext_fedavg(first=1))

    values = plain_updates[0].astype(np.float64)
    ours_seconds: list[float] = []
    flare_seconds: list[float] = []
    for _ in range(3):  # interleaved, so load changes on a shared machine hit both
        encrypted, seconds = timed(lambda: encrypt_vector(values, context, params).to_bytes())
        ours_seconds.append(seconds)
        flare_payload, seconds = timed(lambda: flare_encrypt(values))
        flare_seconds.append(seconds)
    ours_bytes = len(encrypted)
    real_bytes = len(encrypt_vector(values, context, params, Packing.REAL).to_bytes())
    flare = {"expansion": len(flare_payload) / (4 * values.size)}
    ours_encrypt_only, flare_encrypt_only = min(ours_seconds), min(flare_seconds)
    envelope_bytes = len(envelopes[0])

    report: dict[str, object] = {
        "machine": {"python": platform.python_version(), "processor": platform.machine()},
        "parameters_per_site": layout.numel,
        "sites": sites,
        "tensorguard_params": params.summary(),
        "flare_params": {"poly_modulus_degree": FLARE_N, "coeff_mod_bit_sizes": FLARE_PRIMES},
        "ceremony_seconds": ceremony_seconds,
        "ckks_packing": spec.ckks_packing.value,
        "ciphertexts_per_site": len(
            chunk_lengths(layout.numel, spec.ckks_packing.values_per_ciphertext(params))
        ),
        "payload_bytes": ours_bytes,
        "envelope_bytes": envelope_bytes,
        "fp32_bytes": 4 * layout.numel,
        "expansion_vs_fp32": ours_bytes / (4 * layout.numel),
        "envelope_expansion_vs_fp32": envelope_bytes / (4 * layout.numel),
        "real_packing_expansion_vs_fp32": real_bytes / (4 * layout.numel),
        "flare_expansion_vs_fp32": flare["expansion"],
        "expansion_ratio_flare_over_ours": flare["expansion"] / (ours_bytes / (4 * layout.numel)),
        "site_update_seconds_median": float(np.median(site_seconds)),
        "site_encrypt_seconds_median": float(np.median(encrypt_seconds)),
        "encrypt_only_seconds": ours_encrypt_only,
        "flare_encrypt_only_seconds": flare_encrypt_only,
        "aggregate_seconds": aggregate_seconds,
        "aggregate_cpu_seconds": aggregate_cpu,
        "aggregation_runs": run_stats(masked=False),
        "aggregation_load_average_1min": [load_before, load_after],
        "plaintext_fedavg_seconds": plain_seconds,
        "encrypted_over_plaintext_aggregation": aggregate_seconds / plain_seconds,
        "decrypt_seconds": decrypt_seconds,
        "relative_error_vs_plaintext_fedavg": error,
    }
    site_median = float(np.median(site_seconds))
    masked_site_median = float(np.median(masked_site_seconds))
    # A round's compute: every site's update, the aggregation and the custodian.
    round_seconds = sum(site_seconds) + aggregate_seconds + decrypt_seconds
    masked_round_seconds = sum(masked_site_seconds) + masked_aggregate_seconds
    masked_round_seconds += close_seconds + masked_decrypt_seconds
    # Its latency when sites work in parallel: one (median) site, then the rest.
    latency = site_median + aggregate_seconds + decrypt_seconds
    masked_latency = masked_site_median + masked_aggregate_seconds + masked_decrypt_seconds
    masked_latency += close_seconds
    masked_envelope_bytes = len(masked_envelopes[0])
    report["masking"] = {
        "peers_per_site": sites - 1,
        "pair_establishment_seconds_per_site": {
            "min": min(establish_seconds),
            "median": float(np.median(establish_seconds)),
            "max": max(establish_seconds),
        },
        "pair_establishment_seconds_all_sites": sum(establish_seconds),
        "seed_derivation_seconds_per_site": seed_seconds,
        "seeds_derived_per_site": len(seeds_only.pair_seeds) + 1,
        "masking_seconds_per_site": masking_seconds,
        "masking_over_encrypt_only": masking_seconds / ours_encrypt_only,
        "site_update_seconds_median": masked_site_median,
        "site_encrypt_and_mask_seconds_median": float(np.median(masked_encrypt_seconds)),
        "masked_over_unmasked_site_update": masked_site_median / site_median,
        "aggregate_seconds": masked_aggregate_seconds,
        "aggregate_cpu_seconds": masked_aggregate_cpu,
        "aggregation_runs": run_stats(masked=True),
        "close_round_seconds_all_sites": close_seconds,
        "decrypt_seconds": masked_decrypt_seconds,
        "round_seconds": masked_round_seconds,
        "unmasked_round_seconds": round_seconds,
        "round_latency_seconds": masked_latency,
        "unmasked_round_latency_seconds": latency,
        "masked_vs_unmasked_round_latency_ratio": masked_latency / latency,
        "payload_bytes": len(masked_payload),
        "unmasked_payload_bytes": len(unmasked_payload),
        "envelope_bytes": masked_envelope_bytes,
        "expansion_vs_fp32": len(masked_payload) / (4 * layout.numel),
        "envelope_expansion_vs_fp32": masked_envelope_bytes / (4 * layout.numel),
        "wire_size_unchanged": len(masked_payload) == len(unmasked_payload)
        and masked_envelope_bytes == envelope_bytes,
        "relative_error_vs_plaintext_fedavg": masked_error,
        "dropout": {
            "dropped_sites": 1,
            "reveal_seconds_all_survivors": reveal_seconds,
            "custodian_seconds": dropout_decrypt_seconds,
            "relative_error_vs_plaintext_fedavg_of_survivors": dropout_error,
        },
    }
    report["masked_vs_unmasked_round_ratio"] = masked_round_seconds / round_seconds
    return report


def main() -> None:
    """Parse arguments, run, print ratios, write JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", type=int, default=1_000_000)
    parser.add_argument("--sites", type=int, default=10)
    parser.add_argument("--out", type=Path, default=Path("bench/results/federation.json"))
    arguments = parser.parse_args()
    report = run(arguments.params, arguments.sites)
    n = report["parameters_per_site"]
    print(f"{arguments.sites} sites x {n} parameters (fp32 {report['fp32_bytes']} bytes each)")
    print(
        f"expansion vs fp32: TensorGuard {report['expansion_vs_fp32']:.3f}x "
        f"({report['ckks_packing']} packing, {report['ciphertexts_per_site']} ciphertexts; "
        f"real packing {report['real_packing_expansion_vs_fp32']:.3f}x; "
        f"envelope {report['envelope_expansion_vs_fp32']:.3f}x), "
        f"FLARE default {report['flare_expansion_vs_fp32']:.2f}x "
        f"-> {report['expansion_ratio_flare_over_ours']:.2f}x smaller"
    )
    print(
        f"site update {report['site_update_seconds_median']:.3f}s median "
        f"(CKKS encrypt {report['site_encrypt_seconds_median']:.3f}s); encrypt+serialise "
        f"best of 3: ours {report['encrypt_only_seconds']:.3f}s, FLARE params "
        f"{report['flare_encrypt_only_seconds']:.3f}s"
    )
    runs = report["aggregation_runs"]
    load = report["aggregation_load_average_1min"]
    assert isinstance(runs, dict)
    assert isinstance(load, list)
    print(
        f"aggregation {report['aggregate_seconds']:.3f}s min, {runs['wall_median']:.3f}s median "
        f"of {len(runs['wall_seconds'])} (CPU {report['aggregate_cpu_seconds']:.3f}s min, "
        f"{runs['cpu_median']:.3f}s median; load average {load[0]:.1f}-{load[1]:.1f}) "
        "vs plaintext FedAvg "
        f"{report['plaintext_fedavg_seconds']:.4f}s "
        f"-> {report['encrypted_over_plaintext_aggregation']:.1f}x"
    )
    print(
        f"custodian decrypt {report['decrypt_seconds']:.3f}s; relative error vs "
        f"plaintext FedAvg {report['relative_error_vs_plaintext_fedavg']:.2e}"
    )
    masking = report["masking"]
    assert isinstance(masking, dict)
    establish = masking["pair_establishment_seconds_per_site"]
    print(
        f"pair secrets (once per key epoch, {masking['peers_per_site']} peers): "
        f"{establish['min']:.3f}-{establish['max']:.3f}s per site, "
        f"{masking['pair_establishment_seconds_all_sites']:.2f}s for all sites"
    )
    print(
        "masking one site per round: seeds "
        f"{1e3 * masking['seed_derivation_seconds_per_site']:.2f} ms "
        f"+ masking {report['ciphertexts_per_site']} chunks "
        f"{masking['masking_seconds_per_site']:.3f}s "
        f"({masking['masking_over_encrypt_only']:.2f}x encrypt+serialise)"
    )
    print(
        f"site update masked {masking['site_update_seconds_median']:.3f}s vs unmasked "
        f"{report['site_update_seconds_median']:.3f}s median "
        f"-> {masking['masked_over_unmasked_site_update']:.2f}x"
    )
    print(
        f"aggregation masked {masking['aggregate_seconds']:.3f}s "
        f"(CPU {masking['aggregate_cpu_seconds']:.3f}s) vs "
        f"{report['aggregate_seconds']:.3f}s; custodian masked "
        f"{masking['decrypt_seconds']:.3f}s vs {report['decrypt_seconds']:.3f}s"
    )
    print(
        f"round (all site updates + aggregation + custodian): masked "
        f"{masking['round_seconds']:.2f}s vs unmasked {masking['unmasked_round_seconds']:.2f}s "
        f"-> {report['masked_vs_unmasked_round_ratio']:.2f}x (goal <= 1.3); "
        f"with sites in parallel {masking['masked_vs_unmasked_round_latency_ratio']:.2f}x"
    )
    dropout = masking["dropout"]
    print(
        f"masked expansion {masking['expansion_vs_fp32']:.2f}x (envelope "
        f"{masking['envelope_expansion_vs_fp32']:.2f}x), wire size unchanged: "
        f"{masking['wire_size_unchanged']}; relative error "
        f"{masking['relative_error_vs_plaintext_fedavg']:.2e}; one dropout: reveals "
        f"{dropout['reveal_seconds_all_survivors']:.3f}s, custodian "
        f"{dropout['custodian_seconds']:.3f}s, error "
        f"{dropout['relative_error_vs_plaintext_fedavg_of_survivors']:.2e}"
    )
    arguments.out.parent.mkdir(parents=True, exist_ok=True)
    arguments.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {arguments.out}")


if __name__ == "__main__":
    main()
