"""Exception type for the MOAI export (CKKS-ready weights for encrypted inference)."""

from __future__ import annotations

from tensorguard.errors import TensorGuardError


class MoaiExportError(TensorGuardError):
    """A checkpoint could not be loaded, validated, exported or checked for MOAI.

    Messages name the file or module at fault and say how to fix it.
    """
