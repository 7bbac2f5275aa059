"""Package names imported on first use (PEP 562), declared as one table per package.

A package whose exports need a heavy dependency (torch, TenSEAL, FastAPI, python-pkcs11)
lists them in a table of ``name -> defining module`` and sets
``__getattr__ = lazy_exports(__name__, table, globals())``; importing the package then
costs nothing until one of those names is used. Type checkers see the real imports,
which each package keeps under ``if TYPE_CHECKING:``.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping, MutableMapping
from typing import Any

__all__ = ["lazy_exports"]


def lazy_exports(
    package: str, table: Mapping[str, str], namespace: MutableMapping[str, Any]
) -> Callable[[str], Any]:
    """A module ``__getattr__`` for ``package`` that imports ``table[name]`` on first use.

    A module name starting with ``.`` is relative to ``package``. The value is stored in
    ``namespace`` (the package's ``globals()``), so each name is imported once.
    """

    def __getattr__(name: str) -> Any:
        if name not in table:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(table[name], package), name)
        namespace[name] = value
        return value

    return __getattr__
