"""Re-derive a finished round from its recorded inputs: ``tensorguard round reproduce``.

An auditor asks "did this release come from these inputs?". :func:`reproduce_round`
reads what the pipeline recorded in the artifact store for one round and re-runs every
deterministic stage in a scratch directory, comparing digests stage by stage, in the
pipeline's order:

* ``site_dataset[site]`` — the site's data digest, recomputed from its data directory;
* ``site_adapter[site]`` — LoRA training re-run from the base model, the round's
  reference adapter, the site's data and its recorded training settings;
* ``aggregated_update`` — the homomorphic sum recomputed from the signed envelopes;
* ``pruned_model`` and ``onnx_model`` — re-built from the base model and the global
  adapter with the recorded settings.

Stages that are random by design — key generation, encryption (each ``site_update``),
signatures (the round spec, the seed reveals), and the custodian's decryption, which
needs the CKKS secret — are *verified instead*: the round spec's signature under the
coordinator key, the base model's digest against the signed spec, each envelope's
signature and round rules (the aggregator's own checks), and the custodian ledger's
record that the reproduced aggregate is the one it decrypted. The global adapter is
deterministic given the aggregate (the round's fixed-point grid,
:mod:`tensorguard.federation._fixed_point`), so two decryptions give the same bytes.

Determinism is switched on (:func:`~tensorguard.training.determinism.enable_determinism`)
as ``TG_DETERMINISTIC=true`` does in the pipeline; the round must have run with it too.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from tensorguard.artifact_layout import (
    AGGREGATE_FILE,
    CUSTODIAN_LEDGER,
    DATASET_SUMMARY_FILE,
    ENVELOPE_FILE,
    PUBLISHED_COORDINATOR_KEY,
    ROUND_SPEC_FILE,
    SITE_PUBLIC_KEYS_DIR,
    partition_dir,
)
from tensorguard.codec import CodecError, parse_json_object
from tensorguard.crypto import CompositeVerifyKey
from tensorguard.digest import sha256_file, sha256_path, sha256_tree
from tensorguard.errors import TensorGuardError
from tensorguard.federation import (
    LEDGER_SIGNATURE_CONTEXT,
    AggregationResult,
    LedgerError,
    PublicFederation,
    RoundSpec,
    aggregate_updates,
    load_signed_round_spec,
    tensors_digest,
)
from tensorguard.held_out import load_held_out_set
from tensorguard.hf import read_adapter_tensors
from tensorguard.optimize.merge import merge_adapter
from tensorguard.optimize.onnx_export import export_causal_lm_to_onnx
from tensorguard.optimize.pruned_model import (
    PRUNING_SETTINGS_FILE,
    build_pruned_model,
    pruning_settings_from_json,
)
from tensorguard.signed_log import SignedLog
from tensorguard.training.dataset import load_site_dataset
from tensorguard.training.determinism import enable_determinism
from tensorguard.training.lora import TRAINING_SETTINGS_FILE, LoRATrainingConfig, train_site_adapter

StageKind = Literal["reproduced", "verified instead"]
Progress = Callable[[str], None]

DEVELOPMENT_COORDINATOR_KEY = PUBLISHED_COORDINATOR_KEY
DEVELOPMENT_SITE_KEYS = SITE_PUBLIC_KEYS_DIR


class ReproductionError(TensorGuardError):
    """The round's recorded inputs are missing or unreadable, so nothing can be compared."""


@dataclass(frozen=True)
class StageOutcome:
    """One stage: recorded against reproduced digest, or what was verified instead."""

    stage: str
    kind: StageKind
    recorded: str
    reproduced: str
    equal: bool

    def to_json(self) -> dict[str, object]:
        """Plain values for ``--json``."""
        return {
            "stage": self.stage,
            "kind": self.kind,
            "recorded": self.recorded,
            "reproduced": self.reproduced,
            "equal": self.equal,
        }


