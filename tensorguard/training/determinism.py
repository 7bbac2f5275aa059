"""Opt-in bitwise reproducibility for training (``TG_DETERMINISTIC=true``).

:func:`enable_determinism` seeds Python's :mod:`random`, NumPy's legacy global
generator and torch (CPU and CUDA), switches torch to deterministic algorithms, sets
``CUBLAS_WORKSPACE_CONFIG`` as CUDA requires for deterministic cuBLAS, and pins torch
to one intra-op thread so floating-point reductions happen in the same order on every
machine. With the same library versions and inputs, training then writes
byte-identical adapter and base-model files.

Cryptographic randomness is deliberately NOT seeded and must never be: ``os.urandom``,
:mod:`secrets`, key generation, signature randomness and AEAD nonces keep drawing from
the operating system's CSPRNG whatever this module does. Determinism covers model
training only; a seeded key or nonce would be a vulnerability, not a feature.
"""

from __future__ import annotations

import os
import platform
import random
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib import metadata

from tensorguard.errors import ConfigurationError

DETERMINISM_ENV = "TG_DETERMINISTIC"
CUBLAS_WORKSPACE_CONFIG = ":4096:8"
_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"", "0", "false", "no", "off"})
_REPORTED_PACKAGES = ("torch", "transformers", "peft", "tokenizers", "safetensors", "numpy")


@dataclass(frozen=True)
class DeterminismReport:
    """What :func:`enable_determinism` set, and the library versions it applies to."""

    seed: int
    deterministic_algorithms: bool
    torch_threads: int
    cublas_workspace_config: str
    versions: Mapping[str, str] = field(default_factory=dict)

    def describe(self) -> str:
        """Return one human-readable line for a run log."""
        versions = ", ".join(f"{name} {version}" for name, version in self.versions.items())
        return (
            f"determinism on: seed {self.seed} for python random, numpy and torch; "
            f"torch deterministic algorithms {self.deterministic_algorithms}; "
            f"torch threads {self.torch_threads}; "
            f"CUBLAS_WORKSPACE_CONFIG={self.cublas_workspace_config}; {versions}; "
            "cryptographic randomness is not seeded"
        )


def determinism_requested(environ: Mapping[str, str] | None = None) -> bool:
    """Return whether ``TG_DETERMINISTIC`` asks for deterministic training.

    ``1``, ``true``, ``yes`` and ``on`` (any case) mean yes; unset, empty, ``0``,
    ``false``, ``no`` and ``off`` mean no. Anything else raises
    :class:`~tensorguard.errors.ConfigurationError` rather than guessing.
    """
    value = (os.environ if environ is None else environ).get(DETERMINISM_ENV, "")
    normalised = value.strip().lower()
    if normalised in _TRUE:
        return True
    if normalised in _FALSE:
        return False
    raise ConfigurationError(
        f"{DETERMINISM_ENV}={value!r} is not a boolean; set it to true/1/yes or false/0/no"
    )


def enable_determinism(seed: int) -> DeterminismReport:
    """Seed every non-cryptographic generator used by training and force determinism.

    Affects the whole process: Python ``random``, ``numpy.random`` (global), torch's
    CPU and CUDA generators, ``torch.use_deterministic_algorithms(True)``, cuDNN
    (deterministic, no benchmarking), ``CUBLAS_WORKSPACE_CONFIG`` and one torch
    intra-op thread. Cryptographic randomness is untouched (see the module docstring).
    """
    if seed < 0:
        raise ConfigurationError(f"seed must be a non-negative integer, got {seed}")
    # Imported here, not at module level: every Dagster process imports this module
    # through the runtime resource, and only a run that asks for determinism needs them.
    import numpy as np
    import torch

    os.environ["CUBLAS_WORKSPACE_CONFIG"] = CUBLAS_WORKSPACE_CONFIG
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True)
    torch.backends.cudnn.deterministic = True
    torch.backends.cudnn.benchmark = False
    torch.set_num_threads(1)
    return DeterminismReport(
        seed=seed,
        deterministic_algorithms=torch.are_deterministic_algorithms_enabled(),
        torch_threads=torch.get_num_threads(),
        cublas_workspace_config=os.environ["CUBLAS_WORKSPACE_CONFIG"],
        versions=library_versions(),
    )


def library_versions() -> dict[str, str]:
    """Return the versions of Python and the libraries that decide training results."""
    versions = {"python": platform.python_version()}
    for package in _REPORTED_PACKAGES:
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = "not installed"
    return versions
