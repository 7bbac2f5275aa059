"""``lazy_exports``: a package name is imported on first use, once, and an unknown name
is an ``AttributeError`` naming the package (what ``hasattr`` and ``from x import y``
rely on)."""

from __future__ import annotations

import sys
import types

import pytest

from tensorguard.lazy_exports import lazy_exports


def _package(table: dict[str, str]) -> types.ModuleType:
    package = types.ModuleType("tg_lazy_probe")
    package.__path__ = []  # a package, so relative names resolve against it
    package.__getattr__ = lazy_exports("tg_lazy_probe", table, vars(package))  # type: ignore[method-assign]
    return package


def test_a_name_is_imported_on_first_use_and_kept(monkeypatch: pytest.MonkeyPatch) -> None:
    defining = types.ModuleType("tg_lazy_probe.part")
    defining.VALUE = object()  # type: ignore[attr-defined]
    package = _package({"VALUE": ".part", "dumps": "json"})
    monkeypatch.setitem(sys.modules, "tg_lazy_probe", package)
    monkeypatch.setitem(sys.modules, "tg_lazy_probe.part", defining)
    assert "VALUE" not in vars(package)
    assert package.VALUE is defining.VALUE  # relative to the package
    assert vars(package)["VALUE"] is defining.VALUE  # kept: the next lookup is plain
    assert package.dumps is sys.modules["json"].dumps  # absolute module names work too


def test_an_unknown_name_is_an_attribute_error_naming_the_package() -> None:
    package = _package({})
    with pytest.raises(AttributeError, match="module 'tg_lazy_probe' has no attribute 'nope'"):
        _ = package.nope
    assert not hasattr(package, "nope")
