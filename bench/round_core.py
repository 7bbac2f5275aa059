"""One federated round through the core library only, for ``bench/bench_round.py``.

The same stages as ``make demo`` (tensorguard_assets.demo), in the same order and with
the same settings, calling the core functions each asset calls: the base model, the
key ceremony, the signed round spec, each site's data, LoRA training and masked,
encrypted, signed update, the homomorphic sum, the sites' acknowledgements and seed
reveals, the custodian's verified decryption, then pruning, ONNX, MOAI, evaluation,
the gate, the TGSP package and its publication. No Dagster module is imported (the
driver checks): what this costs is the round's own work.

Left out on purpose, because they are the asset layer's bookkeeping rather than the
round's work: re-hashing each upstream artifact before use and each output for its
integrity check (the driver measures that time inside the Dagster run), and writing
Dagster metadata. Each stage that is one Dagster run starts with
``enable_determinism(seed)``, as ``TG_DETERMINISTIC=true`` does at each run's start, so
the seeded stages give the same bytes as the pipeline (the driver compares digests).
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from importlib import util as importlib_util
from pathlib import Path
from types import ModuleType
from typing import Any

import torch

from tensorguard.artifact_layout import (
    AGGREGATE_FILE,
    CUSTODIAN_LEDGER,
    DATASET_SUMMARY_FILE,
    ENVELOPE_FILE,
    ROUND_SPEC_FILE,
    partition_dir,
)
from tensorguard.codec import canonical_json
from tensorguard.crypto import CompositeSigner, CompositeVerifyKey, XWingPublicKey
from tensorguard.digest import sha256_file, sha256_tree
from tensorguard.durable import ensure_directory
from tensorguard.federation import (
    AggregationResult,
    Custodian,
    CustodianLedger,
    FederationParams,
    PairwiseMailbox,
    PairwiseSecrets,
    PublicFederation,
    RoundSpec,
    ServerOptimizerRule,
    SiteUpdateConfig,
    acknowledge_accepted_set,
    advance_global_adapter,
    aggregate_updates,
    build_site_update,
    grid_bits_for,
    load_secret_from_store,
    load_signed_round_spec,
    reveal_seeds,
    run_key_ceremony,
    sign_round_spec,
    site_pairwise_secrets,
    write_peft_adapter,
)
from tensorguard.fleet.db import migrate
from tensorguard.fleet.provisioning import PUBLIC_KEY_SUFFIX, provision_edge_node
from tensorguard.fleet.registry import LocalRegistry
from tensorguard.held_out import load_held_out_set, load_with_adapter
from tensorguard.hf import CHECKPOINT_DTYPE, load_causal_lm, read_adapter_tensors
from tensorguard.keys import (
    MASTER_ENV,
    KeyProvider,
    KeyPurpose,
    development_master,
    development_master_file,
    key_provider_from_env,
    party_environ,
    party_key_dir,
)
from tensorguard.moai.export import export_moai
from tensorguard.moai.self_check import run_ckks_self_check
from tensorguard.moai.verify import verify_moai_export
from tensorguard.model_card import RoundFacts, TrainingSettings
from tensorguard.optimize.merge import merge_adapter
from tensorguard.optimize.onnx_export import export_causal_lm_to_onnx
from tensorguard.optimize.pruned_model import (
    PRUNING_SETTINGS_FILE,
    build_pruned_model,
    pruning_settings_json,
)
from tensorguard.optimize.pruning import verify_2_4
from tensorguard.optimize.sparse_recovery import RecoverySettings
from tensorguard.release import (
    DECISION_FILE,
    REPORT_FILE,
    ReleaseCandidate,
    build_release_package,
    compare_with_last_release,
    decide_release,
    gate_evidence,
    load_passed_decision,
    moai_self_check_evidence,
    publish_release,
    record_and_announce,
    release_metadata,
)
from tensorguard.release_canary import canary_plan
from tensorguard.sites import SiteRecord, demo_site_registry, site_weight_caps
from tensorguard.tgsp import TrustStore, load_recipient_public_key
from tensorguard.training.base_model import build_default_base_model
from tensorguard.training.dataset import load_site_dataset
from tensorguard.training.determinism import enable_determinism
from tensorguard.training.lora import (
    LLAMA_ATTENTION_AND_MLP,
    TRAINING_SETTINGS_FILE,
    LoRAAdapterSpec,
    LoRATrainingConfig,
    create_initial_adapter,
    read_adapter_spec,
    train_site_adapter,
)

# The key-vault adapters (CKKS secret, pair secrets, server-optimiser state) live in
# tensorguard_resources/federation.py, which imports no Dagster module, but its package's
# __init__ does; load the one file so this process stays Dagster-free.
_ADAPTERS_FILE = Path(__file__).resolve().parents[1] / "tensorguard_resources" / "federation.py"


def _load_adapters() -> ModuleType:
    spec = importlib_util.spec_from_file_location("_tg_vault_adapters", _ADAPTERS_FILE)
    assert spec is not None
    assert spec.loader is not None
    module = importlib_util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while decorating
    spec.loader.exec_module(module)
    return module


_adapters = _load_adapters()
CKKSSecretStore = _adapters.CKKSSecretStore
PairSecretVault = _adapters.PairSecretVault
ServerStateVault = _adapters.ServerStateVault

# The asset layer's defaults (tensorguard_assets: RoundSpecConfig, SiteAdapterConfig,
# AggregationConfig, PrunedModelConfig, MoaiExportConfig, PackageConfig, FleetResource).
COORDINATOR_KEY_NAME = "round-coordinator"
CUSTODIAN_KEY_NAME = "federation-custodian"
RELEASE_KEY_NAME = "release-signing"
DEMO_EDGE_NODE = "edge-demo-1"
MAX_SITE_WEIGHT = 100_000.0
CLIP_NORM = 20.0
MIN_SITES = 2
DEADLINE_HOURS = 24.0
MOAI_MODULES = ("q_proj", "v_proj")
PRUNE_EXCLUDE = ("lm_head",)
VALIDITY_DAYS = 30
FLEET, CHANNEL = "demo", "stable"

Stage = Callable[[], None]


class CoreRound:
    """One round's state while the stages run; ``timings`` holds each stage's seconds."""

    def __init__(self, state_dir: Path, round_id: str, *, steps: int, seed: int = 0) -> None:
        self.state = state_dir
        self.root = state_dir / "artifacts"
        self.round_id = round_id
        self.steps = steps
        self.seed = seed
        self.sites: dict[str, SiteRecord] = demo_site_registry()
        self.site_ids = sorted(self.sites)
        self.timings: dict[str, float] = {}
        self.digests: dict[str, str] = {}
        self.published_keys: dict[str, CompositeVerifyKey] = {}
        self._vaults: dict[str, KeyProvider] = {}
        self.database_url = f"sqlite:///{state_dir.resolve()}/tensorguard.db"
        self.registry = LocalRegistry(state_dir / "registry")
        self.recipients_dir = state_dir / "fleet-recipients"

    # --- plumbing -------------------------------------------------------------------
    def vault(self, party: str) -> KeyProvider:
        """The party's key provider with its development master, as KeyVault opens it."""
        if party not in self._vaults:
            state = str(self.state)
            environ = party_environ({}, party, party_key_dir(party, state, {}))
            environ[MASTER_ENV] = development_master(Path(development_master_file(party, state)))[0]
            self._vaults[party] = key_provider_from_env(environ)
        return self._vaults[party]

    def asset_dir(self, name: str, partition: str | None = None) -> Path:
        path = partition_dir(self.root, name, partition)
        path.mkdir(parents=True, exist_ok=True)
        return path

    def site_partition(self, site_id: str) -> str:
        """The round × site partition key's string form (Dagster's MultiPartitionKey)."""
        return f"{self.round_id}|{site_id}"

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        """Time one stage (one Dagster run), seeded as TG_DETERMINISTIC does per run."""
        started = time.perf_counter()
        enable_determinism(self.seed)
        yield
        self.timings[name] = self.timings.get(name, 0.0) + time.perf_counter() - started

    def spec(self) -> RoundSpec:
        """The round spec, verified under the coordinator's key (as every stage does)."""
        data = (self.asset_dir("round_spec", self.round_id) / ROUND_SPEC_FILE).read_bytes()
        return load_signed_round_spec(data, self.coordinator().public_key())

    def coordinator(self) -> CompositeSigner:
        return self.vault("release").signer_for(COORDINATOR_KEY_NAME, generate_if_missing=True)

    def site_signer(self, site_id: str) -> CompositeSigner:
        signer = self.vault("sites").signer_for(f"site-{site_id}", generate_if_missing=True)
        self.published_keys[site_id] = signer.public_key()
        return signer

    def public_federation(self) -> tuple[PublicFederation, str]:
        (directory,) = [p for p in self.asset_dir("federation_keys").iterdir() if p.is_dir()]
        return PublicFederation.read(directory), directory.name

    def kem_keys(self, roster: tuple[str, ...]) -> dict[str, XWingPublicKey]:
        """Development: each roster site's X-Wing key, created on first use."""
        sites = self.vault("sites")
        keys: dict[str, XWingPublicKey] = {}
        for site_id in roster:
            name = f"site-{site_id}-kem"
            if not sites.has_key(name, KeyPurpose.KEM):
                sites.generate_kem_key(name)
            keys[site_id] = sites.kem_private_key(name).public_key()
        return keys

    def pair_secrets(self, spec: RoundSpec, site_id: str) -> PairwiseSecrets:
        assert spec.mask_epoch is not None
        sites = self.vault("sites")
        kem_keys = self.kem_keys(spec.roster)  # creates the site's own X-Wing key first
        return site_pairwise_secrets(
            epoch_id=spec.mask_epoch,
            site_id=site_id,
            roster=spec.roster,
            mailbox=PairwiseMailbox(self.root / "pairwise" / "offers"),
            store=PairSecretVault(sites, site_id),
            signer=self.site_signer(site_id),
            kem_private=sites.kem_private_key(f"site-{site_id}-kem"),
            roster_kem_keys=kem_keys,
            signing_keys=dict(self.published_keys),
        )

    def envelopes(self) -> list[bytes]:
        return [
            (self.asset_dir("site_update", self.site_partition(s)) / ENVELOPE_FILE).read_bytes()
            for s in self.site_ids
        ]

    # --- stages, in the demo's order -----------------------------------------------
    def run(self) -> None:
        """Every stage of the round, each timed under the Dagster job it stands for."""
        with self.stage("setup_job"):
            self.base_model()
        with self.stage("key_ceremony_job"):
            self.key_ceremony()
        with self.stage("round_open_job"):
            self.round_spec()
        for site_id in self.site_ids:
            with self.stage("site_training_job"):
                self.site_training(site_id)
        with self.stage("aggregation_job"):
            self.aggregate()
        with self.stage("reveal_job"):
            self.reveals()
        with self.stage("decryption_job"):
            self.decrypt()
        with self.stage("round_release_job"):
            self.release()

    def base_model(self) -> None:
        info = build_default_base_model(self.asset_dir("base_model") / "model", seed=0)
        self.base_dir, self.base_digest = info.path, info.digest
        self.digests["base_model"] = info.digest

    def key_ceremony(self) -> None:
        name = "federation-ckks-core-bench"
        out_dir = self.asset_dir("federation_keys") / name
        run_key_ceremony(
            out_dir, CKKSSecretStore(self.vault("custodian")), FederationParams(), name
        )

    def round_spec(self) -> None:
        out_dir = self.asset_dir("round_spec", self.round_id)
        reference_dir = out_dir / "reference"
        create_initial_adapter(
            self.base_dir,
            LoRAAdapterSpec(r=8, alpha=16, dropout=0.05, target_modules=LLAMA_ATTENTION_AND_MLP),
            reference_dir,
            seed=0,
            base_model_digest=self.base_digest,
        )
        public, _ = self.public_federation()
        caps = site_weight_caps(self.sites, default_cap=MAX_SITE_WEIGHT)
        opened_at = datetime.now(UTC).replace(microsecond=0)
        spec = RoundSpec.from_reference(
            round_id=self.round_id,
            base_model_digest=self.base_digest,
            reference=read_adapter_tensors(reference_dir),
            max_site_weight=max(caps.values()),
            opened_at=opened_at,
            deadline=opened_at + timedelta(hours=DEADLINE_HOURS),
            min_sites=MIN_SITES,
            clip_norm=public.params.check_clip_norm(CLIP_NORM, 0.0),
            site_weight_caps=caps,
            mask_epoch=f"ckks-{public.digest[:16]}",
            dp=None,
            frozen_lora_a=False,
            server_optimizer=ServerOptimizerRule(name="fedavg", learning_rate=1.0),
            aggregate_grid_bits=grid_bits_for(public.params),
        )
        (out_dir / ROUND_SPEC_FILE).write_bytes(sign_round_spec(spec, self.coordinator()) + b"\n")
        self.digests["round_spec reference"] = spec.reference_digest

    def site_training(self, site_id: str) -> None:
        partition = self.site_partition(site_id)
        dataset = load_site_dataset(self.sites[site_id].data_dir)
        summary_dir = self.asset_dir("site_dataset", partition)
        (summary_dir / DATASET_SUMMARY_FILE).write_bytes(
            canonical_json({"site": site_id, "digest": dataset.digest})
        )
        spec = self.spec()
        reference_dir = self.asset_dir("round_spec", self.round_id) / "reference"
        config = LoRATrainingConfig(
            **read_adapter_spec(reference_dir).model_dump(),
            freeze_lora_a=spec.frozen_lora_a,
            steps=self.steps,
            learning_rate=3e-3,
            batch_size=8,
            max_length=128,
            seed=0,
        )
        adapter_dir = self.asset_dir("site_adapter", partition)
        result = train_site_adapter(
            self.base_dir,
            dataset,
            config,
            adapter_dir / "adapter",
            initial_adapter_dir=reference_dir,
            base_model_digest=self.base_digest,
        )
        (adapter_dir / TRAINING_SETTINGS_FILE).write_bytes(
            canonical_json(config.model_dump(mode="json"))
        )
        self.digests[f"site_adapter[{site_id}]"] = result.adapter_digest
        public, _ = self.public_federation()
        signer = self.site_signer(site_id)
        update = build_site_update(
            trained=read_adapter_tensors(result.adapter_dir),
            reference=read_adapter_tensors(reference_dir),
            spec=spec,
            site_id=site_id,
            weight=float(result.train_examples),
            public=public,
            signer=signer,
            config=SiteUpdateConfig(clip_norm=spec.clip_norm or CLIP_NORM, dp=None),
            ledger=None,
            pairwise=self.pair_secrets(spec, site_id),
        )
        self.train_steps = result.steps
        (self.asset_dir("site_update", partition) / ENVELOPE_FILE).write_bytes(update.envelope)

    def aggregate(self) -> None:
        public, _ = self.public_federation()
        result = aggregate_updates(
            self.envelopes(), dict(self.published_keys), self.spec(), public, MIN_SITES
        )
        path = self.asset_dir("aggregated_update", self.round_id) / AGGREGATE_FILE
        path.write_bytes(result.to_bytes())

    def _aggregate(self) -> AggregationResult:
        path = self.asset_dir("aggregated_update", self.round_id) / AGGREGATE_FILE
        return AggregationResult.from_bytes(path.read_bytes())

    def reveals(self) -> None:
        spec = self.spec()
        accepted = sorted(update.site_id for update in self._aggregate().accepted)
        dropped = sorted(set(spec.roster) - set(accepted))
        out_dir = self.asset_dir("seed_reveals", self.round_id)
        answered: dict[str, dict[str, frozenset[str]]] = {site: {} for site in accepted}
        secrets = {site: self.pair_secrets(spec, site) for site in accepted}
        signers = {site: self.site_signer(site) for site in accepted}
        acks = {
            site: acknowledge_accepted_set(
                secrets[site],
                round_id=self.round_id,
                accepted=accepted,
                signer=signers[site],
                answered=answered[site],
            ).to_bytes()
            for site in accepted
        }
        answered_dir = self.root / "pairwise" / "answered"
        ensure_directory(answered_dir)
        for site in accepted:
            record = {key: sorted(value) for key, value in answered[site].items()}
            (answered_dir / f"{site}.json").write_bytes(canonical_json(record))
            (out_dir / f"{site}.ack").write_bytes(acks[site])
            reveal = reveal_seeds(
                secrets[site],
                round_id=self.round_id,
                accepted=accepted,
                dropped=dropped,
                signer=signers[site],
                answered=answered[site],
                acks=list(acks.values()),
                signing_keys=dict(self.published_keys),
            )
            (out_dir / f"{site}.reveal").write_bytes(reveal.to_bytes())

    def decrypt(self) -> None:
        spec = self.spec()
        custodian_vault = self.vault("custodian")
        public, secret_name = self.public_federation()
        secret = load_secret_from_store(CKKSSecretStore(custodian_vault), public, secret_name)
        custodian = Custodian(
            secret,
            dict(self.published_keys),
            CustodianLedger(
                self.root / CUSTODIAN_LEDGER,
                custodian_vault.signer_for(CUSTODIAN_KEY_NAME, generate_if_missing=True),
            ),
        )
        reveals_dir = self.asset_dir("seed_reveals", self.round_id)
        reveals = [path.read_bytes() for path in sorted(reveals_dir.glob("*.reveal"))]
        decryption = custodian.decrypt(self._aggregate(), self.envelopes(), reveals=reveals)
        reference_dir = self.asset_dir("round_spec", self.round_id) / "reference"
        step = advance_global_adapter(
            read_adapter_tensors(reference_dir),
            decryption.mean_delta,
            spec.server_optimizer,
            ServerStateVault(custodian_vault),
        )
        self.adapter_dir = self.asset_dir("global_adapter", self.round_id) / "adapter"
        write_peft_adapter(
            step.adapter,
            reference_dir,
            self.adapter_dir,
            replace=True,
            base_model_digest=spec.base_model_digest,
        )
        self.digests["global_adapter"] = sha256_tree(self.adapter_dir)

    def release(self) -> None:
        """round_release_job: prune, ONNX, MOAI, evaluate, gate, package, publish."""
        migrate(self.database_url)  # what the fleet resource does at every run's start
        site_dirs = {site: record.data_dir for site, record in self.sites.items()}
        base_dir, adapter_dir = self.base_dir, self.adapter_dir
        # pruned_model
        pruned_dir = self.asset_dir("pruned_model", self.round_id)
        settings = RecoverySettings()
        held_out = load_held_out_set(base_dir, site_dirs)
        build = build_pruned_model(
            base_dir,
            adapter_dir,
            held_out.token_batches(),
            pruned_dir / "model",
            settings=settings,
            exclude=PRUNE_EXCLUDE,
        )
        (pruned_dir / PRUNING_SETTINGS_FILE).write_bytes(
            canonical_json(pruning_settings_json(settings, list(PRUNE_EXCLUDE)))
        )
        pattern = verify_2_4(
            load_causal_lm(pruned_dir / "model", dtype=CHECKPOINT_DTYPE), PRUNE_EXCLUDE
        )
        self.digests["pruned_model"] = build.digest
        # onnx_model
        onnx_dir = self.asset_dir("onnx_model", self.round_id) / "onnx"
        onnx = export_causal_lm_to_onnx(merge_adapter(base_dir, adapter_dir), onnx_dir)
        # moai_export
        moai_dir = self.asset_dir("moai_export", self.round_id) / "moai"
        export_moai(base_dir, moai_dir, target_modules=MOAI_MODULES, adapter_dir=adapter_dir)
        moai_ok = verify_moai_export(moai_dir, base_dir, adapter_dir=adapter_dir).ok
        self_check = run_ckks_self_check(moai_dir, tolerance=1e-4)
        # evaluation_report
        held_out = load_held_out_set(base_dir, site_dirs)
        losses = {
            "base_model": held_out.loss(load_causal_lm(base_dir, dtype=torch.float32)),
            "global_adapter": held_out.loss(load_with_adapter(base_dir, adapter_dir)),
            "pruned_model": held_out.loss(
                load_causal_lm(pruned_dir / "model", dtype=torch.float32)
            ),
        }
        last = compare_with_last_release(
            self.registry,
            CHANNEL,
            held_out.digest,
            lambda adapter: held_out.loss(load_with_adapter(base_dir, adapter)),
        )
        report: dict[str, Any] = {
            "round": self.round_id,
            "held_out_site_count": len(held_out.site_ids),
            "held_out_sequences": len(held_out.sequences),
            "held_out_digest": held_out.digest,
            "losses": losses,
            "last_release": last.to_document(),
        }
        report_path = self.asset_dir("evaluation_report", self.round_id) / REPORT_FILE
        report_path.write_bytes(canonical_json(report))
        # gate_decision: the asset checks the gate reads, computed above
        checks = {
            "aggregated_update.quorum_met": len(self._aggregate().accepted) >= MIN_SITES,
            "global_adapter.artifact_integrity": True,
            "pruned_model.two_four_pattern_exact": pattern.pattern_exact,
            "onnx_model.onnx_parity": onnx.within_tolerance(1e-4),
            "moai_export.moai_hashes_match": moai_ok,
            "moai_export.moai_self_check": self_check.passed,
        }
        decision = decide_release(
            gate_evidence(
                report,
                onnx_max_abs_diff=onnx.max_abs_diff,
                sparsity=build.outcome.recovery.report.overall_sparsity,
                moai_self_check=moai_self_check_evidence(
                    {
                        "self_check_max_abs_error": self_check.max_abs_error,
                        "self_check_tolerance": self_check.tolerance,
                    }
                ),
                checks=checks,
            ),
            None,
            model_digest=self.digests["global_adapter"],
            database_url=self.database_url,
        )
        decision_path = self.asset_dir("gate_decision", self.round_id) / DECISION_FILE
        decision_path.write_bytes(decision.canonical_json())
        # tgsp_package
        decision = load_passed_decision(decision_path)
        signer = self.vault("release").signer_for(RELEASE_KEY_NAME, generate_if_missing=True)
        provision_edge_node(
            self.state / "edge" / DEMO_EDGE_NODE,
            self.recipients_dir,
            node_id=DEMO_EDGE_NODE,
            fleet=FLEET,
            channel=CHANNEL,
            release_key=signer.public_key(),
        )
        recipients = [
            load_recipient_public_key(path)
            for path in sorted(self.recipients_dir.glob(f"*{PUBLIC_KEY_SUFFIX}"))
        ]
        spec = self.spec()
        package = build_release_package(
            ReleaseCandidate(
                round_id=self.round_id,
                contents={
                    "global_adapter": adapter_dir,
                    "pruned_model": pruned_dir / "model",
                    "onnx": onnx_dir,
                    "moai": moai_dir,
                    REPORT_FILE: report_path,
                    DECISION_FILE: decision_path,
                },
                adapter_digest=self.digests["global_adapter"],
                base_model_digest=self.base_digest,
                decision=decision,
                round_facts=RoundFacts(
                    site_ids=tuple(self.site_ids),
                    training=TrainingSettings.from_round_spec(
                        spec, [self.train_steps] * len(self.site_ids)
                    ),
                ),
            ),
            self.asset_dir("tgsp_package", self.round_id),
            signer=signer,
            recipients=recipients,
            registry=self.registry,
            channel=CHANNEL,
            validity_days=VALIDITY_DAYS,
        )
        if not package.verified:
            raise RuntimeError(f"the core round's package does not verify: {package}")
        # release
        record = publish_release(
            self.registry,
            package.path,
            channel=CHANNEL,
            decision=decision,
            trust_store=TrustStore([signer.public_key()]),
            freshness_signer=signer,
            metadata=release_metadata(
                round_id=self.round_id,
                report=report,
                report_digest=sha256_file(report_path),
                adapter_path=adapter_dir,
                adapter_digest=self.digests["global_adapter"],
                decision=decision,
            ),
        )
        plan = canary_plan(
            self.registry,
            record,
            decision,
            database_url=self.database_url,
            fleet=FLEET,
            production=False,
        )
        if plan.applies:
            raise RuntimeError(
                "the default gate policy has no canary section; the bench expects none"
            )
        record_and_announce(
            self.registry,
            record,
            database_url=self.database_url,
            fleet=FLEET,
            mqtt=None,
            decision=decision,
            actor="bench_round:core",
        )


def run_core_round(
    state_dir: Path, round_id: str, *, steps: int, seed: int = 0
) -> Mapping[str, object]:
    """Run the round in ``state_dir``; stage seconds, digests and whether Dagster loaded."""
    core = CoreRound(state_dir, round_id, steps=steps, seed=seed)
    core.run()
    return {
        "stage_seconds": core.timings,
        "digests": core.digests,
        "dagster_imported": "dagster" in sys.modules,
    }


if __name__ == "__main__":  # a manual check: python bench/round_core.py STATE ROUND STEPS
    print(json.dumps(run_core_round(Path(sys.argv[1]), sys.argv[2], steps=int(sys.argv[3]))))
