"""The release's pruned model, built the same way by the pipeline and by a reproduction.

:func:`build_pruned_model` merges the round's global adapter into the base model, prunes
it to an exact 2:4 pattern, recovers it by distillation on the public corpus (seeded),
saves it atomically with the base model's tokenizer and returns its digest. The
settings that decide the bytes (``exclude`` and the recovery settings) are written
beside the model by the pipeline (:func:`pruning_settings_json`) so that ``tensorguard
round reproduce`` re-runs exactly this function.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tensorguard.digest import sha256_tree
from tensorguard.durable import atomic_copy
from tensorguard.hf import TokenBatch
from tensorguard.optimize.errors import PruningError
from tensorguard.optimize.merge import merge_adapter
from tensorguard.optimize.saving import SavedModel, save_model_atomically
from tensorguard.optimize.sparse_recovery import (
    RecoveredPruning,
    RecoverySettings,
    corpus_batches,
    prune_and_recover,
)
from tensorguard.training.base_model import TOKENIZER_FILES

PRUNING_SETTINGS_FILE = "pruning.json"


@dataclass(frozen=True)
class PrunedModelBuild:
    """The saved pruned model, what pruning and recovery measured, and its digest."""

    outcome: RecoveredPruning
    saved: SavedModel
    digest: str


def copy_tokenizer(base_dir: Path, model_dir: Path) -> None:
    """Ship the tokenizer beside a merged model so the directory is self-contained."""
    for path in sorted(base_dir.iterdir()):
        if path.name in TOKENIZER_FILES or path.name.startswith(("tokenizer", "special_tokens")):
            atomic_copy(path, model_dir / path.name)


def build_pruned_model(
    base_dir: Path,
    adapter_dir: Path,
    eval_batches: Sequence[TokenBatch],
    out_dir: Path,
    *,
    settings: RecoverySettings,
    exclude: Sequence[str],
) -> PrunedModelBuild:
    """Merge, prune to 2:4, recover, save with the tokenizer; ``eval_batches`` are only
    measured on. The digest is :func:`sha256_tree` of ``out_dir`` as shipped."""
    merged = merge_adapter(base_dir, adapter_dir)
    outcome = prune_and_recover(
        merged,
        eval_batches,
        corpus_batches(base_dir, settings),
        settings=settings,
        exclude=tuple(exclude),
    )
    saved = save_model_atomically(merged, out_dir)
    copy_tokenizer(base_dir, out_dir)
    return PrunedModelBuild(outcome, saved, sha256_tree(out_dir))


def pruning_settings_json(settings: RecoverySettings, exclude: Sequence[str]) -> dict[str, Any]:
    """The settings that decide the pruned model's bytes, as recorded beside it."""
    return {"exclude": list(exclude), "recovery": dataclasses.asdict(settings)}


def pruning_settings_from_json(
    document: Mapping[str, Any],
) -> tuple[RecoverySettings, tuple[str, ...]]:
    """Read back :func:`pruning_settings_json`; :class:`PruningError` when malformed."""
    try:
        recovery = dict(document["recovery"])
        exclude = tuple(str(name) for name in document["exclude"])
        return RecoverySettings(**recovery), exclude
    except (KeyError, TypeError, ValueError) as exc:
        raise PruningError(
            f"the recorded pruning settings are malformed ({exc}); re-materialise pruned_model"
        ) from exc
