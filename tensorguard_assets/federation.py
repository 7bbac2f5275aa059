"""Federation stage: key ceremony, round spec, encrypted site updates, aggregation,
custodian decryption."""
# No "from __future__ import annotations": Dagster resolves config and resource
# parameter types from the runtime annotations. The federation's torch, TenSEAL and peft
# parts are imported inside the functions that use them: every Dagster process (runs,
# steps, daemon, webserver) imports this module, and most never use them.

import shutil
import time
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from dagster import (
    AssetCheckResult,
    AssetCheckSpec,
    AssetDep,
    AssetExecutionContext,
    AssetKey,
    AssetRecordsFilter,
    Config,
    MaterializeResult,
    MetadataValue,
    asset,
)
from pydantic import Field

from tensorguard.artifact_layout import (
    AGGREGATE_FILE,
    CUSTODIAN_LEDGER,
    ENVELOPE_FILE,
    ROUND_SPEC_FILE,
)
from tensorguard.codec import canonical_json, parse_json_object
from tensorguard.crypto import CompositeVerifyKey
from tensorguard.digest import sha256_tree
from tensorguard.durable import atomic_directory, ensure_directory
from tensorguard.errors import TensorGuardError
from tensorguard.federation import (
    FederationError,
    FederationParams,
    QuorumNotMetError,
    ServerOptimizerName,
)
from tensorguard.production import Environment
from tensorguard.sites import site_weight_caps
from tensorguard.training.lora_targets import LLAMA_ATTENTION_AND_MLP
from tensorguard_assets import groups
from tensorguard_assets.artifact_checks import (
    integrity_check_spec,
    verify_artifact,
    write_artifact,
)
from tensorguard_assets.artifact_inputs import VerifiedArtifact, artifact_ins
from tensorguard_assets.coordinator import coordinator_key, coordinator_signer
from tensorguard_assets.lineage import latest_materialization_record, recorded_metadata
from tensorguard_assets.metadata import metadata_float, metadata_table
from tensorguard_assets.partitions import (
    ROUND_OF_SITE,
    round_partitions,
    round_site_key,
    round_site_partitions,
    split_round_site,
)
from tensorguard_assets.site_keys import (
    SITE_PUBLIC_KEYS_DIR,
    publish_development_kem_key,
    registered_site_keys,
    roster_kem_keys,
    site_kem_key_name,
    site_key_name,
    site_signer,
)
from tensorguard_resources import ArtifactStore, SiteRegistry, fail_closed_on
from tensorguard_resources.federation import CKKSSecretStore, PairSecretVault, ServerStateVault
from tensorguard_resources.keys import KeyVault

if TYPE_CHECKING:
    from tensorguard.federation import PairwiseSecrets, PublicFederation, RoundSpec

SPEC_FILE = ROUND_SPEC_FILE
CUSTODIAN_KEY_NAME = "federation-custodian"
PAIRWISE_MAILBOX = Path("pairwise") / "offers"
PAIRWISE_ANSWERED = Path("pairwise") / "answered"
REVEAL_SUFFIX = ".reveal"
ACK_SUFFIX = ".ack"
REVEALS_SUMMARY = "reveals.json"
DEFAULT_CLIP_NORM = 20.0
"""Above the demo sites' delta norms (~3-6), below the per-site CKKS bound (32)."""


def mask_epoch_of(public: "PublicFederation") -> str:
    """The pairwise-mask key epoch: one per federation key (a new ceremony, a new epoch)."""
    return f"ckks-{public.digest[:16]}"


def site_public_keys_dir(artifacts: ArtifactStore) -> Path:
    """Where sites publish their public keys in development (read by every party)."""
    return artifacts.root / SITE_PUBLIC_KEYS_DIR


def is_production_run(artifacts: ArtifactStore) -> bool:
    """True when the run's environment is production (published keys are not trusted)."""
    return artifacts.runtime.environment is Environment.PRODUCTION


def trusted_site_keys(
    sites: SiteRegistry, artifacts: ArtifactStore
) -> dict[str, CompositeVerifyKey]:
    """The site signing keys this run trusts, from public files only (see site_keys)."""
    return registered_site_keys(
        sites, site_public_keys_dir(artifacts), production=is_production_run(artifacts)
    )


