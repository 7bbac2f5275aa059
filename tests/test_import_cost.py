"""Loading the Dagster definitions imports no ML or HE library (#19 item 3).

Every Dagster process — each run, each multiprocess step, the daemon, the webserver's
code servers — imports the definitions before it does anything. With torch,
transformers, peft and TenSEAL imported at module level that took 11-30 s of CPU per
process on the 2-core CI machine; the assets and the core packages they use now import
them where they are used. This test loads the three code locations in a fresh
interpreter and fails, naming the import chain, as soon as one of them comes back.
"""

from __future__ import annotations

import importlib
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DEFINITIONS = (
    "tensorguard_assets.definitions",
    "tensorguard_assets.aggregator_definitions",
    "tensorguard_assets.custodian_definitions",
)
HEAVY = (
    "accelerate",
    "matplotlib",
    "numpy",
    "onnx",
    "onnxruntime",
    "pandas",
    "peft",
    "safetensors",
    "scipy",
    "sklearn",
    "sympy",
    "tenseal",
    "tokenizers",
    "torch",
    "transformers",
)
LAZY_PACKAGES = (
    "tensorguard.federation",
    "tensorguard.hf",
    "tensorguard.moai",
    "tensorguard.optimize",
)

# Run in the child: record, for the first import of each heavy top-level package, which
# project files were importing it (innermost last), then import the modules given.
_PROBE = """
import importlib, importlib.abc, json, sys, traceback
heavy, modules, root = set(sys.argv[1].split(",")), sys.argv[2].split(","), sys.argv[3]
chains = {}
class Recorder(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        top = name.partition(".")[0]
        if top in heavy and top not in chains:
            chains[top] = [f"{f.filename[len(root) + 1:]}:{f.lineno}"
                           for f in traceback.extract_stack()
                           if f.filename.startswith(root) and "site-packages" not in f.filename]
        return None
sys.meta_path.insert(0, Recorder())
for module in modules:
    importlib.import_module(module)
print(json.dumps({top: chains.get(top, ["?"]) for top in sorted(heavy & set(sys.modules))}))
"""


def heavy_imports(modules: tuple[str, ...], heavy: tuple[str, ...]) -> dict[str, list[str]]:
    """The heavy packages that importing ``modules`` in a fresh interpreter loads, each
    with the project frames that imported it first."""
    completed = subprocess.run(
        [sys.executable, "-c", _PROBE, ",".join(heavy), ",".join(modules), str(ROOT)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr[-4000:]
    loaded: dict[str, list[str]] = json.loads(completed.stdout.strip().splitlines()[-1])
    return loaded


def test_definitions_load_without_ml_or_he_libraries() -> None:
    loaded = heavy_imports(DEFINITIONS, HEAVY)
    assert loaded == {}, (
        "loading the Dagster definitions imported "
        + "; ".join(f"{top} via {' <- '.join(reversed(chain))}" for top, chain in loaded.items())
        + ": import it inside the function that uses it (annotations: `if TYPE_CHECKING:`)"
    )


def test_probe_reports_an_eager_import_and_its_chain() -> None:
    """The probe sees an eager import (``rfc8785``, imported at the top of the codec,
    stands in for a heavy one) and the project file that made it."""
    loaded = heavy_imports(("tensorguard.codec",), ("rfc8785", "torch"))
    assert set(loaded) == {"rfc8785"}
    assert loaded["rfc8785"][-1].startswith("tensorguard/codec.py:")


@pytest.mark.parametrize("package", LAZY_PACKAGES)
def test_lazy_packages_export_every_public_name(package: str) -> None:
    """Each name in a lazy package's ``__all__`` resolves, and only listed names are lazy:
    a name left out of ``_LAZY`` would pass mypy and fail at run time."""
    module = importlib.import_module(package)
    lazy: dict[str, str] = module._LAZY
    assert set(lazy) <= set(module.__all__)
    for name in module.__all__:
        assert getattr(module, name) is not None, name
    with pytest.raises(AttributeError, match="no attribute 'not_exported'"):
        _ = module.not_exported
