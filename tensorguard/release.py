"""The release recipe: gate evidence, the last-release comparison, versioning, staging,
the signed TGSP package and its publication to the registry and the fleet.

Every decision a release makes lives here, as plain functions over the core APIs, so
it can be tested without an orchestrator. The Dagster assets (``tensorguard_assets``)
only locate their inputs, call these functions and record metadata::

    comparison = compare_with_last_release(registry, channel, held_out.digest, adapter_loss)
    evidence = gate_evidence(report, onnx_max_abs_diff=..., sparsity=...,
                             moai_self_check=MoaiSelfCheck.from_measurement(...), checks=...)
    decision = decide_release(evidence, policy_file)
    package = build_release_package(candidate, out_dir, signer=..., recipients=..., ...)
    record = publish_release(registry, package.path, decision=decision, trust_store=...)
    outcome = record_and_announce(registry, record, database_url=..., fleet=..., ...)

Publication is fail closed: a package is built and published only for a decision that
passed, and the registry only receives a package that verifies against the pinned
trust store and names that very decision in its signed header.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Literal

from tensorguard.crypto import CompositeSigner, XWingPublicKey
from tensorguard.digest import sha256_file, sha256_path
from tensorguard.errors import TensorGuardError
from tensorguard.fleet.db import FleetDatabase
from tensorguard.fleet.mqtt import MqttSettings
from tensorguard.fleet.outbox import AnnouncementOutcome, record_release_and_announce
from tensorguard.fleet.registry import LocalRegistry, ReleaseRecord
from tensorguard.gate import (
    DEFAULT_POLICY_FILE,
    FirstRelease,
    GateDecision,
    GateEvidence,
    MoaiSelfCheck,
    PreviousRelease,
    evaluate_gate,
    load_policy,
)
from tensorguard.gate.safety_policy import SafetyPolicy
from tensorguard.model_card import MODEL_CARD_FILE, RoundFacts, render_model_card
from tensorguard.model_reference import BASE_MODEL_NAME
from tensorguard.safety_evaluation import (
    SafetyEvaluationError,
    SignedSafetyEvaluation,
    threshold_failures,
)
from tensorguard.service.safety import SafetyEvaluationStore
from tensorguard.tgsp import (
    FileEntry,
    ModelIdentity,
    ReleaseInfo,
    TrustStore,
    VerificationPolicy,
    build_package,
    verify_package,
)

REPORT_FILE: Final = "evaluation_report.json"
DECISION_FILE: Final = "gate_decision.json"
PACKAGE_FILE: Final = "release.tgsp"
STAGING_DIR: Final = "staging"
MODEL_NAME: Final = "tensorguard-global-adapter"
SECONDS_PER_DAY: Final = 86_400

LastReleaseKind = Literal["first_release", "previous_release", "unavailable"]


class ReleaseError(TensorGuardError):
    """The release recipe refused a step (bad input, inconsistent package, no recipients)."""


class ReleaseBlockedError(ReleaseError):
    """The release gate did not pass, so nothing may be packaged or published."""


# --- comparison with the last release --------------------------------------------------


@dataclass(frozen=True)
class LastReleaseComparison:
    """What is known about the channel's last release on the current held-out set.

    ``kind`` is ``first_release`` (nothing published before), ``previous_release``
    (``version`` and its ``eval_loss`` on the same held-out set) or ``unavailable`` (a
    release exists but neither its adapter nor a loss on this held-out set is usable;
    the gate then fails for missing evidence when its policy needs it).
    """

    kind: LastReleaseKind
    version: int | None = None
    eval_loss: float | None = None

    def to_document(self) -> dict[str, Any]:
        """The JSON form recorded in the evaluation report."""
        document: dict[str, Any] = {"kind": self.kind}
        if self.version is not None:
            document["version"] = self.version
        if self.eval_loss is not None:
            document["eval_loss"] = self.eval_loss
        return document

    @classmethod
    def from_document(cls, document: Mapping[str, Any]) -> LastReleaseComparison:
        """Read the JSON form back; raise :class:`ReleaseError` when it is malformed."""
        kind = document.get("kind")
        if kind == "first_release":
            return cls("first_release")
        if kind == "previous_release":
            try:
                version, loss = int(document["version"]), float(document["eval_loss"])
            except (KeyError, TypeError, ValueError) as exc:
                raise ReleaseError(
                    f"the evaluation report's last_release entry is malformed ({exc!r}); "
                    "re-materialise evaluation_report"
                ) from None
            return cls("previous_release", version, loss)
        if kind == "unavailable":
            recorded = document.get("version")
            return cls("unavailable", int(recorded) if recorded is not None else None)
        raise ReleaseError(
            f"the evaluation report's last_release kind {kind!r} is unknown; expected "
            "first_release, previous_release or unavailable"
        )

    def gate_form(self) -> PreviousRelease | FirstRelease | None:
        """The gate's view: unavailable evidence is missing (``None``), never a pass."""
        if self.kind == "first_release":
            return FirstRelease()
        if (
            self.kind == "previous_release"
            and self.version is not None
            and (self.eval_loss is not None)
        ):
            return PreviousRelease(version=self.version, eval_loss=self.eval_loss)
        return None