def site_pair_secrets(
    spec: "RoundSpec",
    site_id: str,
    artifacts: ArtifactStore,
    sites: SiteRegistry,
    site_keys: KeyVault,
) -> "PairwiseSecrets":
    """The site's pair secrets for the round's mask epoch, made or opened via the mailbox.

    Peers' X-Wing and signing keys come from public files; only the site's own keys come
    from the sites' vault. In development the sites' vault creates and publishes any
    roster site's X-Wing key not published yet (as each site would at enrolment)."""
    from tensorguard.federation import PairwiseMailbox, site_pairwise_secrets

    assert spec.mask_epoch is not None
    public_dir = site_public_keys_dir(artifacts)
    production = is_production_run(artifacts)
    if site_keys.development:
        for roster_site in spec.roster:
            if sites.site(roster_site).kem_public_key_path is None:
                publish_development_kem_key(site_keys, public_dir, roster_site)
    return site_pairwise_secrets(
        epoch_id=spec.mask_epoch,
        site_id=site_id,
        roster=spec.roster,
        mailbox=PairwiseMailbox(artifacts.root / PAIRWISE_MAILBOX),
        store=PairSecretVault(site_keys.provider, site_id),
        signer=site_signer(site_keys, public_dir, site_id),
        kem_private=site_keys.provider.kem_private_key(site_kem_key_name(site_id)),
        roster_kem_keys=roster_kem_keys(sites, public_dir, spec.roster, production=production),
        signing_keys=trusted_site_keys(sites, artifacts),
    )


class FederationKeysConfig(Config):
    """CKKS parameters of the key ceremony (defaults documented in docs/FEDERATION.md)."""

    poly_modulus_degree: int = Field(default=8192, description="CKKS ring degree N.")
    coeff_mod_bit_sizes: list[int] = Field(
        default_factory=lambda: [60, 58], description="RNS prime bit sizes."
    )
    scale_bits: int = Field(default=46, description="log2 of the encoding scale.")


@asset(
    group_name=groups.SETUP,
    kinds={"tenseal"},
    owners=["team:security"],
    check_specs=[integrity_check_spec("federation_keys")],
)
def federation_keys(
    context: AssetExecutionContext,
    config: FederationKeysConfig,
    artifacts: ArtifactStore,
    custodian_keys: KeyVault,
) -> MaterializeResult:
    """The federation key ceremony: a CKKS key pair whose secret half goes only into the
    custodian's key vault and whose public context goes to sites and the
    aggregator. Re-materialising rotates the federation key; old secrets are kept."""
    from tensorguard.federation import run_key_ceremony

    secret_name = f"federation-ckks-{uuid.uuid4().hex[:12]}"
    out_dir = artifacts.asset_dir("federation_keys") / secret_name
    with fail_closed_on(context):
        params = FederationParams(
            poly_modulus_degree=config.poly_modulus_degree,
            coeff_mod_bit_sizes=tuple(config.coeff_mod_bit_sizes),
            scale_bits=config.scale_bits,
        )
        record = run_key_ceremony(
            out_dir, CKKSSecretStore(custodian_keys.provider), params, secret_name
        )
    context.log.info(
        f"key ceremony done: public context {record.public_context_sha256[:16]}…, secret "
        f"sealed in the custodian's key vault as {secret_name}"
    )
    digest = sha256_tree(out_dir)
    return MaterializeResult(
        metadata={
            "path": MetadataValue.path(str(out_dir)),
            "digest": MetadataValue.text(digest),
            "secret_name": MetadataValue.text(secret_name),
            "public_context_sha256": MetadataValue.text(record.public_context_sha256),
            "poly_modulus_degree": MetadataValue.int(params.poly_modulus_degree),
            "security_level_bits": MetadataValue.int(params.security_level),
            "slots_per_ciphertext": MetadataValue.int(params.slot_count),
        },
        check_results=[verify_artifact("federation_keys", out_dir, digest)],
    )


