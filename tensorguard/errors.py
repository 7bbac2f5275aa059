"""Base exception types shared by every area of the core library.

Each area (crypto, tgsp, keys, training, federation, optimize, moai, gate, fleet)
defines its own subclass of :class:`TensorGuardError` so callers can catch one area's
failures precisely. Messages say what failed, why, and how to fix it, and never
contain secret material.
"""

from __future__ import annotations


class TensorGuardError(Exception):
    """Root of every error raised deliberately by TensorGuard."""


class ConfigurationError(TensorGuardError):
    """A setting, environment variable or input path is missing or invalid."""


class ProductionGateError(ConfigurationError):
    """Production mode refused to start because a requirement is not met.

    This is a fail-closed error: retrying cannot help until an operator fixes the
    configuration named in the message.
    """
