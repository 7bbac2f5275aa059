"""The executor of every job, chosen by configuration rather than code edits.

``TG_EXECUTOR`` picks how a run's steps execute:

- ``multiprocess`` (default): one process per step on the run worker's machine, at most
  ``TG_MAX_CONCURRENT`` (default 2) at a time, so a 2-core machine is not oversubscribed.
  Training steps also share the ``training`` pool (one at a time, see dagster.yaml).
- ``in_process``: every step in the run worker's own process, one after another.
- ``k8s``: one Kubernetes Job per step (dagster-k8s); image, namespace and resources
  come from the instance's ``K8sRunLauncher`` (deploy/dagster.k8s.yaml) or the run config.
- ``celery``: steps are queued to Celery workers (dagster-celery) through the broker named
  by ``TG_CELERY_BROKER``; results come back through ``TG_CELERY_BACKEND`` (default
  ``rpc://``). Both are read when a run starts, so no broker URL lands in a run's config.

An unknown value, a setting that does not apply to the chosen executor or a missing
integration package is a :class:`~tensorguard.errors.ConfigurationError`: the
definitions never fall back to another executor than the one asked for.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Mapping
from typing import Any

from dagster import ExecutorDefinition, in_process_executor, multiprocess_executor

from tensorguard.errors import ConfigurationError

EXECUTOR_ENV = "TG_EXECUTOR"
MAX_CONCURRENT_ENV = "TG_MAX_CONCURRENT"
CELERY_BROKER_ENV = "TG_CELERY_BROKER"
CELERY_BACKEND_ENV = "TG_CELERY_BACKEND"
DEFAULT_EXECUTOR = "multiprocess"
DEFAULT_MAX_CONCURRENT = 2
SCALE_EXTRA = "scale"
EXECUTOR_NAMES = ("multiprocess", "in_process", "k8s", "celery")

# Executors that live in an integration package: (module, attribute, pip distribution).
_INTEGRATION_EXECUTORS: dict[str, tuple[str, str, str]] = {
    "k8s": ("dagster_k8s", "k8s_job_executor", "dagster-k8s"),
    "celery": ("dagster_celery", "celery_executor", "dagster-celery"),
}


def select_executor(environ: Mapping[str, str] | None = None) -> ExecutorDefinition:
    """The executor named by ``TG_EXECUTOR`` in ``environ`` (default: ``os.environ``).

    Raises :class:`ConfigurationError` for an unknown executor, an invalid or
    inapplicable ``TG_MAX_CONCURRENT``, a missing ``TG_CELERY_BROKER`` or a missing
    integration package.
    """
    env = os.environ if environ is None else environ
    name = env.get(EXECUTOR_ENV, "").strip().lower() or DEFAULT_EXECUTOR
    if name not in EXECUTOR_NAMES:
        raise ConfigurationError(
            f"{EXECUTOR_ENV}={env.get(EXECUTOR_ENV)!r} is not a known executor; set it to one "
            f"of {', '.join(EXECUTOR_NAMES)} (unset means {DEFAULT_EXECUTOR})"
        )
    max_concurrent_set = bool(env.get(MAX_CONCURRENT_ENV, "").strip())
    if name == "multiprocess":
        return multiprocess_executor.configured(
            {"max_concurrent": _max_concurrent(env)}, name="multiprocess"
        )
    if max_concurrent_set:
        raise ConfigurationError(
            f"{MAX_CONCURRENT_ENV} applies to the multiprocess executor only, but "
            f"{EXECUTOR_ENV}={name}; unset {MAX_CONCURRENT_ENV} and bound concurrency where "
            f"this executor does (see docs/OPERATIONS.md, 'Scale-out')"
        )
    if name == "in_process":
        return in_process_executor
    executor = _integration_executor(name)
    if name == "celery":
        return executor.configured(_celery_config(env), name="celery")
    return executor


def _max_concurrent(env: Mapping[str, str]) -> int:
    """``TG_MAX_CONCURRENT`` as a positive integer (default 2)."""
    raw = env.get(MAX_CONCURRENT_ENV, "").strip()
    if not raw:
        return DEFAULT_MAX_CONCURRENT
    try:
        value = int(raw)
    except ValueError:
        value = 0
    if value < 1:
        raise ConfigurationError(
            f"{MAX_CONCURRENT_ENV}={raw!r} is not a positive integer; set it to the number "
            "of steps one run may execute at once (e.g. the machine's core count)"
        )
    return value


def _integration_executor(name: str) -> ExecutorDefinition:
    """The executor object of an integration package, or a ConfigurationError naming it."""
    module_name, attribute, distribution = _INTEGRATION_EXECUTORS[name]
    try:
        module = importlib.import_module(module_name)
    except ImportError:
        raise ConfigurationError(
            f"{EXECUTOR_ENV}={name} needs the {distribution} package, which is not "
            f"installed; install it with: pip install 'tensorguard[{SCALE_EXTRA}]'"
        ) from None
    executor = getattr(module, attribute)
    if not isinstance(executor, ExecutorDefinition):
        raise ConfigurationError(
            f"{distribution}'s {attribute} is not a Dagster executor; install the version "
            f"pinned by tensorguard: pip install 'tensorguard[{SCALE_EXTRA}]'"
        )
    return executor


def _celery_config(env: Mapping[str, str]) -> dict[str, Any]:
    """Broker and result backend of the celery executor, resolved when a run starts."""
    if not env.get(CELERY_BROKER_ENV, "").strip():
        raise ConfigurationError(
            f"{EXECUTOR_ENV}=celery needs {CELERY_BROKER_ENV}, the Celery broker URL the "
            "workers also use (e.g. redis://broker:6379/0); set it in the environment of "
            "the code location and of the workers"
        )
    config: dict[str, Any] = {"broker": {"env": CELERY_BROKER_ENV}}
    if env.get(CELERY_BACKEND_ENV, "").strip():
        config["backend"] = {"env": CELERY_BACKEND_ENV}
    return config
