"""Dagster resources that wrap the TensorGuard core library and fail closed."""

from tensorguard_resources.artifacts import ArtifactStore
from tensorguard_resources.failures import fail_closed, fail_closed_on
from tensorguard_resources.runtime import TensorGuardRuntime
from tensorguard_resources.sites import SiteRegistry

__all__ = ["ArtifactStore", "SiteRegistry", "TensorGuardRuntime", "fail_closed", "fail_closed_on"]
