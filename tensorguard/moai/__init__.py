"""MOAI export: checkpoint weights laid out for encrypted (CKKS) inference.

- :mod:`~tensorguard.moai.checkpoint`: load safetensors / ``torch.load(weights_only)``
  checkpoints and hash them per file, per tensor and as a whole.
- :mod:`~tensorguard.moai.architecture`: the linear modules the configuration expects.
- :mod:`~tensorguard.moai.block_layout`: CKKS parameters and the row-block weight layout.
- :mod:`~tensorguard.moai.export`: validate, merge the adapter, export with a manifest.
- :mod:`~tensorguard.moai.verify`: recompute every digest and block from the source.
- :mod:`~tensorguard.moai.self_check`: evaluate one module under TenSEAL CKKS.

See ``docs/MOAI.md`` for the layout and the parameters.
"""

from typing import TYPE_CHECKING

from tensorguard.lazy_exports import lazy_exports
from tensorguard.moai.errors import MoaiExportError

if TYPE_CHECKING:
    from tensorguard.moai.block_layout import CkksParameters
    from tensorguard.moai.checkpoint import Checkpoint, load_checkpoint, tensor_sha256
    from tensorguard.moai.export import MoaiExportResult, export_moai
    from tensorguard.moai.self_check import (
        DEFAULT_SELF_CHECK_TOLERANCE,
        CkksSelfCheckResult,
        run_ckks_self_check,
    )
    from tensorguard.moai.verify import MoaiVerification, verify_moai_export

__all__ = [
    "DEFAULT_SELF_CHECK_TOLERANCE",
    "Checkpoint",
    "CkksParameters",
    "CkksSelfCheckResult",
    "MoaiExportError",
    "MoaiExportResult",
    "MoaiVerification",
    "export_moai",
    "load_checkpoint",
    "run_ckks_self_check",
    "tensor_sha256",
    "verify_moai_export",
]

# Each module needs torch or TenSEAL: imported on first use, so that importing the
# errors (or one light module) loads none of them.
_LAZY = {
    "CkksParameters": "tensorguard.moai.block_layout",
    "Checkpoint": "tensorguard.moai.checkpoint",
    "load_checkpoint": "tensorguard.moai.checkpoint",
    "tensor_sha256": "tensorguard.moai.checkpoint",
    "MoaiExportResult": "tensorguard.moai.export",
    "export_moai": "tensorguard.moai.export",
    "DEFAULT_SELF_CHECK_TOLERANCE": "tensorguard.moai.self_check",
    "CkksSelfCheckResult": "tensorguard.moai.self_check",
    "run_ckks_self_check": "tensorguard.moai.self_check",
    "MoaiVerification": "tensorguard.moai.verify",
    "verify_moai_export": "tensorguard.moai.verify",
}


__getattr__ = lazy_exports(__name__, _LAZY, globals())