class RoundSpecConfig(Config):
    """The adapter shape every site trains this round (binding for all sites)."""

    r: int = Field(default=8, ge=1, description="LoRA rank.")
    alpha: int = Field(default=16, ge=1, description="LoRA alpha (scaling alpha / r).")
    dropout: float = Field(default=0.05, ge=0.0, lt=1.0, description="LoRA dropout.")
    target_modules: list[str] = Field(
        default_factory=lambda: list(LLAMA_ATTENTION_AND_MLP),
        description="LoRA target modules (default: every attention and MLP projection).",
    )
    seed: int = Field(default=0, description="Seed of the first round's initial adapter.")
    max_site_weight: float = Field(
        default=100_000,
        gt=0,
        description="Development only: the weight cap of a site whose registry entry has no "
        "max_weight (production requires max_weight for every site).",
    )
    clip_norm: float = Field(
        default=DEFAULT_CLIP_NORM,
        gt=0,
        description="L2 bound every site clips its update delta to (a round rule).",
    )
    min_sites: int = Field(default=2, ge=2, description="Quorum of valid site updates.")
    noise_multiplier: float = Field(
        default=0.0,
        ge=0,
        description="Distributed DP: central noise std of the summed update / clip_norm; "
        "each site adds noise_multiplier · clip_norm / √min_sites. 0 disables DP.",
    )
    dp_delta: float = Field(default=1e-5, gt=0, lt=1, description="Target δ of the DP rule.")
    epsilon_budget: float = Field(
        default=10.0, gt=0, description="Cumulative ε each site may spend under the DP rule."
    )
    deadline_hours: float = Field(
        default=24.0,
        gt=0,
        description="Hours after the round opens until updates are late; at the deadline "
        "the round releases with the sites that made it, if the quorum is met.",
    )
    server_optimizer: ServerOptimizerName = Field(
        default="fedavg",
        description="How the custodian applies the mean update: fedavg (x + lr·Δ), "
        "fedavgm (with server momentum), fedadam or fedyogi (state sealed in the "
        "custodian's vault).",
    )
    server_learning_rate: float = Field(
        default=1.0, gt=0, le=100, description="The server optimiser's step size."
    )
    server_beta1: float = Field(
        default=0.9,
        ge=0,
        lt=1,
        description="fedavgm: the server momentum (0.5 measured best on the demo, "
        "docs/FEDERATION.md); fedadam/fedyogi: the first-moment decay.",
    )
    lora_aggregation: Literal["factors", "frozen_a"] = Field(
        default="factors",
        description="How LoRA adapters are averaged: 'factors' trains and averages A and "
        "B; 'frozen_a' keeps every A at the reference (FFA-LoRA), so the mean of the B "
        "factors is exactly the mean of the weight deltas and half as much is encrypted.",
    )


def _previous_global_adapter(context: AssetExecutionContext, round_key: str) -> Path | None:
    """The newest global adapter of an earlier round, if any (the next round's start)."""
    records = context.instance.fetch_materializations(
        AssetRecordsFilter(asset_key=AssetKey("global_adapter")), limit=100
    ).records
    earlier = [
        r
        for r in records
        if r.asset_materialization is not None
        and r.asset_materialization.partition is not None
        and r.asset_materialization.partition < round_key
    ]
    if not earlier:
        return None
    newest = max(earlier, key=lambda r: str(r.asset_materialization.partition))
    metadata = newest.asset_materialization.metadata
    path = Path(str(metadata["path"].value))
    if not path.is_dir() or sha256_tree(path) != metadata["digest"].value:
        raise FederationError(
            f"the global adapter of round {newest.asset_materialization.partition} ({path}) "
            "is missing or changed since it was recorded, so the next round cannot start "
            "from it; restore it or re-materialise global_adapter for that round"
        )
    return path


