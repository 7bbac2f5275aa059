"""Production gates: every missing requirement is named with its remedy."""

from __future__ import annotations

from pathlib import Path

import pytest

from tensorguard.errors import ProductionGateError
from tensorguard.production import (
    Environment,
    current_environment,
    enforce_production_gates,
    production_problems,
    service_requirements,
)

GOOD = {
    "TG_ENVIRONMENT": "production",
    "TG_KEY_MASTER_SITES": "s" * 40,
    "TG_KEY_MASTER_CUSTODIAN": "c" * 40,
    "TG_KEY_MASTER_RELEASE": "r" * 40,
    "DATABASE_URL": "postgresql://tg@127.0.0.1:5432/tg",
}


def no_pqc_problem() -> None:
    return None


def test_all_requirements_met_passes() -> None:
    assert enforce_production_gates(GOOD, no_pqc_problem) is Environment.PRODUCTION


def test_real_pqc_backend_is_available_here() -> None:
    assert production_problems(GOOD) == []


@pytest.mark.parametrize(
    "missing",
    [
        "TG_KEY_MASTER_SITES",
        "TG_KEY_MASTER_CUSTODIAN",
        "TG_KEY_MASTER_RELEASE",
        "DATABASE_URL",
    ],
)
def test_each_missing_secret_is_named(missing: str) -> None:
    environ = {k: v for k, v in GOOD.items() if k != missing}
    with pytest.raises(ProductionGateError) as excinfo:
        enforce_production_gates(environ, no_pqc_problem)
    message = str(excinfo.value)
    assert f"{missing} is not set" in message
    assert "set it" in message


def test_the_pipeline_does_not_demand_the_fleet_services_token_key() -> None:
    """TG_SECRET_KEY signs `tensorguard serve` tokens only; the service demands it."""
    assert "TG_SECRET_KEY" not in GOOD
    assert production_problems(GOOD, no_pqc_problem) == []
    assert [r.name for r in service_requirements()] == ["TG_SECRET_KEY", "DATABASE_URL"]


def test_pkcs11_production_demands_tokens_not_masters() -> None:
    environ = {k: v for k, v in GOOD.items() if not k.startswith("TG_KEY_MASTER")}
    environ["TG_KEY_PROVIDER"] = "pkcs11"
    problems = production_problems(environ, no_pqc_problem)
    assert not any("TG_KEY_MASTER" in problem for problem in problems)
    assert len(problems) == 3  # one token label per party
    environ.update({f"TG_PKCS11_TOKEN_LABEL_{p}": p for p in ("SITES", "CUSTODIAN", "RELEASE")})
    assert production_problems(environ, no_pqc_problem) == []


def test_short_secret_is_refused_without_echoing_it() -> None:
    environ = {**GOOD, "TG_KEY_MASTER_CUSTODIAN": "tooshort-secret"}
    with pytest.raises(ProductionGateError) as excinfo:
        enforce_production_gates(environ, no_pqc_problem)
    assert "TG_KEY_MASTER_CUSTODIAN is shorter than 32" in str(excinfo.value)
    assert "tooshort-secret" not in str(excinfo.value)


def test_demo_mode_refused_in_production() -> None:
    with pytest.raises(ProductionGateError, match="TG_DEMO_MODE"):
        enforce_production_gates({**GOOD, "TG_DEMO_MODE": "true"}, no_pqc_problem)


def test_missing_pqc_backend_refused() -> None:
    with pytest.raises(ProductionGateError, match="post-quantum backend"):
        enforce_production_gates(GOOD, lambda: "ML-DSA self-test failed")


def test_all_problems_reported_at_once() -> None:
    problems = production_problems({"TG_ENVIRONMENT": "production"}, no_pqc_problem)
    assert len(problems) == 4  # database, three party masters


def test_a_shared_single_master_does_not_satisfy_production() -> None:
    environ = {k: v for k, v in GOOD.items() if not k.startswith("TG_KEY_MASTER_")}
    problems = production_problems({**environ, "TG_KEY_MASTER": "m" * 40}, no_pqc_problem)
    assert sorted(p.split(" ")[0] for p in problems) == [
        "TG_KEY_MASTER_CUSTODIAN",
        "TG_KEY_MASTER_RELEASE",
        "TG_KEY_MASTER_SITES",
    ]


def test_two_parties_sharing_a_master_is_refused_without_echoing_it() -> None:
    shared = "x" * 40
    environ = {**GOOD, "TG_KEY_MASTER_SITES": shared, "TG_KEY_MASTER_CUSTODIAN": shared}
    with pytest.raises(ProductionGateError) as excinfo:
        enforce_production_gates(environ, no_pqc_problem)
    message = str(excinfo.value)
    assert "TG_KEY_MASTER_SITES and TG_KEY_MASTER_CUSTODIAN are the same master" in message
    assert shared not in message


def test_two_parties_sharing_a_key_directory_is_refused(tmp_path: Path) -> None:
    environ = {
        **GOOD,
        "TG_KEY_DIR_CUSTODIAN": str(tmp_path / "keys"),
        "TG_KEY_DIR_RELEASE": str(tmp_path / "keys") + "/",
    }
    with pytest.raises(ProductionGateError, match="TG_KEY_DIR_CUSTODIAN and TG_KEY_DIR_RELEASE"):
        enforce_production_gates(environ, no_pqc_problem)
    distinct = {**environ, "TG_KEY_DIR_RELEASE": str(tmp_path / "release")}
    assert enforce_production_gates(distinct, no_pqc_problem) is Environment.PRODUCTION


def test_pkcs11_production_needs_one_token_per_party() -> None:
    environ = {k: v for k, v in GOOD.items() if not k.startswith("TG_KEY_MASTER_")}
    environ |= {
        "TG_KEY_PROVIDER": "pkcs11",
        "TG_PKCS11_TOKEN_LABEL_SITES": "sites-token",
        "TG_PKCS11_TOKEN_LABEL_CUSTODIAN": "shared-token",
        "TG_PKCS11_TOKEN_LABEL_RELEASE": "shared-token",
    }
    problems = production_problems(environ, no_pqc_problem)
    assert len(problems) == 1
    assert "TG_PKCS11_TOKEN_LABEL_CUSTODIAN and TG_PKCS11_TOKEN_LABEL_RELEASE" in problems[0]
    environ["TG_PKCS11_TOKEN_LABEL_RELEASE"] = "release-token"
    assert production_problems(environ, no_pqc_problem) == []
    del environ["TG_PKCS11_TOKEN_LABEL_SITES"]
    [problem] = production_problems(environ, no_pqc_problem)
    assert problem.startswith("TG_PKCS11_TOKEN_LABEL_SITES is not set")


def test_development_needs_nothing() -> None:
    assert enforce_production_gates({}, lambda: "unused") is Environment.DEVELOPMENT


def test_unknown_environment_is_an_error() -> None:
    with pytest.raises(ProductionGateError, match="staging"):
        current_environment({"TG_ENVIRONMENT": "staging"})
