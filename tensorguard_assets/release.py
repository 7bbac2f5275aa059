"""Release stage: held-out evaluation, the release gate, the signed and encrypted TGSP
package, and publication to the registry with a fleet notification."""
# No "from __future__ import annotations": Dagster resolves config and resource
# parameter types from the runtime annotations. torch, transformers and peft are imported
# inside the evaluation: every Dagster process imports this module, few evaluate.

import json
from collections.abc import Mapping
from pathlib import Path

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

from tensorguard.crypto import CompositeSigner, XWingPublicKey
from tensorguard.digest import sha256_file
from tensorguard.errors import ConfigurationError
from tensorguard.fleet.notify import package_location
from tensorguard.fleet.outbox import AnnouncementOutcome
from tensorguard.fleet.provisioning import provision_edge_node
from tensorguard.gate import GateDecision
from tensorguard.model_card import RoundFacts, TrainingSettings, iso_utc
from tensorguard.production import is_production
from tensorguard.release import (
    DECISION_FILE,
    REPORT_FILE,
    PackagedRelease,
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
from tensorguard.release_canary import canary_plan, record_and_start_canary
from tensorguard.tgsp import TrustStore
from tensorguard_assets import groups
from tensorguard_assets.artifact_checks import (
    integrity_check_spec,
    verify_artifact,
    write_artifact,
    write_json_artifact,
)
from tensorguard_assets.artifact_inputs import VerifiedArtifact, artifact_ins
from tensorguard_assets.federation import load_round
from tensorguard_assets.lineage import (
    latest_check_passed,
    latest_materialization_record,
    recorded_metadata,
    require_upstreams,
)
from tensorguard_assets.metadata import metadata_float, metadata_table, write_line_plot
from tensorguard_assets.partitions import round_partitions, round_site_key
from tensorguard_assets.round_history import round_comparison, site_metric
from tensorguard_resources import ArtifactStore, SiteRegistry, fail_closed_on
from tensorguard_resources.fleet import FleetResource
from tensorguard_resources.keys import KeyVault

DEMO_EDGE_NODE = "edge-demo-1"
ROUND_COMPARISON_PNG = "round_comparison.png"
"""Held-out loss of base, global and pruned per round, drawn next to the report."""
GATED_CHECKS = (
    ("aggregated_update", "quorum_met"),
    ("global_adapter", "artifact_integrity"),
    ("pruned_model", "two_four_pattern_exact"),
    ("onnx_model", "onnx_parity"),
    ("moai_export", "moai_hashes_match"),
    ("moai_export", "moai_self_check"),
)


@asset(
    group_name=groups.GATE,
    partitions_def=round_partitions,
    ins=artifact_ins("global_adapter", "pruned_model", "base_model"),
    kinds={"pytorch"},
    owners=["team:ml-platform"],
    check_specs=[integrity_check_spec("evaluation_report")],
)
def evaluation_report(
    context: AssetExecutionContext,
    artifacts: ArtifactStore,
    sites: SiteRegistry,
    fleet: FleetResource,
    global_adapter: VerifiedArtifact,
    pruned_model: VerifiedArtifact,
    base_model: VerifiedArtifact,
) -> MaterializeResult:
    """Held-out loss and perplexity of the base model, the round's global adapter, its
    2:4-pruned merge, and the channel's last published release, on every site's
    held-out texts."""
    import torch

    from tensorguard.held_out import load_held_out_set, load_with_adapter
    from tensorguard.hf import load_causal_lm
    from tensorguard.training.causal_lm import perplexity

    round_key = context.partition_key
    base_dir, adapter_dir, pruned_dir = base_model.path, global_adapter.path, pruned_model.path
    with fail_closed_on(context):
        held_out = load_held_out_set(base_dir, {s: r.data_dir for s, r in sites.sites().items()})
        losses = {
            "base_model": held_out.loss(load_causal_lm(base_dir, dtype=torch.float32)),
            "global_adapter": held_out.loss(load_with_adapter(base_dir, adapter_dir)),
            "pruned_model": held_out.loss(load_causal_lm(pruned_dir, dtype=torch.float32)),
        }
        last_release = compare_with_last_release(
            fleet.registry,
            fleet.channel,
            held_out.digest,
            lambda adapter: held_out.loss(load_with_adapter(base_dir, adapter)),
        )
    if last_release.eval_loss is not None:
        losses["last_release"] = last_release.eval_loss
    report = {
        "round": round_key,
        # Only the number: this report ships in the package, and naming the sites is
        # the gate policy's call (disclose_site_ids, shown on the model card).
        "held_out_site_count": len(held_out.site_ids),
        "held_out_sequences": len(held_out.sequences),
        "held_out_digest": held_out.digest,
        "losses": losses,
        "last_release": last_release.to_document(),
    }
    out_path = artifacts.asset_dir("evaluation_report", round_key) / REPORT_FILE
    digest = write_json_artifact(out_path, report)
    base_loss = losses["base_model"]
    context.log.info(
        "held-out loss: " + ", ".join(f"{name} {loss:.4f}" for name, loss in losses.items())
    )
    comparison = round_comparison(
        context.instance,
        round_key,
        {
            "base": base_loss,
            "global": losses["global_adapter"],
            "pruned": losses["pruned_model"],
        },
    )
    comparison_png = write_line_plot(
        out_path.parent / ROUND_COMPARISON_PNG,
        {
            column: [row[column] if row[column] is not None else float("nan") for row in comparison]
            for column in ("base", "global", "pruned")
        },
        x=[row["round"] for row in comparison],
        title="Held-out loss per round",
        xlabel="round",
        ylabel="loss",
    )
    site_losses = site_metric(
        context.instance, round_key, sites.sites(), "site_adapter", "eval_loss_after"
    )
    return MaterializeResult(
        metadata={
            "path": MetadataValue.path(str(out_path)),
            "digest": MetadataValue.text(digest),
            "eval_loss_base": metadata_float(base_loss),
            "eval_loss_global": metadata_float(losses["global_adapter"]),
            "eval_loss_pruned": metadata_float(losses["pruned_model"]),
            "last_release": MetadataValue.text(last_release.kind),
            "held_out_sequences": MetadataValue.int(len(held_out.sequences)),
            "losses": metadata_table(
                [
                    {
                        "model": name,
                        "loss": loss,
                        "perplexity": perplexity(loss),
                        "change_vs_base": loss - base_loss,
                    }
                    for name, loss in losses.items()
                ]
            ),
            "round_comparison": metadata_table(comparison),
            "round_comparison_png": MetadataValue.path(str(comparison_png)),
            # One entry per site, so each site is its own series over the rounds.
            **{
                f"site_eval_loss_after[{site}]": metadata_float(loss)
                for site, loss in site_losses.items()
            },
        },
        check_results=[verify_artifact("evaluation_report", out_path, digest)],
    )


class GateConfig(Config):
    """Which release policy to apply."""

    policy_file: str = Field(
        default="",
        description="Path of a gate policy YAML; empty uses the shipped default policy.",
    )


def _measured_checks(context: AssetExecutionContext, round_key: str) -> dict[str, bool]:
    """The recorded results of the asset checks the gate requires, as ``asset.check``."""
    return {
        f"{asset_name}.{check}": latest_check_passed(context, asset_name, check, round_key)
        for asset_name, check in GATED_CHECKS
    }


def _criterion_metadata(decision: GateDecision) -> dict[str, MetadataValue]:
    """Per criterion: its status, and its measured value and threshold where numeric
    (``<criterion>_value``, ``<criterion>_threshold``), plus every criterion as JSON."""
    metadata: dict[str, MetadataValue] = {
        "criteria": MetadataValue.json(
            [
                {
                    "name": c.name,
                    "status": c.status,
                    "blocking": c.blocking,
                    "value": c.observed,
                    "threshold": c.threshold,
                }
                for c in decision.criteria
            ]
        )
    }
    for criterion in decision.criteria:
        if criterion.name.startswith("check:"):
            continue
        metadata[f"{criterion.name}_status"] = MetadataValue.text(criterion.status)
        if isinstance(criterion.observed, float):
            metadata[f"{criterion.name}_value"] = metadata_float(round(criterion.observed, 6))
        if criterion.threshold is not None:
            metadata[f"{criterion.name}_threshold"] = metadata_float(criterion.threshold)
    return metadata


@asset(
    group_name=groups.GATE,
    partitions_def=round_partitions,
    ins=artifact_ins(
        "evaluation_report", "onnx_model", "pruned_model", "moai_export", "global_adapter"
    ),
    # Read for its quorum_met check result only (GATED_CHECKS), not its artifact.
    deps=["aggregated_update"],
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
    artifacts: ArtifactStore,
    fleet: FleetResource,
    evaluation_report: VerifiedArtifact,
    onnx_model: VerifiedArtifact,
    pruned_model: VerifiedArtifact,
    moai_export: VerifiedArtifact,
    global_adapter: VerifiedArtifact,
) -> MaterializeResult:
    """The release gate: the versioned policy applied to the round's evidence for every
    deployable (global adapter and pruned model losses, sparsity, ONNX parity, MOAI
    self-check error, asset checks) and, when the policy has a ``safety`` section, the
    signed safety evaluation of the round's model (the global adapter's digest) from the
    application database. The decision is recorded either way, with each
    criterion's value and threshold; a failed gate's blocking check stops the release,
    and a pruned model over budget is excluded from the package or fails the gate, as
    the policy's ``pruned_over_budget`` says."""
    require_upstreams(context)  # aggregated_update, whose check result the gate reads
    round_key = context.partition_key
    moai_meta = moai_export.metadata
    policy_file = Path(config.policy_file) if config.policy_file else None
    with fail_closed_on(context):
        report = json.loads(evaluation_report.path.read_text(encoding="utf-8"))
        evidence = gate_evidence(
            report,
            onnx_max_abs_diff=float(onnx_model.metadata["max_abs_diff"]),
            sparsity=float(pruned_model.metadata["sparsity"]),
            moai_self_check=moai_self_check_evidence(moai_meta),
            checks=_measured_checks(context, round_key),
        )
        decision = decide_release(
            evidence,
            policy_file,
            model_digest=global_adapter.digest,
            database_url=fleet.database_url,
        )
    out_path = artifacts.asset_dir("gate_decision", round_key) / DECISION_FILE
    digest = write_artifact(out_path, decision.canonical_json())
    verdict = "PASSED" if decision.passed else "FAILED"
    context.log.info(f"release gate {verdict} (policy v{decision.policy_version})")
    for failure in decision.failures:
        context.log.error(f"gate: {failure}")
    for criterion in decision.criteria:
        if criterion.status == "excluded":
            context.log.warning(f"gate: {criterion.reason}")
    return MaterializeResult(
        metadata={
            "path": MetadataValue.path(str(out_path)),
            "digest": MetadataValue.text(digest),
            "passed": MetadataValue.bool(decision.passed),
            "excluded": MetadataValue.text(", ".join(decision.excluded) or "none"),
            "decision_digest": MetadataValue.text(decision.digest()),
            "policy_version": MetadataValue.int(decision.policy_version),
            "policy_digest": MetadataValue.text(decision.policy_digest),
            "reasons": MetadataValue.md("\n".join(f"- {r}" for r in decision.reasons)),
            **_criterion_metadata(decision),
            # measured on a fresh encryption, so kept here, not in the shipped decision
            "moai_self_check_measured_error": metadata_float(
                float(moai_meta["self_check_max_abs_error"])
            ),
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


class PackageConfig(Config):
    """How long a release stays installable."""

    validity_days: int = Field(default=30, ge=1, description="Days until the package expires.")


def _round_facts(
    context: AssetExecutionContext,
    artifacts: ArtifactStore,
    aggregated_update: VerifiedArtifact,
    round_spec: VerifiedArtifact,
    adapter_meta: Mapping[str, object],
) -> RoundFacts:
    """The round's facts for the model card: the aggregated sites, the training settings
    of the coordinator-signed round spec, the steps each of those sites trained
    (``site_adapter``) and the DP ε the custodian recorded."""
    round_key = context.partition_key
    accepted = str(aggregated_update.metadata["accepted_sites"])
    site_ids = tuple(site for site in accepted.split(", ") if site)
    spec, _ = load_round(round_spec, artifacts)
    local_steps: list[int] = []
    for site_id in site_ids:
        key = round_site_key(round_key, site_id)
        record = latest_materialization_record(context.instance, "site_adapter", key)
        recorded = recorded_metadata(record) if record is not None else {}
        if "steps" in recorded:
            local_steps.append(int(recorded["steps"]))
    epsilon = (
        (float(str(adapter_meta["dp_epsilon_round"])), float(str(adapter_meta["dp_epsilon_total"])))
        if "dp_epsilon_round" in adapter_meta
        else None
    )
    return RoundFacts(
        site_ids=site_ids,
        training=TrainingSettings.from_round_spec(spec, local_steps),
        dp_epsilon=epsilon,
    )


def _package_metadata(package: PackagedRelease) -> dict[str, MetadataValue]:
    """The package as the UI shows it: the model card, the signed file list, the signer
    and the validity window (ISO-8601 UTC)."""
    return {
        "model_card": MetadataValue.md(package.model_card),
        "package_files": MetadataValue.json(
            [{"path": f.path, "size": f.size, "sha256": f.sha256} for f in package.manifest]
        ),
        "created_at": MetadataValue.text(iso_utc(package.created_at)),
        "expires_at": MetadataValue.text(iso_utc(package.expires_at)),
        "signer_fingerprint": MetadataValue.text(package.signer_fingerprint),
    }


def _recipients(
    context: AssetExecutionContext,
    artifacts: ArtifactStore,
    release_keys: KeyVault,
    fleet: FleetResource,
    signer: CompositeSigner,
) -> dict[str, XWingPublicKey]:
    """The enrolled edge nodes' keys; development enrols one demo node when none is."""
    recipients = fleet.recipient_keys()
    if recipients or not release_keys.development:
        return recipients
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
    return fleet.recipient_keys()


@asset(
    group_name=groups.PACKAGE,
    partitions_def=round_partitions,
    ins=artifact_ins(
        "gate_decision",
        "global_adapter",
        "pruned_model",
        "onnx_model",
        "moai_export",
        "evaluation_report",
        "base_model",
        "round_spec",
        "aggregated_update",
    ),
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
    artifacts: ArtifactStore,
    release_keys: KeyVault,
    fleet: FleetResource,
    gate_decision: VerifiedArtifact,
    global_adapter: VerifiedArtifact,
    pruned_model: VerifiedArtifact,
    onnx_model: VerifiedArtifact,
    moai_export: VerifiedArtifact,
    evaluation_report: VerifiedArtifact,
    base_model: VerifiedArtifact,
    round_spec: VerifiedArtifact,
    aggregated_update: VerifiedArtifact,
) -> MaterializeResult:
    """The release artifacts (global adapter, pruned model, ONNX, MOAI export, evaluation
    report, gate decision) and a MODEL_CARD.md in one TGSP v2 package: signed with the
    composite release key, encrypted to every enrolled edge node. A deployable the gate
    excluded (a pruned model over its loss budget) is left out."""
    round_key = context.partition_key
    decision_path, adapter_dir = gate_decision.path, global_adapter.path
    contents = {
        "global_adapter": adapter_dir,
        "pruned_model": pruned_model.path,
        "onnx": onnx_model.path,
        "moai": moai_export.path,
        REPORT_FILE: evaluation_report.path,
        DECISION_FILE: decision_path,
    }
    with fail_closed_on(context):
        decision = load_passed_decision(decision_path)
        signer = release_keys.provider.signer_for(
            fleet.release_key_name, generate_if_missing=release_keys.development
        )
        recipients = _recipients(context, artifacts, release_keys, fleet, signer)
        if not recipients:
            raise ConfigurationError(
                f"no edge node is enrolled: put each node's <node>.xwing.pub file in "
                f"{fleet.recipients_dir} (TG_FLEET_RECIPIENTS_DIR)"
            )
        package = build_release_package(
            ReleaseCandidate(
                round_id=round_key,
                contents=contents,
                adapter_digest=global_adapter.digest,
                base_model_digest=base_model.digest,
                decision=decision,
                round_facts=_round_facts(
                    context, artifacts, aggregated_update, round_spec, global_adapter.metadata
                ),
            ),
            artifacts.asset_dir("tgsp_package", round_key),
            signer=signer,
            recipients=list(recipients.values()),
            registry=fleet.registry,
            channel=fleet.channel,
            validity_days=config.validity_days,
        )
    if not package.verified:
        context.log.error(f"the new package does not verify: {package.verification_error}")
    for name in decision.excluded:
        context.log.warning(f"{name} is not in the package: the release gate excluded it")
    digest = sha256_file(package.path)
    context.log.info(
        f"TGSP package v{package.version} ({package.size} bytes) for "
        f"{len(recipients)} recipient(s), signed by {package.signer_fingerprint[:16]}…"
    )
    return MaterializeResult(
        metadata={
            "path": MetadataValue.path(str(package.path)),
            "digest": MetadataValue.text(digest),
            "version": MetadataValue.int(package.version),
            "channel": MetadataValue.text(package.channel),
            "size_bytes": MetadataValue.int(package.size),
            "files": MetadataValue.int(package.files),
            "excluded_by_gate": MetadataValue.text(", ".join(decision.excluded) or "none"),
            "recipients": MetadataValue.text(", ".join(sorted(recipients))),
            **_package_metadata(package),
            "gate_decision_digest": MetadataValue.text(decision.digest()),
            "global_adapter_path": MetadataValue.path(str(adapter_dir)),
            "global_adapter_digest": MetadataValue.text(global_adapter.digest),
        },
        check_results=[
            verify_artifact("tgsp_package", package.path, digest),
            AssetCheckResult(
                asset_key=AssetKey("tgsp_package"),
                check_name="signature_verifies",
                passed=package.verified,
                description=package.verification_error or "verifies against the release key",
            ),
        ],
    )


@asset(
    group_name=groups.PUBLISH,
    partitions_def=round_partitions,
    ins=artifact_ins("tgsp_package", "gate_decision", "evaluation_report", "global_adapter"),
    kinds={"mqtt", "sqlite"},
    owners=["team:release"],
)
def release(
    context: AssetExecutionContext,
    release_keys: KeyVault,
    fleet: FleetResource,
    tgsp_package: VerifiedArtifact,
    gate_decision: VerifiedArtifact,
    evaluation_report: VerifiedArtifact,
    global_adapter: VerifiedArtifact,
) -> MaterializeResult:
    """Publication: the package is copied atomically into the registry (monotonic
    version per channel), recorded in the application database, and announced to the
    fleet over MQTT (retained, QoS 1); with the broker down the announcement is queued in
    the application DB's outbox and delivered by ``tensorguard fleet collect`` when the
    broker is back (metadata ``announcement``: delivered, queued or not_announced). A
    backfilled round older than the channel's latest release is published as an archived
    entry: not the latest, not announced. With a ``canary`` section in the gate policy
    (and a previous release and enrolled nodes) the release is announced to the canary
    cohort only and ``canary_rollout`` later promotes or rolls it back.
    Only a round whose gate passed gets here, and only a package that verifies against
    the release key and names that decision."""
    round_key = context.partition_key
    with fail_closed_on(context):
        decision = load_passed_decision(gate_decision.path)
        release_signer = release_keys.provider.signer_for(fleet.release_key_name)
        record = publish_release(
            fleet.registry,
            tgsp_package.path,
            channel=fleet.channel,
            decision=decision,
            trust_store=TrustStore([release_signer.public_key()]),
            freshness_signer=release_signer,
            metadata=release_metadata(
                round_id=round_key,
                report=json.loads(evaluation_report.path.read_text(encoding="utf-8")),
                report_digest=evaluation_report.digest,
                adapter_path=global_adapter.path,
                adapter_digest=global_adapter.digest,
                decision=decision,
            ),
        )
        plan = canary_plan(
            fleet.registry,
            record,
            decision,
            database_url=fleet.database_url,
            fleet=fleet.fleet,
            production=is_production(),
        )
        canary_nodes: tuple[str, ...] = ()
        if plan.applies:
            rollout, canary_topics = record_and_start_canary(
                fleet.registry,
                record,
                plan,
                database_url=fleet.database_url,
                fleet=fleet.fleet,
                mqtt=fleet.mqtt,
                decision=decision,
                actor=f"dagster:{context.run.run_id}",
                service_url=fleet.service_url or None,
            )
            canary_nodes = rollout.canary_nodes
            outcome = AnnouncementOutcome(
                "delivered" if canary_topics else "not_announced",
                None,
                f"canary stage: announced to {len(canary_topics)} of {len(canary_nodes)} "
                "canary node(s) only; canary_rollout_sensor promotes or rolls it back",
            )
        else:
            outcome = record_and_announce(
                fleet.registry,
                record,
                database_url=fleet.database_url,
                fleet=fleet.fleet,
                mqtt=fleet.mqtt,
                decision=decision,
                actor=f"dagster:{context.run.run_id}",
                service_url=fleet.service_url or None,
            )
    location = package_location(fleet.registry, record, fleet.service_url or None)
    latest = fleet.registry.latest(fleet.channel)
    if record.archived and latest is not None:
        topic = (
            f"not announced: round {round_key} is older than round {latest.round_id} of "
            f"the channel's latest release v{latest.version}, so v{record.version} is an "
            "archived entry, never the channel's latest"
        )
        context.log.warning(f"backfill: release v{record.version} {topic}")
    elif canary_nodes:
        topic = outcome.detail
        context.log.info(f"release v{record.version}: {topic}")
    elif outcome.state == "delivered":
        topic = str(outcome.topic)
    elif outcome.state == "queued":
        topic = f"queued for {outcome.topic}: {outcome.detail}"
        context.log.warning(f"release v{record.version} published and recorded; {topic}")
    else:
        topic = f"not announced: {outcome.detail}"
        context.log.warning(f"release v{record.version} published but {topic}")
    archived = " as an archived entry" if record.archived else ""
    context.log.info(f"published {fleet.channel} v{record.version}{archived} at {location}")
    return MaterializeResult(
        metadata={
            "location": MetadataValue.url(location),
            "path": MetadataValue.path(str(fleet.registry.package_path(record))),
            "digest": MetadataValue.text(record.digest),
            "version": MetadataValue.int(record.version),
            "channel": MetadataValue.text(record.channel),
            "round": MetadataValue.text(round_key),
            "archived": MetadataValue.bool(record.archived),
            "channel_latest_version": MetadataValue.int(latest.version if latest else 0),
            "fleet": MetadataValue.text(fleet.fleet),
            "mqtt_topic": MetadataValue.text(topic),
            "announcement": MetadataValue.text(outcome.state),
            "canary": MetadataValue.text(plan.note),
            "canary_nodes": MetadataValue.json(list(canary_nodes)),
            "verify_command": MetadataValue.text(
                f"tensorguard tgsp verify {fleet.registry.package_path(record)} "
                "--trust-store <your trust-store.json>"
            ),
        },
    )