def compare_with_last_release(
    registry: LocalRegistry,
    channel: str,
    held_out_digest: str,
    adapter_loss: Callable[[Path], float],
) -> LastReleaseComparison:
    """Measure the channel's last release on the current held-out set.

    The last release's adapter is re-evaluated with ``adapter_loss`` when its recorded
    directory still hashes to the recorded digest; otherwise its recorded loss is
    reused only if it was measured on the same held-out set (``held_out_digest``).
    """
    latest = registry.latest(channel)
    if latest is None:
        return LastReleaseComparison("first_release")
    recorded = latest.metadata
    adapter_path = Path(str(recorded.get("global_adapter_path", "")))
    recorded_digest = recorded.get("global_adapter_digest")
    if recorded_digest and adapter_path.is_dir() and sha256_path(adapter_path) == recorded_digest:
        return LastReleaseComparison("previous_release", latest.version, adapter_loss(adapter_path))
    if recorded.get("held_out_digest") == held_out_digest and "eval_loss" in recorded:
        loss = float(str(recorded["eval_loss"]))
        return LastReleaseComparison("previous_release", latest.version, loss)
    return LastReleaseComparison("unavailable", latest.version)


# --- the gate --------------------------------------------------------------------------


def gate_evidence(
    report: Mapping[str, Any],
    *,
    onnx_max_abs_diff: float | None,
    sparsity: float | None,
    checks: Mapping[str, bool],
    moai_self_check: MoaiSelfCheck | None = None,
) -> GateEvidence:
    """The facts the gate judges: the evaluation report's losses (base, global adapter,
    pruned model) and last-release comparison, the ONNX parity, the measured sparsity,
    the MOAI self-check's bound and outcome and the asset-check results. Evidence left
    ``None`` fails every criterion the policy enforces on it."""
    try:
        losses = report["losses"]
        last = LastReleaseComparison.from_document(report["last_release"])
        return GateEvidence(
            eval_loss_global=losses.get("global_adapter"),
            eval_loss_base=losses.get("base_model"),
            eval_loss_pruned=losses.get("pruned_model"),
            last_release=last.gate_form(),
            onnx_max_abs_diff=onnx_max_abs_diff,
            sparsity=sparsity,
            moai_self_check=moai_self_check,
            checks=dict(checks),
        )
    except (KeyError, TypeError, AttributeError) as exc:
        raise ReleaseError(
            f"the evaluation report lacks {exc!s}; re-materialise evaluation_report"
        ) from None


def moai_self_check_evidence(recorded: Mapping[str, Any]) -> MoaiSelfCheck:
    """The gate's record of the MOAI self-check from the ``moai_export`` materialisation's
    metadata (``self_check_max_abs_error``, ``self_check_tolerance``): the bound and
    whether the measured error stayed within it, never the measured error itself (it
    comes from a fresh CKKS encryption; the decision ships in the package and must be
    the same in every build). Raise :class:`ReleaseError` when either value is missing."""
    try:
        error = float(recorded["self_check_max_abs_error"])
        bound = float(recorded["self_check_tolerance"])
    except (KeyError, TypeError, ValueError) as exc:
        raise ReleaseError(
            f"the moai_export materialisation lacks a usable {exc!s} (self-check error and "
            "tolerance); re-materialise moai_export"
        ) from None
    return MoaiSelfCheck.from_measurement(error, bound)