@asset(
    group_name=groups.SETUP,
    partitions_def=round_partitions,
    ins=artifact_ins("base_model", "federation_keys"),
    kinds={"peft"},
    owners=["team:ml-platform"],
    check_specs=[integrity_check_spec("round_spec")],
)
def round_spec(
    context: AssetExecutionContext,
    config: RoundSpecConfig,
    artifacts: ArtifactStore,
    sites: SiteRegistry,
    release_keys: KeyVault,
    base_model: VerifiedArtifact,
    federation_keys: VerifiedArtifact,
) -> MaterializeResult:
    """What every site agrees on for the round: the base model, the reference adapter all
    sites start from (the seeded initial adapter, then the previous round's global
    adapter), its tensor layout, and the round's rules (opened_at, deadline, quorum, clip
    norm, each site's weight cap from the registry). Sites sign these facts into their
    updates; the aggregator and the custodian enforce the rules."""
    from tensorguard.federation import (
        DPRule,
        PublicFederation,
        RoundSpec,
        ServerOptimizerRule,
        grid_bits_for,
        sign_round_spec,
    )
    from tensorguard.hf import read_adapter_tensors, require_base_model
    from tensorguard.training.lora import LoRAAdapterSpec, create_initial_adapter

    round_key = context.partition_key
    base_dir = base_model.path
    out_dir = artifacts.asset_dir("round_spec", round_key)
    reference_dir = out_dir / "reference"
    with fail_closed_on(context):
        previous = _previous_global_adapter(context, round_key)
        if previous is not None:
            with atomic_directory(reference_dir) as staging:
                shutil.copytree(previous, staging, dirs_exist_ok=True)
            require_base_model(reference_dir, base_model.digest)
            origin = f"global adapter of an earlier round ({previous})"
        else:
            create_initial_adapter(
                base_dir,
                LoRAAdapterSpec(
                    r=config.r,
                    alpha=config.alpha,
                    dropout=config.dropout,
                    target_modules=tuple(config.target_modules),
                ),
                reference_dir,
                seed=config.seed,
                base_model_digest=base_model.digest,
            )
            origin = f"seeded initial adapter (seed {config.seed})"
        public = PublicFederation.read(federation_keys.path)
        production = artifacts.runtime.environment is Environment.PRODUCTION
        caps = site_weight_caps(
            sites.sites(), default_cap=None if production else config.max_site_weight
        )
        opened_at = datetime.now(UTC).replace(microsecond=0)
        dp_rule = (
            DPRule(
                noise_multiplier=config.noise_multiplier,
                delta=config.dp_delta,
                epsilon_budget=config.epsilon_budget,
            )
            if config.noise_multiplier > 0
            else None
        )
        noise_std = dp_rule.site_noise_std(config.clip_norm, config.min_sites) if dp_rule else 0.0
        spec = RoundSpec.from_reference(
            round_id=round_key,
            base_model_digest=base_model.digest,
            reference=read_adapter_tensors(reference_dir),
            max_site_weight=max(caps.values()),
            opened_at=opened_at,
            deadline=opened_at + timedelta(hours=config.deadline_hours),
            min_sites=config.min_sites,
            clip_norm=public.params.check_clip_norm(config.clip_norm, noise_std),
            site_weight_caps=caps,
            mask_epoch=mask_epoch_of(public),
            dp=dp_rule,
            frozen_lora_a=config.lora_aggregation == "frozen_a",
            server_optimizer=ServerOptimizerRule(
                name=config.server_optimizer,
                learning_rate=config.server_learning_rate,
                beta1=config.server_beta1,
            ),
            aggregate_grid_bits=grid_bits_for(public.params),
        )
    spec_path = out_dir / SPEC_FILE
    with fail_closed_on(context):
        signer = coordinator_signer(release_keys, artifacts.root)
        write_artifact(spec_path, sign_round_spec(spec, signer) + b"\n")
    context.log.info(
        f"round {round_key}: reference is the {origin}; spec signed by the coordinator "
        f"{signer.public_key().fingerprint()[:16]}…"
    )
    digest = sha256_tree(out_dir)
    return MaterializeResult(
        metadata={
            "path": MetadataValue.path(str(out_dir)),
            "digest": MetadataValue.text(digest),
            "reference_origin": MetadataValue.text(origin),
            "reference_digest": MetadataValue.text(spec.reference_digest),
            "base_model_digest": MetadataValue.text(spec.base_model_digest),
            "tensors": MetadataValue.int(len(spec.layout)),
            "parameters": MetadataValue.int(spec.tensor_layout.numel),
            "opened_at": MetadataValue.text(opened_at.isoformat()),
            "deadline": MetadataValue.text(spec.deadline.isoformat() if spec.deadline else ""),
            "min_sites": MetadataValue.int(spec.min_sites),
            "clip_norm": metadata_float(config.clip_norm),
            "site_weight_caps": MetadataValue.json(dict(spec.site_weight_caps)),
            "dp_rule": MetadataValue.json(spec.dp.model_dump() if spec.dp else {}),
            "lora_aggregation": MetadataValue.text(config.lora_aggregation),
            "server_optimizer": MetadataValue.json(spec.server_optimizer.model_dump()),
            "aggregate_grid_bits": MetadataValue.int(spec.aggregate_grid_bits or 0),
        },
        check_results=[verify_artifact("round_spec", out_dir, digest)],
    )


def load_round(round_spec: VerifiedArtifact, artifacts: ArtifactStore) -> tuple["RoundSpec", Path]:
    """The round's spec, verified under the coordinator's key, and its reference adapter
    directory (the ``round_spec`` artifact, digest-checked when it was loaded)."""
    from tensorguard.federation import load_signed_round_spec

    spec_dir = round_spec.path
    production = artifacts.runtime.environment is Environment.PRODUCTION
    spec = load_signed_round_spec(
        (spec_dir / SPEC_FILE).read_bytes(), coordinator_key(artifacts.root, production=production)
    )
    return spec, spec_dir / "reference"


