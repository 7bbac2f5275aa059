"""The model card every release package carries (``MODEL_CARD.md``).

The card is rendered from facts the release already holds: the signed release info
(round, channel, version, length of the validity window, model and base model digests),
the gate decision it was built from (every criterion with its measured value or bound,
threshold and status, the policy version and digest) and, when the caller knows them,
the round's facts (:class:`RoundFacts`: contributing sites, the training settings the
signed round spec fixed, the differential-privacy ε spent). It is staged into the
package like any other file, so the signed manifest lists its SHA-256 and the payload
digest covers its bytes.

The card holds no build time: two builds of the same release write the same bytes
(docs/REPRODUCIBILITY.md §4). The package's created/expires instants are in its signed
header (``tensorguard tgsp inspect``); the card states only how long the window is.

Site identities are shown only when the decision's gate policy allows it
(``disclose_site_ids: true``); the card otherwise states how many sites contributed and
nothing more about them.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Final

from tensorguard.gate import BOUND_CRITERIA, GateDecision
from tensorguard.gate.decision import CriterionResult
from tensorguard.tgsp import ReleaseInfo

if TYPE_CHECKING:  # the round spec module imports torch; the card needs only its fields
    from tensorguard.federation import RoundSpec

MODEL_CARD_FILE: Final = "MODEL_CARD.md"
SECONDS_PER_DAY: Final = 86_400
LORA_B_MARKER: Final = ".lora_B."
"""peft names a LoRA B factor ``<module>.lora_B.<adapter>.weight`` (shape ``out × r``)."""

KNOWN_LIMITS: Final = (
    "Measured only on the federation's held-out texts (the evaluation report in this "
    "package); quality on other data, languages or tasks is unknown.",
    "The adapter inherits the base model's limits, biases and licence.",
    "Gate thresholds bound the loss, not the content of generated text; no safety "
    "evaluation is implied by this card.",
)


@dataclass(frozen=True)
class TrainingSettings:
    """How the round trained, as its signed round spec fixes it; ``local_steps`` is each
    site's own setting (the distinct step counts the sites ran, empty when unknown)."""

    lora_ranks: tuple[int, ...]
    lora_targets: tuple[str, ...]
    trained_parameters: int
    lora_aggregation: str
    server_optimizer: str
    server_learning_rate: float
    min_sites: int
    clip_norm: float | None
    secure_aggregation: bool
    dp_noise_multiplier: float | None
    dp_delta: float | None
    local_steps: tuple[int, ...] = ()

    @classmethod
    def from_round_spec(cls, spec: RoundSpec, local_steps: Iterable[int] = ()) -> TrainingSettings:
        """Read the settings from a (verified) round spec; LoRA ranks and target modules
        come from the B factors in its tensor layout."""
        ranks: set[int] = set()
        targets: set[str] = set()
        for name, shape in spec.layout:
            if LORA_B_MARKER in name and shape:
                ranks.add(shape[-1])
                targets.add(name.split(LORA_B_MARKER)[0].rsplit(".", 1)[-1])
        return cls(
            lora_ranks=tuple(sorted(ranks)),
            lora_targets=tuple(sorted(targets)),
            trained_parameters=spec.tensor_layout.numel,
            lora_aggregation="frozen_a" if spec.frozen_lora_a else "factors",
            server_optimizer=spec.server_optimizer.name,
            server_learning_rate=spec.server_optimizer.learning_rate,
            min_sites=spec.min_sites,
            clip_norm=spec.clip_norm,
            secure_aggregation=spec.mask_epoch is not None,
            dp_noise_multiplier=spec.dp.noise_multiplier if spec.dp else None,
            dp_delta=spec.dp.delta if spec.dp else None,
            local_steps=tuple(sorted(set(local_steps))),
        )


@dataclass(frozen=True)
class RoundFacts:
    """What the round contributes to the card beyond the release info and the decision.

    ``site_ids``: the sites whose updates were aggregated (only their number is shown
    unless the gate policy has ``disclose_site_ids: true``); ``dp_epsilon``: (ε spent
    this round, ε spent in total) when the round was differentially private.
    """

    site_ids: tuple[str, ...]
    training: TrainingSettings | None = None
    dp_epsilon: tuple[float, float] | None = None


