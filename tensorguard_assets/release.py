"""Release stage: held-out evaluation, the release gate, the signed and encrypted TGSP
package, and publication to the registry with a fleet notification."""
# No "from __future__ import annotations": Dagster resolves config and resource
# parameter types from the runtime annotations.

import json
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from dagster import (
    AssetCheckResult,
    AssetCheckSpec,
    AssetExecutionContext,
    AssetKey,
    Config,
    MaterializeResult,
    MetadataValue,
    asset,
)
from pydantic import Field

from tensorguard.digest import sha256_file, sha256_tree
from tensorguard.errors import ConfigurationError, TensorGuardError
from tensorguard.evaluation import load_held_out_set, load_with_adapter
from tensorguard.fleet.notify import announce_release, announcement_for
from tensorguard.fleet.provisioning import provision_edge_node
from tensorguard.fleet.registry import ReleaseRecord
from tensorguard.gate import (
    DEFAULT_POLICY_FILE,
    FirstRelease,
    GateDecision,
    GateEvidence,
    PreviousRelease,
    evaluate_gate,
    load_policy,
)
from tensorguard.tgsp.builder import build_package
from tensorguard.tgsp.header import ModelIdentity, ReleaseInfo
from tensorguard.tgsp.trust import TrustStore
from tensorguard.tgsp.verifier import VerificationPolicy, verify_package
from tensorguard.training.base_model import load_causal_lm
from tensorguard.training.causal_lm import perplexity
from tensorguard_assets.artifact_checks import (
    integrity_check_spec,
    verify_artifact,
    write_artifact,
    write_json_artifact,
)
from tensorguard_assets.lineage import latest_check_passed, verified_upstream_path
from tensorguard_assets.partitions import round_partitions
from tensorguard_resources import ArtifactStore, SiteRegistry, TensorGuardRuntime, fail_closed
from tensorguard_resources.fleet import FleetResource
from tensorguard_resources.keys import KeyVault

GATE_GROUP = "gate"
PUBLISH_GROUP = "publish"
REPORT_FILE = "evaluation_report.json"
DECISION_FILE = "gate_decision.json"
PACKAGE_FILE = "release.tgsp"
DEMO_EDGE_NODE = "edge-demo-1"
GATED_CHECKS = (
    ("aggregated_update", "quorum_met"),
    ("global_adapter", "artifact_integrity"),
    ("pruned_model", "two_four_pattern_exact"),
    ("onnx_model", "onnx_parity"),
    ("moai_export", "moai_hashes_match"),
    ("moai_export", "moai_self_check"),
)


def _last_release_loss(
    fleet: FleetResource,
    base_dir: Path,
    held_out_digest: str,
    evaluate: Callable[[torch.nn.Module], float],
) -> dict[str, Any]:
    """Evidence about the channel's last release, measured on the same held-out set."""
    latest = fleet.registry.latest(fleet.channel)
    if latest is None:
        return {"kind": "first_release"}
    recorded = latest.metadata
    adapter_path = Path(str(recorded.get("global_adapter_path", "")))
    if adapter_path.is_dir() and sha256_tree(adapter_path) == recorded.get(
        "global_adapter_digest"
    ):
        loss = evaluate(load_with_adapter(base_dir, adapter_path))
        return {"kind": "previous_release", "version": latest.version, "eval_loss": loss}
    if recorded.get("held_out_digest") == held_out_digest and "eval_loss" in recorded:
        loss = float(str(recorded["eval_loss"]))
        return {"kind": "previous_release", "version": latest.version, "eval_loss": loss}
    return {"kind": "unavailable", "version": latest.version}