@asset(
    group_name=groups.ENCRYPT,
    partitions_def=round_site_partitions,
    ins=artifact_ins("site_adapter", "federation_keys", round_spec=ROUND_OF_SITE),
    kinds={"tenseal"},
    owners=["team:security"],
    check_specs=[integrity_check_spec("site_update")],
)
def site_update(
    context: AssetExecutionContext,
    artifacts: ArtifactStore,
    sites: SiteRegistry,
    site_keys: KeyVault,
    site_adapter: VerifiedArtifact,
    federation_keys: VerifiedArtifact,
    round_spec: VerifiedArtifact,
) -> MaterializeResult:
    """The site's adapter delta, clipped (optionally noised for DP), weighted by its
    example count, CKKS-encrypted under the federation public key, masked with the
    site's pairwise secrets (so that only the sum of all sites decrypts to anything)
    and signed with the site's composite key. Only this envelope ever leaves the site."""
    from tensorguard.federation import (
        PrivacyLedger,
        PublicFederation,
        SiteUpdateConfig,
        build_site_update,
    )
    from tensorguard.hf import read_adapter_tensors

    _, site_id = split_round_site(context.partition_key)
    with fail_closed_on(context):
        spec, reference_dir = load_round(round_spec, artifacts)
        public = PublicFederation.read(federation_keys.path)
        signer = site_signer(site_keys, site_public_keys_dir(artifacts), site_id)
        dp = spec.dp  # distributed DP is a round rule: σ, δ and budget come from the spec
        ledger_path = artifacts.asset_dir("privacy_ledgers") / f"{site_id}.json"
        ledger = None
        if dp is not None:
            ledger = (
                PrivacyLedger.from_json(ledger_path.read_text(encoding="utf-8"))
                if ledger_path.exists()
                else PrivacyLedger.for_site(site_id, dp)
            )
        update = build_site_update(
            trained=read_adapter_tensors(site_adapter.path),
            reference=read_adapter_tensors(reference_dir),
            spec=spec,
            site_id=site_id,
            weight=float(site_adapter.metadata["train_examples"]),
            public=public,
            signer=signer,
            config=SiteUpdateConfig(clip_norm=spec.clip_norm or DEFAULT_CLIP_NORM, dp=dp),
            ledger=ledger,
            pairwise=(
                site_pair_secrets(spec, site_id, artifacts, sites, site_keys)
                if spec.mask_epoch is not None
                else None
            ),
        )
    if ledger is not None:
        write_artifact(ledger_path, ledger.to_json().encode("utf-8"))
    envelope_path = artifacts.asset_dir("site_update", context.partition_key) / ENVELOPE_FILE
    digest = write_artifact(envelope_path, update.envelope)
    report = update.metadata()
    context.log.info(
        f"{site_id}: {report['ciphertexts']} ciphertexts, {report['envelope_bytes']} bytes "
        f"({float(report['expansion_vs_fp32']):.2f}× fp32), signed by "  # type: ignore[arg-type]
        f"{str(report['signer_fingerprint'])[:16]}…"
    )
    metadata: dict[str, MetadataValue] = {
        "path": MetadataValue.path(str(envelope_path)),
        "digest": MetadataValue.text(digest),
    }
    for key, value in report.items():
        if isinstance(value, bool):
            metadata[key] = MetadataValue.bool(value)
        elif isinstance(value, int):
            metadata[key] = MetadataValue.int(value)
        elif isinstance(value, float):
            metadata[key] = metadata_float(value)
        else:
            metadata[key] = MetadataValue.text(str(value))
    return MaterializeResult(
        metadata=metadata,
        check_results=[verify_artifact("site_update", envelope_path, digest)],
    )


def _round_envelopes(
    context: AssetExecutionContext, round_key: str, site_ids: list[str]
) -> tuple[list[bytes], list[str]]:
    """The envelope bytes of every site that materialised an update this round."""
    envelopes: list[bytes] = []
    missing: list[str] = []
    for site_id in site_ids:
        partition = str(round_site_key(round_key, site_id))
        record = latest_materialization_record(context.instance, "site_update", partition)
        path = Path(str(recorded_metadata(record)["path"])) if record is not None else None
        if path is None or not path.is_file():
            missing.append(site_id)
            continue
        envelopes.append(path.read_bytes())
    return envelopes, missing


class AggregationConfig(Config):
    """The round's quorum."""

    min_sites: int = Field(
        default=2, ge=2, description="Fewest valid site updates that make a round."
    )


def _quorum_note(error: TensorGuardError, missing: list[str]) -> str | None:
    """The failure remark for a missed quorum: which sites sent no update."""
    if isinstance(error, QuorumNotMetError):
        return f"quorum; no update from: {', '.join(missing) or 'none'}"
    return None