def render_model_card(
    release: ReleaseInfo,
    decision: GateDecision,
    facts: RoundFacts | None = None,
    known_limits: Iterable[str] = KNOWN_LIMITS,
) -> str:
    """The markdown model card of the package described by ``release``, built from the
    gate ``decision`` and, when given, the round's ``facts``."""
    lines = [
        f"# Model card: {release.model.name}",
        "",
        "| field | value |",
        "|---|---|",
        f"| round | {release.round_id or 'not recorded'} |",
        f"| channel, version | {release.channel} v{release.version} |",
        f"| validity | {_validity(release)} from the package's creation (signed header: "
        "`tensorguard tgsp inspect`) |",
        f"| adapter SHA-256 | `{release.model.digest}` |",
    ]
    if release.base_model is not None:
        lines.append(
            f"| base model | {release.base_model.name}, SHA-256 `{release.base_model.digest}` |"
        )
    lines += ["", "## Federation", ""]
    lines += _federation_lines(facts, disclose_site_ids=decision.policy.disclose_site_ids is True)
    lines += ["", "## Release gate", ""]
    lines += [
        f"Verdict: **{'passed' if decision.passed else 'failed'}** under policy "
        f"v{decision.policy_version} (SHA-256 `{decision.policy_digest}`); decision "
        f"SHA-256 `{decision.digest()}`.",
        f"Excluded from this package: {', '.join(decision.excluded) or 'nothing'}.",
        "",
        "| criterion | measured | threshold | status | blocking |",
        "|---|---|---|---|---|",
    ]
    lines += [_criterion_row(criterion) for criterion in decision.criteria]
    lines += ["", "## Known limits", ""]
    limits = list(known_limits)
    limits += [c.reason for c in decision.criteria if c.status == "excluded"]
    if facts is not None and facts.dp_epsilon is None:
        limits.append(
            "No differential privacy: updates were protected in transit and aggregated "
            "without noise, so the model may memorise rare training texts."
        )
    lines += [f"- {limit}" for limit in limits]
    return "\n".join(lines) + "\n"


def iso_utc(timestamp: int) -> str:
    """Unix seconds as ISO-8601 UTC (``2026-12-01T02:00:00Z``)."""
    return datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def format_value(value: float | bool | None) -> str:
    """A measured value or threshold as the card writes it (6 significant digits)."""
    if value is None:
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    return f"{value:.6g}"


def _validity(release: ReleaseInfo) -> str:
    """The length of the package's validity window, in days when it is whole days."""
    seconds = release.expires_at - release.created_at
    days, rest = divmod(seconds, SECONDS_PER_DAY)
    if rest:
        return f"{seconds} seconds"
    return f"{days} day" if days == 1 else f"{days} days"


def _criterion_row(criterion: CriterionResult) -> str:
    measured = format_value(criterion.observed)
    if criterion.name in BOUND_CRITERIA and criterion.observed is not None:
        measured = f"≤ {measured}"
    return (
        f"| {criterion.name} | {measured} | "
        f"{format_value(criterion.threshold)} | {criterion.status} | "
        f"{'yes' if criterion.blocking else 'no'} |"
    )


def _steps(local_steps: tuple[int, ...]) -> str:
    if not local_steps:
        return "not recorded"
    steps = ", ".join(str(step) for step in local_steps)
    return steps if len(local_steps) == 1 else f"{steps} (differs between sites)"


def _federation_lines(facts: RoundFacts | None, *, disclose_site_ids: bool) -> list[str]:
    if facts is None:
        return ["Not recorded for this package."]
    sites = f"{len(facts.site_ids)}"
    if disclose_site_ids:
        sites += f" ({', '.join(sorted(facts.site_ids))})"
    lines = ["| setting | value |", "|---|---|", f"| contributing sites | {sites} |"]
    training = facts.training
    if training is not None:
        ranks = ", ".join(str(r) for r in training.lora_ranks) or "–"
        lines += [
            f"| LoRA rank | {ranks} |",
            f"| LoRA target modules | {', '.join(training.lora_targets) or '–'} |",
            f"| parameters sent per site | {training.trained_parameters} |",
            f"| LoRA aggregation | {training.lora_aggregation} |",
            f"| server optimiser | {training.server_optimizer} "
            f"(learning rate {format_value(training.server_learning_rate)}) |",
            f"| local steps per site | {_steps(training.local_steps)} |",
            f"| quorum (min sites) | {training.min_sites} |",
            f"| clip norm | {format_value(training.clip_norm)} |",
            f"| secure aggregation (pairwise masks) | "
            f"{'yes' if training.secure_aggregation else 'no'} |",
        ]
        if training.dp_noise_multiplier is not None:
            lines.append(
                f"| DP noise multiplier, δ | {format_value(training.dp_noise_multiplier)}, "
                f"{format_value(training.dp_delta)} |"
            )
    if facts.dp_epsilon is not None:
        spent_round, spent_total = facts.dp_epsilon
        lines.append(
            f"| DP ε (this round, total) | {format_value(spent_round)}, "
            f"{format_value(spent_total)} |"
        )
    else:
        lines.append("| DP ε | none (no differential privacy) |")
    return lines