@dataclass(frozen=True)
class ReproductionReport:
    """Every stage of a round, in pipeline order."""

    round_id: str
    stages: tuple[StageOutcome, ...]

    @property
    def first_divergence(self) -> StageOutcome | None:
        """The first stage whose reproduction or verification failed, if any."""
        return next((stage for stage in self.stages if not stage.equal), None)

    @property
    def ok(self) -> bool:
        """True when every stage reproduced or verified."""
        return self.first_divergence is None

    def to_json(self) -> dict[str, object]:
        """Plain values for ``--json``."""
        first = self.first_divergence
        return {
            "round": self.round_id,
            "ok": self.ok,
            "first_diverging_stage": first.stage if first else None,
            "stages": [stage.to_json() for stage in self.stages],
        }


@dataclass(frozen=True)
class RoundRecord:
    """Where a finished round's recorded inputs are, and the keys that vouch for them.

    ``base_model_dir`` defaults to the base model in the artifact store; it must hash to
    the round spec's ``base_model_digest``. ``custodian_key`` (optional) checks the
    signatures of the custodian's decryption ledger.
    """

    artifact_root: Path
    round_id: str
    coordinator_key: CompositeVerifyKey
    site_keys: Mapping[str, CompositeVerifyKey]
    base_model_dir: Path | None = None
    custodian_key: CompositeVerifyKey | None = None
    min_sites: int = 2

    def asset_dir(self, asset_name: str, partition_key: str | None = None) -> Path:
        """The recorded artifact directory of an asset (and partition)."""
        return partition_dir(self.artifact_root, asset_name, partition_key)


@dataclass
class _Run:
    """The report being built, and the scratch directory."""

    record: RoundRecord
    scratch: Path
    progress: Progress
    stages: list[StageOutcome] = field(default_factory=list)

    def add(self, stage: str, kind: StageKind, recorded: str, reproduced: str) -> None:
        outcome = StageOutcome(stage, kind, recorded, reproduced, recorded == reproduced)
        self.stages.append(outcome)
        self.progress(
            f"{stage}: {'equal' if outcome.equal else 'DIFFERENT'} ({kind}) "
            f"recorded {recorded[:16]} reproduced {reproduced[:16]}"
        )


@dataclass(frozen=True)
class _Site:
    site_id: str
    partition: str
    data_dir: Path
    data_digest: str


def reproduce_round(
    record: RoundRecord, scratch: Path, *, seed: int = 0, progress: Progress | None = None
) -> ReproductionReport:
    """Re-run the round's deterministic stages in ``scratch`` and compare every digest.

    Raises :class:`ReproductionError` when a recorded input the comparison needs is
    missing (the message names it); every other difference is a stage in the report.
    """
    run = _Run(record, scratch, progress or (lambda _line: None))
    spec_dir = record.asset_dir("round_spec", record.round_id)
    spec_bytes = _read(spec_dir / ROUND_SPEC_FILE, "the signed round spec")
    try:
        spec = load_signed_round_spec(spec_bytes, record.coordinator_key)
        run.add("round_spec", "verified instead", "coordinator signature", "coordinator signature")
    except TensorGuardError as exc:
        run.add("round_spec", "verified instead", "coordinator signature", f"invalid: {exc}")
        return ReproductionReport(record.round_id, tuple(run.stages))
    reference_dir = spec_dir / "reference"
    run.add(
        "round_spec reference adapter",
        "verified instead",
        spec.reference_digest,
        _reference_digest(reference_dir),
    )
    base_dir = record.base_model_dir or record.asset_dir("base_model") / "model"
    base_digest = sha256_tree(base_dir) if base_dir.is_dir() else f"missing: {base_dir}"
    run.add("base_model", "verified instead", spec.base_model_digest, base_digest)
    sites = _round_sites(record)
    enable_determinism(seed)  # process-wide, as TG_DETERMINISTIC=true does in the pipeline
    for site in sites:
        _site_dataset(run, site)
    for site in sites:
        _site_adapter(run, site, base_dir, reference_dir, spec.base_model_digest)
    payload_digest = _aggregate(run, spec, sites)
    adapter_dir = record.asset_dir("global_adapter", record.round_id) / "adapter"
    _global_adapter(run, payload_digest, adapter_dir)
    _pruned_model(run, base_dir, adapter_dir, sites)
    _onnx_model(run, base_dir, adapter_dir)
    return ReproductionReport(record.round_id, tuple(run.stages))