def choose_safety_evaluation(
    candidates: Sequence[SignedSafetyEvaluation], model_digest: str, rule: SafetyPolicy
) -> SignedSafetyEvaluation | None:
    """The evaluation the gate judges: the first of ``candidates`` (newest first) that is
    of ``model_digest``, signed by a key ``rule`` trusts, verifies and meets every
    threshold; when none does, the newest one, so the decision records why it is
    refused; ``None`` when there is no candidate (the gate fails for missing evidence)."""
    for signed in candidates:
        try:
            evaluation = signed.verify(rule.trusted_evaluators)
        except SafetyEvaluationError:
            continue
        if evaluation.model_digest == model_digest and not threshold_failures(
            evaluation.metrics, rule
        ):
            return signed
    return candidates[0] if candidates else None


def stored_safety_evaluations(database_url: str, model_digest: str) -> list[SignedSafetyEvaluation]:
    """Every safety evaluation of ``model_digest`` in the application database, as signed
    (newest first, not verified: the gate verifies against its policy's trust list)."""
    database = FleetDatabase(database_url)
    try:
        database.require_current_schema()
        return SafetyEvaluationStore(database).signed_for_model(model_digest)
    finally:
        database.close()


def decide_release(
    evidence: GateEvidence,
    policy_file: Path | None = None,
    *,
    model_digest: str | None = None,
    database_url: str | None = None,
) -> GateDecision:
    """Apply the release policy (``policy_file`` or the shipped default) to ``evidence``.

    When the policy has a ``safety`` section, the evidence gets the round's
    ``model_digest`` and the safety evaluation of it chosen from the application
    database at ``database_url`` (:func:`choose_safety_evaluation`); the gate verifies
    its signature and thresholds, and blocks a release without one. Without the
    section the database is not read."""
    policy = load_policy(policy_file or DEFAULT_POLICY_FILE)
    if policy.safety is not None and model_digest is not None:
        candidates = stored_safety_evaluations(database_url, model_digest) if database_url else []
        chosen = choose_safety_evaluation(candidates, model_digest, policy.safety)
        document = evidence.model_dump(mode="json") | {"model_digest": model_digest}
        if chosen is not None:
            document["safety_evaluation"] = chosen.model_dump(mode="json")
        evidence = GateEvidence.parse(document)
    return evaluate_gate(policy, evidence)


def require_passed(decision: GateDecision) -> GateDecision:
    """Return ``decision`` if it passed; raise :class:`ReleaseBlockedError` otherwise."""
    if not decision.passed:
        raise ReleaseBlockedError(
            "the release gate failed for this round: " + "; ".join(decision.failures)
        )
    return decision


def load_passed_decision(path: Path) -> GateDecision:
    """Read a recorded gate decision, re-validate it, and refuse one that failed."""
    return require_passed(GateDecision.from_json(path.read_bytes()))


# --- versioning, staging and the package -----------------------------------------------


def next_version(registry: LocalRegistry, channel: str) -> int:
    """The version the next release of ``channel`` gets: one above the highest (archived
    backfills included), from 1."""
    return registry.highest_version(channel) + 1


def shipped_contents(contents: Mapping[str, Path], decision: GateDecision) -> dict[str, Path]:
    """The release artifacts (archive name → source) less those the gate excluded
    (``decision.excluded``, e.g. a pruned model over its loss budget)."""
    return {name: path for name, path in contents.items() if name not in decision.excluded}


def stage_release(contents: Mapping[str, Path], staging: Path) -> Path:
    """Copy each file or tree of ``contents`` (archive name → source) into a fresh
    ``staging`` directory; leftovers of an earlier attempt are removed first."""
    if not contents:
        raise ReleaseError("a release needs at least one artifact to package")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    for name, source in contents.items():
        if Path(name).name != name or name in ("", ".", ".."):
            raise ReleaseError(f"release artifact name {name!r} must be a plain file name")
        if source.is_dir():
            shutil.copytree(source, staging / name)
        elif source.is_file():
            shutil.copy2(source, staging / name)
        else:
            raise ReleaseError(f"release artifact {name} ({source}) does not exist")
    return staging


