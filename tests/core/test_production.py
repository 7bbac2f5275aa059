"""Production gates: every missing requirement is named with its remedy."""

from __future__ import annotations

import pytest

from tensorguard.errors import ProductionGateError
from tensorguard.production import (
    Environment,
    current_environment,
    enforce_production_gates,
    production_problems,
)

GOOD = {
    "TG_ENVIRONMENT": "production",
    "TG_SECRET_KEY": "s" * 40,
    "TG_KEY_MASTER": "m" * 40,
    "DATABASE_URL": "postgresql://tg@127.0.0.1:5432/tg",
}


def no_pqc_problem() -> None:
    return None


def test_all_requirements_met_passes() -> None:
    assert enforce_production_gates(GOOD, no_pqc_problem) is Environment.PRODUCTION


def test_real_pqc_backend_is_available_here() -> None:
    assert production_problems(GOOD) == []


@pytest.mark.parametrize("missing", ["TG_SECRET_KEY", "TG_KEY_MASTER", "DATABASE_URL"])
def test_each_missing_secret_is_named(missing: str) -> None:
    environ = {k: v for k, v in GOOD.items() if k != missing}
    with pytest.raises(ProductionGateError) as excinfo:
        enforce_production_gates(environ, no_pqc_problem)
    message = str(excinfo.value)
    assert f"{missing} is not set" in message
    assert "set it" in message


def test_short_secret_is_refused_without_echoing_it() -> None:
    environ = {**GOOD, "TG_KEY_MASTER": "tooshort-secret"}
    with pytest.raises(ProductionGateError) as excinfo:
        enforce_production_gates(environ, no_pqc_problem)
    assert "TG_KEY_MASTER is shorter than 32" in str(excinfo.value)
    assert "tooshort-secret" not in str(excinfo.value)


def test_demo_mode_refused_in_production() -> None:
    with pytest.raises(ProductionGateError, match="TG_DEMO_MODE"):
        enforce_production_gates({**GOOD, "TG_DEMO_MODE": "true"}, no_pqc_problem)


def test_missing_pqc_backend_refused() -> None:
    with pytest.raises(ProductionGateError, match="post-quantum backend"):
        enforce_production_gates(GOOD, lambda: "ML-DSA self-test failed")


def test_all_problems_reported_at_once() -> None:
    problems = production_problems({"TG_ENVIRONMENT": "production"}, no_pqc_problem)
    assert len(problems) == 3


def test_development_needs_nothing() -> None:
    assert enforce_production_gates({}, lambda: "unused") is Environment.DEVELOPMENT


def test_unknown_environment_is_an_error() -> None:
    with pytest.raises(ProductionGateError, match="staging"):
        current_environment({"TG_ENVIRONMENT": "staging"})
