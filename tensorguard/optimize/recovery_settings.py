"""The sparse-recovery settings (:class:`RecoverySettings`), without torch.

Kept apart from :mod:`~tensorguard.optimize.sparse_recovery` so that code which only
needs the settings and their defaults (the Dagster ``pruned_model`` config) does not
import torch.
"""

from __future__ import annotations

from dataclasses import dataclass

from tensorguard.optimize.errors import PruningError


@dataclass(frozen=True)
class RecoverySettings:
    """How long and how hard the pruned model is trained; defaults fit the demo model.

    ``steps`` bounds the cost (each step is one teacher and one student forward pass and
    one backward pass over ``batch_size`` sequences of at most ``max_length`` tokens);
    ``steps=0`` disables recovery. ``temperature`` softens both distributions before
    the KL divergence (1.0: the models' own distributions). ``threads`` caps torch's
    intra-op threads while training (``None``: leave the process setting): a model this
    small trains as fast on one thread, and on a busy machine, beside the other
    deployment steps, extra threads only spin-wait for cores.
    """

    steps: int = 64
    learning_rate: float = 3e-3
    batch_size: int = 16
    max_length: int = 64
    temperature: float = 1.0
    seed: int = 0
    threads: int | None = 1

    def __post_init__(self) -> None:
        problems = [
            f"{name} must be {rule}, got {value}"
            for name, value, ok, rule in (
                ("steps", self.steps, self.steps >= 0, ">= 0"),
                ("learning_rate", self.learning_rate, self.learning_rate > 0, "> 0"),
                ("batch_size", self.batch_size, self.batch_size >= 1, ">= 1"),
                ("max_length", self.max_length, self.max_length >= 2, ">= 2"),
                ("temperature", self.temperature, self.temperature > 0, "> 0"),
                ("threads", self.threads, self.threads is None or self.threads >= 1, ">= 1"),
            )
            if not ok
        ]
        if problems:
            raise PruningError("invalid sparse-recovery settings: " + "; ".join(problems))