@dataclass(frozen=True)
class ReleaseCandidate:
    """What one round releases: its artifacts, identities and passed gate decision, and
    the round's facts for the model card (``None``: the card says they were not recorded)."""

    round_id: str
    contents: Mapping[str, Path]
    adapter_digest: str
    base_model_digest: str
    decision: GateDecision
    round_facts: RoundFacts | None = None


@dataclass(frozen=True)
class PackagedRelease:
    """A built TGSP package and whether it verifies against its signer's key."""

    path: Path
    channel: str
    version: int
    size: int
    files: int
    signer_fingerprint: str
    verification_error: str | None
    manifest: tuple[FileEntry, ...] = ()
    created_at: int = 0
    expires_at: int = 0
    model_card: str = ""

    @property
    def verified(self) -> bool:
        """True when the new package verified against a trust store of its signer."""
        return self.verification_error is None


def build_release_package(
    candidate: ReleaseCandidate,
    out_dir: Path,
    *,
    signer: CompositeSigner,
    recipients: Sequence[XWingPublicKey],
    registry: LocalRegistry,
    channel: str,
    validity_days: int,
    now: int | None = None,
) -> PackagedRelease:
    """Stage the candidate's artifacts and build the channel's next TGSP package.

    Refuses a failed decision and an empty recipient list. Artifacts the decision
    excluded are left out (:func:`shipped_contents`); a model card
    (:data:`~tensorguard.model_card.MODEL_CARD_FILE`, from the release info, the
    decision and ``candidate.round_facts``) is added, so the signed manifest lists it.
    The package's version is
    the registry's next one for ``channel``; its signed header names the round, the
    model identities and the gate decision digest. The result is re-verified against a
    trust store pinning ``signer`` (the verdict is reported, not raised, so the
    caller records it as a check).
    """
    require_passed(candidate.decision)
    if not recipients:
        raise ReleaseError("a release package needs at least one enrolled edge node")
    if validity_days < 1:
        raise ReleaseError(f"validity_days must be at least 1, got {validity_days}")
    if MODEL_CARD_FILE in candidate.contents:
        raise ReleaseError(f"{MODEL_CARD_FILE} is written by the release; do not pass one in")
    version = next_version(registry, channel)
    created = int(time.time()) if now is None else now
    release = ReleaseInfo(
        channel=channel,
        version=version,
        created_at=created,
        expires_at=created + validity_days * SECONDS_PER_DAY,
        model=ModelIdentity(MODEL_NAME, candidate.adapter_digest),
        base_model=ModelIdentity(BASE_MODEL_NAME, candidate.base_model_digest),
        round_id=candidate.round_id,
        gate_decision_digest=candidate.decision.digest(),
    )
    model_card = render_model_card(release, candidate.decision, candidate.round_facts)
    staging = stage_release(
        shipped_contents(candidate.contents, candidate.decision), out_dir / STAGING_DIR
    )
    (staging / MODEL_CARD_FILE).write_text(model_card, encoding="utf-8")
    package_path = out_dir / PACKAGE_FILE
    package_path.unlink(missing_ok=True)
    try:
        result = build_package(
            staging, package_path, signer=signer, recipients=list(recipients), release=release
        )
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    verification_error: str | None = None
    try:
        verify_package(
            package_path,
            TrustStore([signer.public_key()]),
            VerificationPolicy(expected_channel=channel),
        )
    except TensorGuardError as exc:
        verification_error = str(exc)
    return PackagedRelease(
        path=package_path,
        channel=channel,
        version=version,
        size=result.package_size,
        files=len(result.header.files),
        signer_fingerprint=signer.public_key().fingerprint(),
        verification_error=verification_error,
        manifest=tuple(result.header.files),
        created_at=release.created_at,
        expires_at=release.expires_at,
        model_card=model_card,
    )


# --- publication -----------------------------------------------------------------------