@asset(
    group_name=GATE_GROUP,
    partitions_def=round_partitions,
    deps=["global_adapter", "pruned_model", "base_model"],
    kinds={"pytorch"},
    owners=["team:ml-platform"],
    check_specs=[integrity_check_spec("evaluation_report")],
)
def evaluation_report(
    context: AssetExecutionContext,
    runtime: TensorGuardRuntime,
    artifacts: ArtifactStore,
    sites: SiteRegistry,
    fleet: FleetResource,
) -> MaterializeResult:
    """Held-out loss and perplexity of the base model, the round's global adapter, its
    2:4-pruned merge, and the channel's last published release, on every site's
    held-out texts."""
    round_key = context.partition_key
    base_dir, _ = verified_upstream_path(context, "base_model")
    adapter_dir, _ = verified_upstream_path(context, "global_adapter", round_key)
    pruned_dir, _ = verified_upstream_path(context, "pruned_model", round_key)
    try:
        held_out = load_held_out_set(base_dir, {s: r.data_dir for s, r in sites.sites().items()})
        losses = {
            "base_model": held_out.loss(load_causal_lm(base_dir)),
            "global_adapter": held_out.loss(load_with_adapter(base_dir, adapter_dir)),
            "pruned_model": held_out.loss(load_causal_lm(pruned_dir)),
        }
        last_release = _last_release_loss(fleet, base_dir, held_out.digest, held_out.loss)
    except TensorGuardError as exc:
        raise fail_closed(exc, step="evaluation_report") from None
    if "eval_loss" in last_release:
        losses["last_release"] = float(last_release["eval_loss"])
    report = {
        "round": round_key,
        "held_out_sites": list(held_out.site_ids),
        "held_out_sequences": len(held_out.sequences),
        "held_out_digest": held_out.digest,
        "losses": losses,
        "last_release": last_release,
    }
    out_path = artifacts.asset_dir("evaluation_report", round_key) / REPORT_FILE
    digest = write_json_artifact(out_path, report)
    base_loss = losses["base_model"]
    rows = "\n".join(
        f"| {name} | {loss:.4f} | {perplexity(loss):.2f} | {loss - base_loss:+.4f} |"
        for name, loss in losses.items()
    )
    context.log.info(
        "held-out loss: " + ", ".join(f"{name} {loss:.4f}" for name, loss in losses.items())
    )
    return MaterializeResult(
        metadata={
            "path": MetadataValue.path(str(out_path)),
            "digest": MetadataValue.text(digest),
            "eval_loss_base": MetadataValue.float(base_loss),
            "eval_loss_global": MetadataValue.float(losses["global_adapter"]),
            "eval_loss_pruned": MetadataValue.float(losses["pruned_model"]),
            "last_release": MetadataValue.text(str(last_release.get("kind"))),
            "held_out_sequences": MetadataValue.int(len(held_out.sequences)),
            "losses": MetadataValue.md(
                "| model | loss | perplexity | Δ vs base |\n|---|---|---|---|\n" + rows
            ),
        },
        check_results=[verify_artifact("evaluation_report", out_path, digest)],
    )


class GateConfig(Config):
    """Which release policy to apply."""

    policy_file: str = Field(
        default="",
        description="Path of a gate policy YAML; empty uses the shipped default policy.",
    )


def _gate_evidence(
    context: AssetExecutionContext, round_key: str, report: dict[str, Any]
) -> GateEvidence:
    """The measured facts the gate judges, each read from its recorded source."""
    _, onnx_meta = verified_upstream_path(context, "onnx_model", round_key)
    _, pruned_meta = verified_upstream_path(context, "pruned_model", round_key)
    last = report["last_release"]
    last_release: PreviousRelease | FirstRelease | None = None
    if last["kind"] == "first_release":
        last_release = FirstRelease()
    elif last["kind"] == "previous_release":
        last_release = PreviousRelease(version=last["version"], eval_loss=last["eval_loss"])
    checks = {
        f"{asset_name}.{check}": latest_check_passed(context, asset_name, check, round_key)
        for asset_name, check in GATED_CHECKS
    }
    return GateEvidence(
        eval_loss_global=report["losses"]["global_adapter"],
        eval_loss_base=report["losses"]["base_model"],
        last_release=last_release,
        onnx_max_abs_diff=float(onnx_meta["max_abs_diff"]),
        sparsity=float(pruned_meta["sparsity"]),
        checks=checks,
    )