@asset(
    group_name=groups.AGGREGATE,
    partitions_def=round_partitions,
    ins=artifact_ins("round_spec", "federation_keys"),
    deps=[AssetDep("site_update", partition_mapping=ROUND_OF_SITE)],
    kinds={"tenseal"},
    owners=["team:security"],
    check_specs=[
        integrity_check_spec("aggregated_update"),
        AssetCheckSpec(
            name="quorum_met",
            asset="aggregated_update",
            blocking=True,
            description="At least min_sites valid, signed updates were aggregated.",
        ),
    ],
)
def aggregated_update(
    context: AssetExecutionContext,
    config: AggregationConfig,
    artifacts: ArtifactStore,
    sites: SiteRegistry,
    round_spec: VerifiedArtifact,
    federation_keys: VerifiedArtifact,
) -> MaterializeResult:
    """The homomorphic weighted sum of the round's site updates. The aggregator takes
    no key vault and holds no secret of any kind, only the public context: it verifies
    each envelope's signature against registered site keys (public files), rejects
    unknown, duplicate, stale and wrong-base updates, enforces the quorum and adds
    ciphertexts. It cannot decrypt any of them."""
    from tensorguard.federation import PublicFederation, aggregate_updates

    round_key = context.partition_key
    started = time.perf_counter()
    missing: list[str] = []
    with fail_closed_on(context, note=lambda exc: _quorum_note(exc, missing)):
        spec, _ = load_round(round_spec, artifacts)
        public = PublicFederation.read(federation_keys.path)
        trusted = trusted_site_keys(sites, artifacts)
        envelopes, missing = _round_envelopes(context, round_key, sorted(sites.sites()))
        if missing:
            context.log.warning(f"no update this round from: {', '.join(missing)}")
        result = aggregate_updates(envelopes, trusted, spec, public, config.min_sites)
    seconds = time.perf_counter() - started
    out_path = artifacts.asset_dir("aggregated_update", round_key) / AGGREGATE_FILE
    digest = write_artifact(out_path, result.to_bytes())
    accepted = [a.site_id for a in result.accepted]
    context.log.info(
        f"aggregated {len(accepted)} site update(s) in {seconds:.2f}s; "
        f"{len(result.rejections)} rejected"
    )
    return MaterializeResult(
        metadata={
            "path": MetadataValue.path(str(out_path)),
            "digest": MetadataValue.text(digest),
            "accepted_sites": MetadataValue.text(", ".join(accepted)),
            "accepted_count": MetadataValue.int(len(accepted)),
            "rejected_count": MetadataValue.int(len(result.rejections)),
            "rejections": metadata_table(
                [{"site": site, "reason": reason} for site, reason in result.rejections]
            ),
            "missing_sites": MetadataValue.text(", ".join(missing) or "none"),
            "total_weight": metadata_float(result.total_weight),
            "aggregation_seconds": metadata_float(round(seconds, 3)),
        },
        check_results=[
            verify_artifact("aggregated_update", out_path, digest),
            AssetCheckResult(
                asset_key=AssetKey("aggregated_update"),
                check_name="quorum_met",
                passed=len(accepted) >= config.min_sites,
                metadata={
                    "accepted": MetadataValue.int(len(accepted)),
                    "min_sites": MetadataValue.int(config.min_sites),
                },
            ),
        ],
    )


def _answered_reveals(path: Path) -> dict[str, frozenset[str]]:
    """A site's record of the accepted sets it already answered reveal requests for."""
    if not path.is_file():
        return {}
    document = parse_json_object(path.read_bytes(), what=f"reveal record {path}")
    return {round_id: frozenset(sites) for round_id, sites in document.items()}


