"""The ``canary`` section of the gate policy: how a release is tried on a few nodes first.

A release that passed the gate goes first to a canary cohort — ``fraction`` of the
enrolled nodes, chosen deterministically (:func:`tensorguard.fleet.canary.canary_cohort`)
— and is promoted to the rest only when their telemetry says so
(:func:`tensorguard.fleet.canary.canary_decision`):

* any breach — mean error rate above ``max_error_rate``, mean inference latency above
  ``max_mean_latency_ms``, more than ``max_safety_events`` safety events or more than
  ``max_install_failures`` failed installs — rolls back at once;
* otherwise the decision waits until at least ``min_nodes_reporting`` canary nodes sent
  ``min_samples`` samples in all and ``observation_window_s`` passed since the rollout
  began, then promotes;
* without enough telemetry after ``max_wait_s`` it rolls back: no telemetry is never
  read as good telemetry.

Every key is required; ``null`` disables the latency threshold only. Without a
``canary`` section a release goes to every node at once.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, model_validator

CanaryFraction = Annotated[float, Field(gt=0.0, le=1.0, allow_inf_nan=False)]


class CanaryPolicy(BaseModel):
    """Cohort size and the telemetry thresholds that promote or roll back a canary."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    fraction: CanaryFraction
    min_nodes_reporting: Annotated[int, Field(ge=1, strict=True)]
    min_samples: Annotated[int, Field(ge=1, strict=True)]
    observation_window_s: Annotated[int, Field(ge=0, strict=True)]
    max_wait_s: Annotated[int, Field(gt=0, strict=True)]
    max_error_rate: Annotated[float, Field(ge=0.0, le=1.0, allow_inf_nan=False)]
    max_mean_latency_ms: Annotated[float, Field(gt=0.0, allow_inf_nan=False)] | None
    max_safety_events: Annotated[int, Field(ge=0, strict=True)]
    max_install_failures: Annotated[int, Field(ge=0, strict=True)]

    @model_validator(mode="after")
    def _can_finish_waiting(self) -> CanaryPolicy:
        if self.max_wait_s < self.observation_window_s:
            raise ValueError(
                f"max_wait_s ({self.max_wait_s}) is shorter than observation_window_s "
                f"({self.observation_window_s}): every canary would be rolled back"
            )
        return self