@asset(
    group_name=GATE_GROUP,
    partitions_def=round_partitions,
    deps=["evaluation_report", "onnx_model", "pruned_model", "moai_export", "aggregated_update"],
    kinds={"json"},
    owners=["team:release"],
    check_specs=[
        integrity_check_spec("gate_decision"),
        AssetCheckSpec(
            name="gate_passed",
            asset="gate_decision",
            blocking=True,
            description="The release policy passed; a failure stops packaging and publishing.",
        ),
    ],
)
def gate_decision(
    context: AssetExecutionContext,
    config: GateConfig,
    runtime: TensorGuardRuntime,
    artifacts: ArtifactStore,
) -> MaterializeResult:
    """The release gate: the versioned policy applied to the round's evidence (losses,
    ONNX parity, sparsity, asset checks). The decision is recorded either way; a failed
    gate's blocking check stops the release."""
    round_key = context.partition_key
    report_path, _ = verified_upstream_path(context, "evaluation_report", round_key)
    try:
        policy_path = Path(config.policy_file) if config.policy_file else DEFAULT_POLICY_FILE
        policy = load_policy(policy_path)
        report = json.loads(report_path.read_text(encoding="utf-8"))
        decision = evaluate_gate(policy, _gate_evidence(context, round_key, report))
    except TensorGuardError as exc:
        raise fail_closed(exc, step="gate_decision") from None
    out_path = artifacts.asset_dir("gate_decision", round_key) / DECISION_FILE
    digest = write_artifact(out_path, decision.canonical_json())
    verdict = "PASSED" if decision.passed else "FAILED"
    context.log.info(f"release gate {verdict} (policy v{decision.policy_version})")
    for failure in decision.failures:
        context.log.error(f"gate: {failure}")
    return MaterializeResult(
        metadata={
            "path": MetadataValue.path(str(out_path)),
            "digest": MetadataValue.text(digest),
            "passed": MetadataValue.bool(decision.passed),
            "decision_digest": MetadataValue.text(decision.digest()),
            "policy_version": MetadataValue.int(decision.policy_version),
            "policy_digest": MetadataValue.text(decision.policy_digest),
            "reasons": MetadataValue.md("\n".join(f"- {r}" for r in decision.reasons)),
        },
        check_results=[
            verify_artifact("gate_decision", out_path, digest),
            AssetCheckResult(
                asset_key=AssetKey("gate_decision"),
                check_name="gate_passed",
                passed=decision.passed,
                description="; ".join(decision.failures) or "all criteria met",
            ),
        ],
    )


def _passed_decision(context: AssetExecutionContext, round_key: str) -> tuple[GateDecision, Path]:
    """The round's recorded gate decision, re-validated; refuses one that failed."""
    path, _ = verified_upstream_path(context, "gate_decision", round_key)
    decision = GateDecision.from_json(path.read_bytes())
    if not decision.passed:
        raise ConfigurationError(
            "the release gate failed for this round: " + "; ".join(decision.failures)
        )
    return decision, path


class PackageConfig(Config):
    """How long a release stays installable."""

    validity_days: int = Field(default=30, ge=1, description="Days until the package expires.")


