"""Asset groups, in the order a round flows through them.

Every edge of the round's graph goes from a group to the same group or a later one, so
the lineage graph (one box per group) reads left to right as the round's story:
set-up, each site's training, its encrypted update, the aggregate, the derived
deployables, the release gate, the signed package, publication. Fleet identity is a
separate, scheduled graph.
"""

from __future__ import annotations

SETUP = "setup"
"""The base model, the custodian's key ceremony and the round's opening (round spec)."""
TRAIN = "train"
"""Each site's validated data and its LoRA adapter."""
ENCRYPT = "encrypt"
"""Each site's clipped, encrypted, masked and signed update."""
AGGREGATE = "aggregate"
"""The homomorphic sum, the seed reveals and the custodian's decryption."""
OPTIMIZE = "optimize"
"""Deployables derived from the global adapter: 2:4 pruning, ONNX, TensorRT, MOAI."""
GATE = "gate"
"""The evaluation report and the release policy's decision."""
PACKAGE = "package"
"""The signed, encrypted TGSP package with its model card."""
PUBLISH = "publish"
"""Registry publication, announcement and canary rollout."""
IDENTITY = "identity"
"""Fleet identity: certificate renewals and inventory (not part of a round)."""

PIPELINE_ORDER: tuple[str, ...] = (
    SETUP,
    TRAIN,
    ENCRYPT,
    AGGREGATE,
    OPTIMIZE,
    GATE,
    PACKAGE,
    PUBLISH,
)
"""The round's groups, left to right."""