def release_metadata(
    *,
    round_id: str,
    report: Mapping[str, Any],
    report_digest: str,
    adapter_path: Path,
    adapter_digest: str,
    decision: GateDecision,
) -> dict[str, str | float]:
    """What the registry records with a release, so the next round can compare with it."""
    try:
        return {
            "round": round_id,
            "eval_loss": float(report["losses"]["global_adapter"]),
            "held_out_digest": str(report["held_out_digest"]),
            "global_adapter_path": str(adapter_path),
            "global_adapter_digest": adapter_digest,
            "gate_decision_digest": decision.digest(),
            "evaluation_report_digest": report_digest,
        }
    except (KeyError, TypeError, ValueError) as exc:
        raise ReleaseError(
            f"the evaluation report lacks {exc!s}; re-materialise evaluation_report"
        ) from None


def publish_release(
    registry: LocalRegistry,
    package_path: Path,
    *,
    channel: str,
    decision: GateDecision,
    trust_store: TrustStore,
    metadata: Mapping[str, str | float],
    freshness_signer: CompositeSigner | None = None,
) -> ReleaseRecord:
    """Publish a built package to the registry, only for a decision that passed.

    With ``freshness_signer`` (the release key) the channel's signed freshness statement
    is re-issued after a release that becomes the latest, so fresh nodes refuse anything
    older (:mod:`tensorguard.tgsp._freshness`).

    The package must verify against ``trust_store`` for ``channel`` and its signed
    header must name ``decision`` (its digest); the registry then refuses any version
    not above the channel's highest, except the very same package (version and digest)
    published by an earlier attempt, whose record is returned (a re-run resumes). The
    registry records the round named in the signed
    header; a round older than the round of the channel's latest release (a backfill)
    is published as an archived entry that never becomes the latest
    (``record.archived``) and that :func:`record_and_announce` does not announce.
    """
    require_passed(decision)
    policy = VerificationPolicy(expected_channel=channel)
    verified = verify_package(package_path, trust_store, policy)
    release = verified.header.release
    if release.gate_decision_digest != decision.digest():
        raise ReleaseError(
            f"package {package_path} names gate decision {release.gate_decision_digest} but "
            f"this round's decision is {decision.digest()}; rebuild the package"
        )
    published = _already_published(registry, package_path, channel, release.version)
    if published is not None:
        return published
    record = registry.publish(
        package_path, channel, release.version, metadata=dict(metadata), round_id=release.round_id
    )
    if freshness_signer is not None and not record.archived:
        registry.publish_freshness(channel, freshness_signer)
    return record


def _already_published(
    registry: LocalRegistry, package_path: Path, channel: str, version: int
) -> ReleaseRecord | None:
    """The registry's record of this very package (same version, same SHA-256) if a
    previous attempt published it as the channel's newest entry: a release step re-run
    after a failure that followed the publication (e.g. the application database was
    down) resumes with it instead of being refused for a version that is not above the
    channel's highest."""
    latest = registry.releases(channel)[-1:]
    for record in latest:
        if record.version == version and record.digest == sha256_file(package_path):
            return record
    return None


def record_and_announce(
    registry: LocalRegistry,
    record: ReleaseRecord,
    *,
    database_url: str,
    fleet: str,
    mqtt: MqttSettings | None,
    decision: GateDecision,
    actor: str,
    service_url: str | None = None,
) -> AnnouncementOutcome:
    """Record a published release in the application database with its announcement
    queued in the outbox (one transaction), then announce it to the fleet (retained,
    QoS 1): the outcome is ``delivered`` (with the MQTT topic), ``queued`` (the broker is
    down: the announcement waits in ``announcement_outbox`` and ``tensorguard fleet
    collect`` delivers it when the broker is back) or ``not_announced`` (no broker
    configured, or an archived backfill, ``record.archived``: never offered as an
    upgrade). See :mod:`tensorguard.fleet.outbox`.

    With ``service_url`` (``TG_FLEET_SERVICE_URL``) the location recorded and announced
    is the package's download URL on that fleet service, else the registry's file URI."""
    return record_release_and_announce(
        registry,
        record,
        database_url=database_url,
        fleet=fleet,
        mqtt=mqtt,
        gate_decision_digest=decision.digest(),
        actor=actor,
        service_url=service_url,
    )