@asset(
    group_name=PUBLISH_GROUP,
    partitions_def=round_partitions,
    deps=[
        "gate_decision",
        "global_adapter",
        "pruned_model",
        "onnx_model",
        "moai_export",
        "evaluation_report",
        "base_model",
    ],
    kinds={"tgsp"},
    owners=["team:release"],
    check_specs=[
        integrity_check_spec("tgsp_package"),
        AssetCheckSpec(
            name="signature_verifies",
            asset="tgsp_package",
            blocking=True,
            description="The package verifies against a trust store pinning the release key.",
        ),
    ],
)
def tgsp_package(
    context: AssetExecutionContext,
    config: PackageConfig,
    runtime: TensorGuardRuntime,
    artifacts: ArtifactStore,
    keys: KeyVault,
    fleet: FleetResource,
) -> MaterializeResult:
    """The release artifacts (global adapter, pruned model, ONNX, MOAI export, evaluation
    report, gate decision) in one TGSP v2 package: signed with the composite release
    key, encrypted to every enrolled edge node."""
    round_key = context.partition_key
    try:
        decision, decision_path = _passed_decision(context, round_key)
        _, base_meta = verified_upstream_path(context, "base_model")
        adapter_dir, adapter_meta = verified_upstream_path(context, "global_adapter", round_key)
        contents = {
            "global_adapter": adapter_dir,
            "pruned_model": verified_upstream_path(context, "pruned_model", round_key)[0],
            "onnx": verified_upstream_path(context, "onnx_model", round_key)[0],
            "moai": verified_upstream_path(context, "moai_export", round_key)[0],
            REPORT_FILE: verified_upstream_path(context, "evaluation_report", round_key)[0],
            DECISION_FILE: decision_path,
        }
        signer = keys.provider.signer_for(
            fleet.release_key_name, generate_if_missing=keys.development
        )
        recipients = fleet.recipient_keys()
        if not recipients and keys.development:
            node = provision_edge_node(
                artifacts.root.parent / "edge" / DEMO_EDGE_NODE,
                Path(fleet.recipients_dir),
                node_id=DEMO_EDGE_NODE,
                fleet=fleet.fleet,
                channel=fleet.channel,
                release_key=signer.public_key(),
                mqtt_host=fleet.mqtt_host or "127.0.0.1",
                mqtt_port=fleet.mqtt_port,
            )
            context.log.warning(
                f"DEVELOPMENT: no edge node was enrolled, so demo node {DEMO_EDGE_NODE} was "
                f"created ({node.agent_config_file}); enrol real nodes' public keys in "
                f"{fleet.recipients_dir}"
            )
            recipients = fleet.recipient_keys()
        if not recipients:
            raise ConfigurationError(
                f"no edge node is enrolled: put each node's <node>.xwing.pub file in "
                f"{fleet.recipients_dir} (TG_FLEET_RECIPIENTS_DIR)"
            )
        latest = fleet.registry.latest(fleet.channel)
        version = 1 if latest is None else latest.version + 1
        out_dir = artifacts.asset_dir("tgsp_package", round_key)
        staging = out_dir / "staging"
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir()
        for name, source in contents.items():
            if source.is_dir():
                shutil.copytree(source, staging / name)
            else:
                shutil.copy2(source, staging / name)
        package_path = out_dir / PACKAGE_FILE
        package_path.unlink(missing_ok=True)
        now = int(time.time())
        result = build_package(
            staging,
            package_path,
            signer=signer,
            recipients=list(recipients.values()),
            release=ReleaseInfo(
                channel=fleet.channel,
                version=version,
                created_at=now,
                expires_at=now + config.validity_days * 86_400,
                model=ModelIdentity("tensorguard-global-adapter", str(adapter_meta["digest"])),
                base_model=ModelIdentity("base-model", str(base_meta["digest"])),
                round_id=round_key,
                gate_decision_digest=decision.digest(),
            ),
        )
        shutil.rmtree(staging)
        verified = True
        try:
            verify_package(
                package_path,
                TrustStore([signer.public_key()]),
                VerificationPolicy(expected_channel=fleet.channel),
            )
        except TensorGuardError as exc:
            verified = False
            context.log.error(f"the new package does not verify: {exc}")
    except TensorGuardError as exc:
        raise fail_closed(exc, step="tgsp_package") from None
    digest = sha256_file(package_path)
    context.log.info(
        f"TGSP package v{version} ({result.package_size} bytes) for "
        f"{len(recipients)} recipient(s), signed by {signer.public_key().fingerprint()[:16]}…"
    )
    return MaterializeResult(
        metadata={
            "path": MetadataValue.path(str(package_path)),
            "digest": MetadataValue.text(digest),
            "version": MetadataValue.int(version),
            "channel": MetadataValue.text(fleet.channel),
            "size_bytes": MetadataValue.int(result.package_size),
            "files": MetadataValue.int(len(result.header.files)),
            "recipients": MetadataValue.text(", ".join(sorted(recipients))),
            "signer_fingerprint": MetadataValue.text(signer.public_key().fingerprint()),
            "gate_decision_digest": MetadataValue.text(decision.digest()),
            "global_adapter_path": MetadataValue.path(str(adapter_dir)),
            "global_adapter_digest": MetadataValue.text(str(adapter_meta["digest"])),
        },
        check_results=[
            verify_artifact("tgsp_package", package_path, digest),
            AssetCheckResult(
                asset_key=AssetKey("tgsp_package"),
                check_name="signature_verifies",
                passed=verified,
            ),
        ],
    )