@asset(
    group_name=groups.AGGREGATE,
    partitions_def=round_partitions,
    ins=artifact_ins("aggregated_update", "round_spec"),
    kinds={"tenseal"},
    owners=["team:security"],
    check_specs=[integrity_check_spec("seed_reveals")],
)
def seed_reveals(
    context: AssetExecutionContext,
    artifacts: ArtifactStore,
    sites: SiteRegistry,
    site_keys: KeyVault,
    aggregated_update: VerifiedArtifact,
    round_spec: VerifiedArtifact,
) -> MaterializeResult:
    """Closing a masked round: each accepted site signs the accepted set (at most one set
    per round), then, holding every accepted site's acknowledgement of that same set,
    reveals its self seed and the pairwise seeds it shares with the sites that dropped
    out, and nothing else. A site refuses to reveal a seed shared with an accepted site
    (that would unmask it) or to acknowledge a second accepted set for the round. Empty
    when the round is not masked."""
    from tensorguard.federation import AggregationResult

    round_key = context.partition_key
    out_dir = artifacts.asset_dir("seed_reveals", round_key)
    with fail_closed_on(context):
        spec, _ = load_round(round_spec, artifacts)
        aggregate = AggregationResult.from_bytes(aggregated_update.path.read_bytes())
        accepted = sorted(update.site_id for update in aggregate.accepted)
        masked = spec.mask_epoch is not None
        dropped = sorted(set(spec.roster) - set(accepted)) if masked else []
        revealing = accepted if masked else []
        with atomic_directory(out_dir) as staging:
            summary = {
                "round_id": round_key,
                "mask_epoch": spec.mask_epoch,
                "accepted": accepted,
                "dropped": dropped,
                "revealing_sites": revealing,
            }
            (staging / REVEALS_SUMMARY).write_bytes(canonical_json(summary) + b"\n")
            closings = {
                site_id: _SiteClosing(spec, site_id, artifacts, sites, site_keys)
                for site_id in revealing
            }
            # Every accepted site acknowledges the set first; only then does any reveal.
            acks = {site: closing.acknowledge(accepted) for site, closing in closings.items()}
            signing_keys = trusted_site_keys(sites, artifacts)
            for site_id, closing in closings.items():
                (staging / f"{site_id}{ACK_SUFFIX}").write_bytes(acks[site_id])
                reveal = closing.reveal(accepted, dropped, list(acks.values()), signing_keys)
                (staging / f"{site_id}{REVEAL_SUFFIX}").write_bytes(reveal)
    if dropped:
        context.log.warning(
            f"round {round_key}: {', '.join(dropped)} dropped out after the round opened; "
            f"{len(accepted)} surviving site(s) revealed their seeds with them"
        )
    digest = sha256_tree(out_dir)
    return MaterializeResult(
        metadata={
            "path": MetadataValue.path(str(out_dir)),
            "digest": MetadataValue.text(digest),
            "dropped_sites": MetadataValue.text(", ".join(dropped) or "none"),
            "revealing_sites": MetadataValue.int(len(revealing)),
        },
        check_results=[verify_artifact("seed_reveals", out_dir, digest)],
    )


class _SiteClosing:
    """One site's side of closing a masked round: its secrets, signer and the record of
    the accepted set it acknowledged (kept at the site, across requests)."""

    def __init__(
        self,
        spec: "RoundSpec",
        site_id: str,
        artifacts: ArtifactStore,
        sites: SiteRegistry,
        site_keys: KeyVault,
    ) -> None:
        self.round_id = spec.round_id
        self.secrets = site_pair_secrets(spec, site_id, artifacts, sites, site_keys)
        self.signer = site_keys.provider.signer(site_key_name(site_id))
        self.answered_path = artifacts.root / PAIRWISE_ANSWERED / f"{site_id}.json"
        self.answered = _answered_reveals(self.answered_path)

    def acknowledge(self, accepted: list[str]) -> bytes:
        """Sign ``accepted`` as the round's one accepted set and record it durably."""
        from tensorguard.federation import acknowledge_accepted_set

        ack = acknowledge_accepted_set(
            self.secrets,
            round_id=self.round_id,
            accepted=accepted,
            signer=self.signer,
            answered=self.answered,
        )
        record = {key: sorted(value) for key, value in self.answered.items()}
        ensure_directory(self.answered_path.parent)
        write_artifact(self.answered_path, canonical_json(record))
        return ack.to_bytes()

    def reveal(
        self,
        accepted: list[str],
        dropped: list[str],
        acks: list[bytes],
        signing_keys: Mapping[str, CompositeVerifyKey],
    ) -> bytes:
        """The site's signed self seed and seeds with ``dropped``, given every ack."""
        from tensorguard.federation import reveal_seeds

        return reveal_seeds(
            self.secrets,
            round_id=self.round_id,
            accepted=accepted,
            dropped=dropped,
            signer=self.signer,
            answered=self.answered,
            acks=acks,
            signing_keys=signing_keys,
        ).to_bytes()


