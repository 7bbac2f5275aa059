"""Server optimisers: how the custodian turns a round's decrypted mean update into the
next global adapter (Reddi et al., "Adaptive Federated Optimization", ICLR 2021).

The mean site update ``Δ`` (``trained - reference``, averaged) is treated as a
pseudo-gradient step:

* ``fedavg``: ``x ← x + η·Δ`` (η = 1 is plain FedAvg; η > 1 extrapolates);
* ``fedavgm``: FedAvg with server momentum (Hsu et al. 2019), ``m ← β1·m + Δ``,
  ``x ← x + η·m``: directions the rounds agree on build up, round-to-round noise
  cancels;
* ``fedadam``: ``m ← β1·m + (1-β1)·Δ``, ``v ← β2·v + (1-β2)·Δ²``,
  ``x ← x + η·m / (√v + τ)``;
* ``fedyogi``: as FedAdam with ``v ← v - (1-β2)·Δ²·sign(v - Δ²)``.

The moment estimates are the optimiser's state; they are kept between rounds by the
custodian (sealed in its key provider, :class:`ServerOptimizerState`), because each is
a running average of decrypted aggregates. The rule itself is part of the signed round
spec, so every party knows how the global adapter is made.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Literal

from pydantic import BaseModel, ConfigDict, Field

from tensorguard.federation._errors import FederationError

if TYPE_CHECKING:  # torch is imported where it is used: the rule and name need none of it
    import torch

ServerOptimizerName = Literal["fedavg", "fedavgm", "fedadam", "fedyogi"]


class ServerOptimizerError(FederationError):
    """The server optimiser's rule or state does not fit the round."""


class ServerOptimizerRule(BaseModel):
    """A round's server optimiser (part of the signed round spec)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: ServerOptimizerName = Field(default="fedavg", description="The update rule.")
    learning_rate: float = Field(default=1.0, gt=0, le=100, description="Server step size η.")
    beta1: float = Field(
        default=0.9, ge=0, lt=1, description="First-moment decay (Adam/Yogi); momentum (FedAvgM)."
    )
    beta2: float = Field(default=0.99, ge=0, lt=1, description="Second-moment decay.")
    tau: float = Field(default=1e-3, gt=0, description="Adaptivity floor τ (Adam/Yogi).")

    @property
    def stateful(self) -> bool:
        """True when the rule keeps moment estimates (or momentum) between rounds."""
        return self.name != "fedavg"


class ServerOptimizerState:
    """First and second moments per tensor, serialised as safetensors."""

    def __init__(
        self, first: Mapping[str, torch.Tensor], second: Mapping[str, torch.Tensor]
    ) -> None:
        if set(first) != set(second):
            raise ServerOptimizerError("the optimiser's moments cover different tensors")
        self.first = dict(first)
        self.second = dict(second)

    @classmethod
    def zeros_like(cls, delta: Mapping[str, torch.Tensor]) -> ServerOptimizerState:
        """Fresh state for ``delta``'s tensors (float64 zeros)."""
        import torch

        zeros = {name: torch.zeros_like(t, dtype=torch.float64) for name, t in delta.items()}
        return cls(zeros, {name: t.clone() for name, t in zeros.items()})

    def to_bytes(self) -> bytes:
        """The moments as one safetensors blob (``m/<name>``, ``v/<name>``)."""
        from safetensors.torch import save

        tensors = {f"m/{n}": t.contiguous() for n, t in self.first.items()}
        tensors |= {f"v/{n}": t.contiguous() for n, t in self.second.items()}
        return save(tensors)

    @classmethod
    def from_bytes(cls, data: bytes) -> ServerOptimizerState:
        """Parse :meth:`to_bytes`'s output."""
        from safetensors.torch import load

        try:
            tensors = load(data)
        except Exception as exc:  # safetensors raises its own error types
            raise ServerOptimizerError(f"the optimiser state is not safetensors: {exc}") from exc
        first = {n[2:]: t for n, t in tensors.items() if n.startswith("m/")}
        second = {n[2:]: t for n, t in tensors.items() if n.startswith("v/")}
        if len(first) + len(second) != len(tensors):
            raise ServerOptimizerError("the optimiser state holds unknown tensors")
        return cls(first, second)

    def __repr__(self) -> str:
        return f"ServerOptimizerState({len(self.first)} tensors)"


def server_step(
    rule: ServerOptimizerRule,
    mean_delta: Mapping[str, torch.Tensor],
    state: ServerOptimizerState | None,
) -> tuple[dict[str, torch.Tensor], ServerOptimizerState | None]:
    """The step to add to the reference, and the new state (None for ``fedavg``).

    ``fedavgm`` keeps its momentum as the first moment and zeros as the second.
    A stateful rule with no ``state`` starts from zero moments; a state for other
    tensors than ``mean_delta`` is refused (the adapter's shape changed: start a new
    optimiser by clearing its state).
    """
    import torch

    if not rule.stateful:
        return {n: rule.learning_rate * d.to(torch.float64) for n, d in mean_delta.items()}, None
    current = state or ServerOptimizerState.zeros_like(mean_delta)
    if set(current.first) != set(mean_delta) or any(
        current.first[n].shape != d.shape for n, d in mean_delta.items()
    ):
        raise ServerOptimizerError(
            "the server optimiser's state was kept for other tensors than this round's "
            "update; clear the custodian's optimiser state to start a new one"
        )
    first: dict[str, torch.Tensor] = {}
    second: dict[str, torch.Tensor] = {}
    step: dict[str, torch.Tensor] = {}
    for name, raw in mean_delta.items():
        delta = raw.to(torch.float64)
        if rule.name == "fedavgm":
            first[name] = rule.beta1 * current.first[name] + delta
            second[name] = current.second[name]
            step[name] = rule.learning_rate * first[name]
            continue
        squared = delta * delta
        first[name] = rule.beta1 * current.first[name] + (1 - rule.beta1) * delta
        if rule.name == "fedadam":
            second[name] = rule.beta2 * current.second[name] + (1 - rule.beta2) * squared
        else:  # fedyogi
            previous = current.second[name]
            second[name] = previous - (1 - rule.beta2) * squared * torch.sign(previous - squared)
        step[name] = rule.learning_rate * first[name] / (second[name].sqrt() + rule.tau)
    return step, ServerOptimizerState(first, second)
