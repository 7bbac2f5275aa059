"""The executor is chosen by TG_EXECUTOR; the definitions load under each choice."""

from __future__ import annotations

import importlib
import sys
from collections.abc import Mapping
from typing import Any

import pytest
from dagster import Definitions, ExecutorDefinition, instance_for_test
from dagster._config import process_config
from dagster._core.definitions.definition_config_schema import ConfiguredDefinitionConfigSchema

from tensorguard.errors import ConfigurationError
from tensorguard_assets import definitions as definitions_module
from tensorguard_assets.executors import select_executor
from tensorguard_assets.locations import COORDINATOR

BROKER = "redis://celery-broker.internal:6379/0"


def _definitions_under(environ: Mapping[str, str], monkeypatch: pytest.MonkeyPatch) -> Definitions:
    """``tensorguard_assets.definitions.defs`` as a code server would load it in ``environ``.

    The module is reloaded under the variables, then again once they are undone, so the
    rest of the suite keeps the definitions of its own environment.
    """
    try:
        with monkeypatch.context() as patch:
            for name, value in environ.items():
                patch.setenv(name, value)
            defs: Definitions = importlib.reload(definitions_module).defs
            return defs
    finally:
        importlib.reload(definitions_module)


def _resolved_config(executor: ExecutorDefinition) -> dict[str, Any]:
    """The executor's config as a run without executor run config would resolve it."""
    schema = executor.config_schema
    assert isinstance(schema, ConfiguredDefinitionConfigSchema)
    processed = process_config(schema.config_type, {})
    assert processed.success, processed.errors
    assert processed.value is not None
    resolved = schema.resolve_config(processed.value)
    assert resolved.success, resolved.errors
    assert resolved.value is not None
    config: dict[str, Any] = resolved.value["config"]
    return config


@pytest.mark.parametrize(
    ("environ", "expected"),
    [
        ({}, "multiprocess"),
        ({"TG_EXECUTOR": "multiprocess"}, "multiprocess"),
        ({"TG_EXECUTOR": "in_process"}, "in_process"),
        ({"TG_EXECUTOR": "k8s"}, "k8s"),
        ({"TG_EXECUTOR": "celery", "TG_CELERY_BROKER": BROKER}, "celery"),
    ],
)
def test_definitions_load_with_each_executor(
    environ: dict[str, str], expected: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    defs = _definitions_under(environ, monkeypatch)
    # Loading consults the current instance; give it a live one (earlier tests may have
    # left Dagster's process-wide instance reference pointing at a closed instance).
    with instance_for_test():
        Definitions.validate_loadable(defs)
    names = [job.name for job in COORDINATOR.jobs]
    executors = {name: defs.resolve_job_def(name).executor_def.name for name in names}
    assert executors == dict.fromkeys(names, expected)


def test_multiprocess_bounds_concurrent_steps() -> None:
    assert _resolved_config(select_executor({}))["max_concurrent"] == 2
    assert _resolved_config(select_executor({"TG_MAX_CONCURRENT": "3"}))["max_concurrent"] == 3


def test_celery_reads_its_broker_when_a_run_starts(monkeypatch: pytest.MonkeyPatch) -> None:
    executor = select_executor({"TG_EXECUTOR": "celery", "TG_CELERY_BROKER": BROKER})
    monkeypatch.setenv("TG_CELERY_BROKER", BROKER)
    monkeypatch.setenv("TG_CELERY_BACKEND", "redis://celery-broker.internal:6379/1")
    config = _resolved_config(executor)
    assert config["broker"] == BROKER
    assert config["backend"] == "rpc://"
    with_backend = select_executor(
        {
            "TG_EXECUTOR": "celery",
            "TG_CELERY_BROKER": BROKER,
            "TG_CELERY_BACKEND": "redis://celery-broker.internal:6379/1",
        }
    )
    assert _resolved_config(with_backend)["backend"] == "redis://celery-broker.internal:6379/1"


@pytest.mark.parametrize("value", ["spark", "dask", "multi-process"])
def test_unknown_executor_fails_closed(value: str, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ConfigurationError) as raised:
        select_executor({"TG_EXECUTOR": value})
    message = str(raised.value)
    assert f"TG_EXECUTOR={value!r} is not a known executor" in message
    assert "multiprocess, in_process, k8s, celery" in message
    with pytest.raises(ConfigurationError, match="is not a known executor"):
        _definitions_under({"TG_EXECUTOR": value}, monkeypatch)


@pytest.mark.parametrize(
    ("executor", "module", "distribution"),
    [("k8s", "dagster_k8s", "dagster-k8s"), ("celery", "dagster_celery", "dagster-celery")],
)
def test_missing_integration_package_names_the_install_command(
    executor: str, module: str, distribution: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, module, None)  # makes `import module` fail
    with pytest.raises(ConfigurationError) as raised:
        select_executor({"TG_EXECUTOR": executor, "TG_CELERY_BROKER": BROKER})
    message = str(raised.value)
    assert f"TG_EXECUTOR={executor} needs the {distribution} package" in message
    assert "pip install 'tensorguard[scale]'" in message


def test_celery_without_broker_names_the_variable() -> None:
    with pytest.raises(ConfigurationError, match="TG_EXECUTOR=celery needs TG_CELERY_BROKER"):
        select_executor({"TG_EXECUTOR": "celery"})


@pytest.mark.parametrize("value", ["0", "-1", "two", "1.5"])
def test_invalid_max_concurrent_is_refused(value: str) -> None:
    with pytest.raises(ConfigurationError, match=f"TG_MAX_CONCURRENT='{value}'"):
        select_executor({"TG_MAX_CONCURRENT": value})


@pytest.mark.parametrize("executor", ["in_process", "k8s", "celery"])
def test_max_concurrent_is_not_ignored_silently(executor: str) -> None:
    environ = {"TG_EXECUTOR": executor, "TG_MAX_CONCURRENT": "4", "TG_CELERY_BROKER": BROKER}
    with pytest.raises(ConfigurationError, match="applies to the multiprocess executor only"):
        select_executor(environ)