@asset(
    group_name=groups.AGGREGATE,
    partitions_def=round_partitions,
    ins=artifact_ins("aggregated_update", "seed_reveals", "round_spec", "federation_keys"),
    kinds={"peft", "tenseal"},
    owners=["team:security"],
    check_specs=[integrity_check_spec("global_adapter")],
)
def global_adapter(
    context: AssetExecutionContext,
    artifacts: ArtifactStore,
    sites: SiteRegistry,
    custodian_keys: KeyVault,
    aggregated_update: VerifiedArtifact,
    seed_reveals: VerifiedArtifact,
    round_spec: VerifiedArtifact,
    federation_keys: VerifiedArtifact,
) -> MaterializeResult:
    """The key custodian's step: recompute the aggregate from the signed site envelopes
    and refuse any difference, record the decryption in the signed custodian ledger
    (one aggregate per round), decrypt, check the mean update's norm against the round's
    clip norm and apply it to the round's reference adapter. The result is a PEFT
    adapter loadable with PeftModel.from_pretrained."""
    from tensorguard.federation import (
        AggregationResult,
        Custodian,
        CustodianLedger,
        PublicFederation,
        advance_global_adapter,
        envelope_digest,
        load_secret_from_store,
        write_peft_adapter,
    )
    from tensorguard.hf import read_adapter_tensors

    round_key = context.partition_key
    with fail_closed_on(context):
        spec, reference_dir = load_round(round_spec, artifacts)
        public = PublicFederation.read(federation_keys.path)
        secret = load_secret_from_store(
            CKKSSecretStore(custodian_keys.provider),
            public,
            str(federation_keys.metadata["secret_name"]),
        )
        aggregate = AggregationResult.from_bytes(aggregated_update.path.read_bytes())
        if aggregate.spec != spec:
            raise FederationError(
                "the aggregate was computed for another round spec; re-materialise "
                "aggregated_update for this round"
            )
        # Only the accepted envelopes reach the custodian: a rejected site's masks are
        # removed with the survivors' reveals, so its ciphertext must never be where the
        # secret key is.
        accepted_digests = {update.envelope_sha256 for update in aggregate.accepted}
        envelopes = [
            envelope
            for envelope in _round_envelopes(context, round_key, sorted(sites.sites()))[0]
            if envelope_digest(envelope) in accepted_digests
        ]
        custodian = Custodian(
            secret,
            trusted_site_keys(sites, artifacts),
            CustodianLedger(
                artifacts.root / CUSTODIAN_LEDGER,
                custodian_keys.provider.signer_for(
                    CUSTODIAN_KEY_NAME, generate_if_missing=custodian_keys.development
                ),
            ),
        )
        reveals = [
            path.read_bytes() for path in sorted(seed_reveals.path.glob(f"*{REVEAL_SUFFIX}"))
        ]
        decryption = custodian.decrypt(aggregate, envelopes, reveals=reveals)
        step = advance_global_adapter(
            read_adapter_tensors(reference_dir),
            decryption.mean_delta,
            spec.server_optimizer,
            ServerStateVault(custodian_keys.provider),
        )
        out_dir = artifacts.asset_dir("global_adapter", round_key) / "adapter"
        write_peft_adapter(
            step.adapter,
            reference_dir,
            out_dir,
            replace=True,
            base_model_digest=spec.base_model_digest,
        )
    optimizer = spec.server_optimizer
    state_note = (
        ("continued" if step.state_continued else "started") if optimizer.stateful else "none"
    )
    digest = sha256_tree(out_dir)
    delta_norm = decryption.l2_norm
    bound = decryption.norm_bound
    context.log.info(
        f"custodian verified and decrypted the aggregate of {len(aggregate.accepted)} sites "
        f"(ledger entry {decryption.record.digest[:12]}); mean update L2 norm "
        f"{delta_norm:.4f}, bound {bound if bound is not None else 'not checked'}; server "
        f"optimiser {optimizer.name} (lr {optimizer.learning_rate:g}, state {state_note})"
    )
    return MaterializeResult(
        metadata={
            "path": MetadataValue.path(str(out_dir)),
            "digest": MetadataValue.text(digest),
            "sites": MetadataValue.int(len(aggregate.accepted)),
            "mean_update_l2_norm": metadata_float(delta_norm),
            "norm_bound": MetadataValue.text(str(bound) if bound is not None else "not checked"),
            "custodian_ledger_entry": MetadataValue.text(decryption.record.digest),
            "reference_digest": MetadataValue.text(spec.reference_digest),
            "server_optimizer": MetadataValue.text(optimizer.name),
            "server_learning_rate": metadata_float(optimizer.learning_rate),
            "server_optimizer_state": MetadataValue.text(state_note),
            **(
                {
                    "dp_epsilon_round": metadata_float(decryption.dp_epsilon[0]),
                    "dp_epsilon_total": metadata_float(decryption.dp_epsilon[1]),
                }
                if decryption.dp_epsilon is not None
                else {}
            ),
        },
        check_results=[verify_artifact("global_adapter", out_dir, digest)],
    )
