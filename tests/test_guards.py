"""Repository guards: no placeholder markers in production code, one-way imports."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PRODUCTION_PACKAGES = ("tensorguard", "tensorguard_resources", "tensorguard_assets")
# Joined at run time (with "+": the formatter merges adjacent literals) so that this test
# file is not itself a match.
BANNED = [
    "DUMMY" + "_",
    "SIMUL" + "ATION",
    "mock_" + "ciphertext",
    "Simulated" + "Trainer",
    "MVP_" + "STUB",
]
TEXT_SUFFIXES = {".py", ".json", ".jsonl", ".yaml", ".yml", ".md", ".txt", ".toml", ".cfg"}


def _production_files() -> list[Path]:
    files = []
    for package in PRODUCTION_PACKAGES:
        files.extend(p for p in (ROOT / package).rglob("*") if p.suffix in TEXT_SUFFIXES)
    return files


def _imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    modules: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            modules.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            modules.add(node.module)
    return modules


def test_production_packages_are_scanned() -> None:
    files = _production_files()
    assert any(p.name == "production.py" for p in files)
    assert any(p.name == "definitions.py" for p in files)


@pytest.mark.parametrize("marker", BANNED)
def test_no_placeholder_markers_in_production_code(marker: str) -> None:
    offenders = [
        str(p.relative_to(ROOT))
        for p in _production_files()
        if marker in p.read_text(encoding="utf-8", errors="replace")
    ]
    assert offenders == [], f"{marker} found in {offenders}"


def test_core_library_never_imports_dagster() -> None:
    offenders = {
        str(path.relative_to(ROOT)): sorted(
            m for m in _imported_modules(path) if m.split(".")[0].startswith("dagster")
        )
        for path in (ROOT / "tensorguard").rglob("*.py")
    }
    assert {k: v for k, v in offenders.items() if v} == {}


def test_resources_do_not_import_assets() -> None:
    offenders = [
        str(path.relative_to(ROOT))
        for path in (ROOT / "tensorguard_resources").rglob("*.py")
        if any(m.startswith("tensorguard_assets") for m in _imported_modules(path))
    ]
    assert offenders == []


def _private_dagster_imports(path: Path) -> list[str]:
    """Imports of private Dagster modules (``dagster._…``, ``dagster_postgres._…``)."""
    return sorted(
        module
        for module in _imported_modules(path)
        if module.split(".")[0].startswith("dagster")
        and any(part.startswith("_") for part in module.split(".")[1:])
    )


def test_dagster_layer_imports_only_public_dagster_apis() -> None:
    offenders = {
        str(path.relative_to(ROOT)): _private_dagster_imports(path)
        for package in ("tensorguard_assets", "tensorguard_resources")
        for path in (ROOT / package).rglob("*.py")
    }
    assert {k: v for k, v in offenders.items() if v} == {}


def test_private_import_guard_detects_a_planted_import(tmp_path: Path) -> None:
    planted = tmp_path / "planted.py"
    planted.write_text(
        "from dagster import asset\nfrom dagster._core.errors import DagsterHomeNotSetError\n"
        "import dagster_postgres._private\n"
    )
    expected = ["dagster._core.errors", "dagster_postgres._private"]
    assert _private_dagster_imports(planted) == expected


def test_guard_detects_a_planted_import(tmp_path: Path) -> None:
    planted = tmp_path / "planted.py"
    planted.write_text("import dagster\nfrom dagster_postgres import x\n")
    assert {"dagster", "dagster_postgres"} <= _imported_modules(planted)


DURABLE_CALLS = frozenset({"replace", "rename", "fsync", "fdatasync"})


def _direct_durable_calls(path: Path) -> list[str]:
    """``os.replace``/``os.rename``/``os.fsync``/``os.fdatasync`` calls in ``path``, by line."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    return [
        f"{path.name}:{node.lineno} os.{node.func.attr}"
        for node in ast.walk(tree)
        if isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and isinstance(node.func.value, ast.Name)
        and node.func.value.id == "os"
        and node.func.attr in DURABLE_CALLS
    ]


def test_only_the_durable_module_renames_or_flushes_files() -> None:
    """Crash-safe writes live in one place, tensorguard/durable.py (#10)."""
    offenders = [
        call
        for package in PRODUCTION_PACKAGES
        for path in (ROOT / package).rglob("*.py")
        if path != ROOT / "tensorguard" / "durable.py"
        for call in _direct_durable_calls(path)
    ]
    assert offenders == []


def test_durable_call_guard_detects_a_planted_call(tmp_path: Path) -> None:
    planted = tmp_path / "planted.py"
    planted.write_text("import os\nos.replace('a', 'b')\nos.fsync(3)\nos.path.exists('a')\n")
    assert _direct_durable_calls(planted) == ["planted.py:2 os.replace", "planted.py:3 os.fsync"]


SURFACE_PACKAGES = ("tgsp", "crypto", "keys", "federation")
OUTSIDE_CODE = (*PRODUCTION_PACKAGES, "bench", "scripts")


def _internal_imports(path: Path) -> list[str]:
    """Imports of another package's ``_``-prefixed modules (``tensorguard.tgsp._format``).

    A module inside ``tensorguard/<package>/`` may import its own package's internals;
    everything else goes through the package's ``__init__`` (its public surface).
    """
    parts = path.relative_to(ROOT).parts if path.is_relative_to(ROOT) else path.parts
    own = parts[1] if len(parts) > 2 and parts[0] == "tensorguard" else None
    offenders = []
    for module in _imported_modules(path):
        names = module.split(".")
        if len(names) < 3 or names[0] != "tensorguard" or names[1] not in SURFACE_PACKAGES:
            continue
        if names[2].startswith("_") and names[1] != own:
            offenders.append(module)
    return sorted(offenders)


def test_internal_modules_are_imported_only_by_their_own_package() -> None:
    """#10: ``tgsp``, ``crypto``, ``keys`` and ``federation`` expose one public surface each."""
    offenders = {
        str(path.relative_to(ROOT)): _internal_imports(path)
        for top in OUTSIDE_CODE
        for path in (ROOT / top).rglob("*.py")
    }
    assert {k: v for k, v in offenders.items() if v} == {}


def test_internal_import_guard_detects_a_planted_import(tmp_path: Path) -> None:
    planted = tmp_path / "planted.py"
    planted.write_text(
        "from tensorguard.tgsp import verify_package\n"
        "from tensorguard.tgsp._format import Limits\n"
        "import tensorguard.keys._master\n"
    )
    assert _internal_imports(planted) == ["tensorguard.keys._master", "tensorguard.tgsp._format"]


def test_surface_packages_keep_every_submodule_internal() -> None:
    public = [
        str(path.relative_to(ROOT))
        for package in SURFACE_PACKAGES
        for path in (ROOT / "tensorguard" / package).iterdir()
        if not path.name.startswith(("_", "."))
    ]
    assert public == []