def _publish(
    context: AssetExecutionContext, fleet: FleetResource, package_path: Path, meta: dict[str, Any]
) -> ReleaseRecord:
    report_path, report_meta = verified_upstream_path(
        context, "evaluation_report", context.partition_key
    )
    report = json.loads(report_path.read_text(encoding="utf-8"))
    return fleet.registry.publish(
        package_path,
        fleet.channel,
        int(meta["version"]),
        metadata={
            "round": context.partition_key,
            "eval_loss": float(report["losses"]["global_adapter"]),
            "held_out_digest": str(report["held_out_digest"]),
            "global_adapter_path": str(meta["global_adapter_path"]),
            "global_adapter_digest": str(meta["global_adapter_digest"]),
            "gate_decision_digest": str(meta["gate_decision_digest"]),
            "evaluation_report_digest": str(report_meta["digest"]),
        },
    )


@asset(
    group_name=PUBLISH_GROUP,
    partitions_def=round_partitions,
    deps=["tgsp_package", "gate_decision", "evaluation_report"],
    kinds={"mqtt", "sqlite"},
    owners=["team:release"],
)
def release(
    context: AssetExecutionContext,
    runtime: TensorGuardRuntime,
    fleet: FleetResource,
) -> MaterializeResult:
    """Publication: the package is copied atomically into the registry (monotonic
    version per channel), recorded in the application database, and announced to the
    fleet over MQTT (retained, QoS 1). Only a round whose gate passed gets here."""
    round_key = context.partition_key
    package_path, package_meta = verified_upstream_path(context, "tgsp_package", round_key)
    try:
        decision, _ = _passed_decision(context, round_key)
        record = _publish(context, fleet, package_path, package_meta)
        location = fleet.registry.location(record)
        database = fleet.database()
        try:
            database.record_release(
                fleet.fleet,
                record,
                location,
                gate_decision_digest=decision.digest(),
                actor=f"dagster:{context.run.run_id}",
            )
        finally:
            database.close()
        settings = fleet.mqtt
        topic = "not announced: no broker configured (set TG_MQTT_HOST)"
        if settings is not None:
            topic = announce_release(
                settings,
                announcement_for(
                    fleet.registry, record, fleet.fleet, gate_decision_digest=decision.digest()
                ),
            )
        else:
            context.log.warning(f"release v{record.version} published but {topic}")
    except TensorGuardError as exc:
        raise fail_closed(exc, step="release") from None
    context.log.info(f"published {fleet.channel} v{record.version} at {location}")
    return MaterializeResult(
        metadata={
            "location": MetadataValue.url(location),
            "path": MetadataValue.path(str(fleet.registry.package_path(record))),
            "digest": MetadataValue.text(record.digest),
            "version": MetadataValue.int(record.version),
            "channel": MetadataValue.text(record.channel),
            "fleet": MetadataValue.text(fleet.fleet),
            "mqtt_topic": MetadataValue.text(topic),
            "verify_command": MetadataValue.text(
                f"tensorguard tgsp verify {fleet.registry.package_path(record)} "
                "--trust-store <your trust-store.json>"
            ),
        },
    )