def _read(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise ReproductionError(
            f"{what} is not in the artifact store ({path}: {exc.strerror}); point "
            "--artifact-root at the state the round ran with"
        ) from exc


def _read_json(path: Path, what: str) -> dict[str, Any]:
    try:
        return parse_json_object(_read(path, what), what=what)
    except CodecError as exc:
        raise ReproductionError(f"{what} ({path}) is not a JSON object: {exc}") from exc


def _reference_digest(reference_dir: Path) -> str:
    """The tensors digest of the round's reference adapter (what the spec signs)."""
    try:
        return tensors_digest(read_adapter_tensors(reference_dir))
    except TensorGuardError as exc:
        return f"unreadable: {exc}"


def _round_sites(record: RoundRecord) -> list[_Site]:
    """The round's sites, from the site_dataset summaries recorded for the round."""
    sites: list[_Site] = []
    for summary_path in sorted(record.asset_dir("site_dataset").glob(f"*/{DATASET_SUMMARY_FILE}")):
        summary = _read_json(summary_path, "a site_dataset summary")
        if summary.get("round") != record.round_id:
            continue
        sites.append(
            _Site(
                site_id=str(summary["site"]),
                partition=summary_path.parent.name,
                data_dir=Path(str(summary["data_dir"])),
                data_digest=str(summary["digest"]),
            )
        )
    if not sites:
        raise ReproductionError(
            f"no site_dataset is recorded for round {record.round_id!r} under "
            f"{record.asset_dir('site_dataset')}; is this the round's artifact store?"
        )
    return sorted(sites, key=lambda site: site.site_id)


def _site_dataset(run: _Run, site: _Site) -> None:
    try:
        reproduced = load_site_dataset(site.data_dir).digest
    except TensorGuardError as exc:
        reproduced = f"unreadable: {exc}"
    run.add(f"site_dataset[{site.site_id}]", "reproduced", site.data_digest, reproduced)


def _site_adapter(
    run: _Run, site: _Site, base_dir: Path, reference_dir: Path, base_digest: str
) -> None:
    recorded_dir = run.record.artifact_root / "site_adapter" / site.partition
    settings = _read_json(recorded_dir / TRAINING_SETTINGS_FILE, "a site's training settings")
    recorded = sha256_tree(recorded_dir / "adapter")
    out_dir = run.scratch / "site_adapter" / site.partition
    try:
        result = train_site_adapter(
            base_dir,
            load_site_dataset(site.data_dir),
            LoRATrainingConfig.model_validate(settings),
            out_dir,
            initial_adapter_dir=reference_dir,
            base_model_digest=base_digest,
        )
        reproduced = result.adapter_digest
    except (TensorGuardError, ValueError) as exc:
        reproduced = f"failed: {exc}"
    run.add(f"site_adapter[{site.site_id}]", "reproduced", recorded, reproduced)


def _aggregate(run: _Run, spec: RoundSpec, sites: Sequence[_Site]) -> str | None:
    """Recompute the aggregate from the envelopes; each envelope's signature and round
    rules are verified on the way. Returns the reproduced payload's SHA-256."""
    record = run.record
    recorded_path = record.asset_dir("aggregated_update", record.round_id) / AGGREGATE_FILE
    recorded_bytes = _read(recorded_path, "the round's aggregate")
    recorded = AggregationResult.from_bytes(recorded_bytes)
    public = _public_federation(record, recorded.public_context_sha256)
    run.add(
        "federation_keys (key ceremony)",
        "verified instead",
        recorded.public_context_sha256,
        public.digest,
    )
    envelopes = [
        _read(record.artifact_root / "site_update" / site.partition / ENVELOPE_FILE, "an envelope")
        for site in sites
    ]
    try:
        result = aggregate_updates(envelopes, record.site_keys, spec, public, record.min_sites)
    except TensorGuardError as exc:
        for site in sites:
            run.add(f"site_update[{site.site_id}]", "verified instead", "accepted", f"{exc}")
        run.add("aggregated_update", "reproduced", sha256_file(recorded_path), "failed")
        return None
    accepted = {update.site_id for update in result.accepted}
    recorded_accepted = {update.site_id for update in recorded.accepted}
    for site in sites:
        run.add(
            f"site_update[{site.site_id}]",
            "verified instead",
            "accepted" if site.site_id in recorded_accepted else "rejected",
            "accepted" if site.site_id in accepted else "rejected",
        )
    reproduced_bytes = result.to_bytes()
    run.add(
        "aggregated_update",
        "reproduced",
        hashlib.sha256(recorded_bytes).hexdigest(),
        hashlib.sha256(reproduced_bytes).hexdigest(),
    )
    return hashlib.sha256(result.payload).hexdigest()


def _public_federation(record: RoundRecord, digest: str) -> PublicFederation:
    for directory in sorted(record.asset_dir("federation_keys").iterdir()):
        if directory.is_dir():
            try:
                public = PublicFederation.read(directory)
            except TensorGuardError:
                continue
            if public.digest == digest:
                return public
    raise ReproductionError(
        f"no federation public context with digest {digest[:16]}… in "
        f"{record.asset_dir('federation_keys')}; the aggregate's key ceremony is missing"
    )


def _global_adapter(run: _Run, payload_digest: str | None, adapter_dir: Path) -> None:
    """Decryption needs the custodian's secret: verified by the custodian's ledger, which
    must record a decryption of exactly the reproduced aggregate for this round."""
    record = run.record
    ledger = record.artifact_root / CUSTODIAN_LEDGER
    found = "no ledger record"
    for entry in _ledger_records(ledger, record.custodian_key):
        if entry.get("round_id") == record.round_id:
            found = str(entry.get("aggregate_sha256"))
    run.add(
        "global_adapter (custodian decryption)",
        "verified instead",
        found,
        payload_digest or "no reproduced aggregate",
    )
    if not adapter_dir.is_dir():
        raise ReproductionError(f"the round's global adapter is not recorded ({adapter_dir})")


def _ledger_records(path: Path, key: CompositeVerifyKey | None) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    if key is not None:
        return SignedLog(
            path,
            key,
            context=LEDGER_SIGNATURE_CONTEXT,
            error=LedgerError,
            name="custodian ledger",
            signer="the custodian's key",
            remedy="Ask the custodian for its ledger",
        ).records()
    records = []
    for line in path.read_bytes().splitlines():
        document = json.loads(line)
        records.append(dict(document.get("record", {})))
    return records


def _pruned_model(run: _Run, base_dir: Path, adapter_dir: Path, sites: Sequence[_Site]) -> None:
    recorded_dir = run.record.asset_dir("pruned_model", run.record.round_id)
    settings, exclude = pruning_settings_from_json(
        _read_json(recorded_dir / PRUNING_SETTINGS_FILE, "the pruning settings")
    )
    recorded = sha256_path(recorded_dir / "model")
    try:
        held_out = load_held_out_set(base_dir, {site.site_id: site.data_dir for site in sites})
        build = build_pruned_model(
            base_dir,
            adapter_dir,
            held_out.token_batches(),
            run.scratch / "pruned_model" / "model",
            settings=settings,
            exclude=exclude,
        )
        reproduced = build.digest
    except TensorGuardError as exc:
        reproduced = f"failed: {exc}"
    run.add("pruned_model", "reproduced", recorded, reproduced)


def _onnx_model(run: _Run, base_dir: Path, adapter_dir: Path) -> None:
    recorded = sha256_path(run.record.asset_dir("onnx_model", run.record.round_id) / "onnx")
    try:
        result = export_causal_lm_to_onnx(
            merge_adapter(base_dir, adapter_dir), run.scratch / "onnx_model" / "onnx"
        )
        reproduced = result.sha256
    except TensorGuardError as exc:
        reproduced = f"failed: {exc}"
    run.add("onnx_model", "reproduced", recorded, reproduced)
