"""TensorGuard's asset graph, pinned: every asset, its group and its upstream assets.

Tests compare the definitions (and what a round materialises, and what the UI draws)
with this explicit list, never the definitions with themselves, so an asset or an edge
that disappears, appears or moves is noticed. Change it only with the graph, on purpose.
"""

from __future__ import annotations

# asset name -> (group, upstream asset names)
ASSET_GRAPH: dict[str, tuple[str, frozenset[str]]] = {
    "base_model": ("setup", frozenset()),
    "site_dataset": ("train", frozenset()),
    "federation_keys": ("setup", frozenset()),
    "round_spec": ("setup", frozenset({"base_model", "federation_keys"})),
    "site_adapter": ("train", frozenset({"base_model", "round_spec", "site_dataset"})),
    "site_update": ("encrypt", frozenset({"federation_keys", "round_spec", "site_adapter"})),
    "aggregated_update": (
        "aggregate",
        frozenset({"federation_keys", "round_spec", "site_update"}),
    ),
    "seed_reveals": ("aggregate", frozenset({"aggregated_update", "round_spec"})),
    "global_adapter": (
        "aggregate",
        frozenset({"aggregated_update", "federation_keys", "round_spec", "seed_reveals"}),
    ),
    "pruned_model": ("optimize", frozenset({"base_model", "global_adapter"})),
    "onnx_model": ("optimize", frozenset({"base_model", "global_adapter"})),
    "tensorrt_engine": ("optimize", frozenset({"onnx_model"})),
    "moai_export": ("optimize", frozenset({"base_model", "global_adapter"})),
    "evaluation_report": ("gate", frozenset({"base_model", "global_adapter", "pruned_model"})),
    "gate_decision": (
        "gate",
        frozenset(
            {
                "aggregated_update",
                "evaluation_report",
                "global_adapter",
                "moai_export",
                "onnx_model",
                "pruned_model",
            }
        ),
    ),
    "tgsp_package": (
        "package",
        frozenset(
            {
                "aggregated_update",
                "base_model",
                "evaluation_report",
                "gate_decision",
                "global_adapter",
                "moai_export",
                "onnx_model",
                "pruned_model",
                "round_spec",
            }
        ),
    ),
    "release": (
        "publish",
        frozenset({"evaluation_report", "gate_decision", "global_adapter", "tgsp_package"}),
    ),
    # Canary rollout (#16): promoted or rolled back by canary_rollout_sensor, after a round.
    "canary_rollout": ("publish", frozenset({"release"})),
    # Fleet identity (#12): scheduled renewal, then the inventory and its expiry check.
    "certificate_renewals": ("identity", frozenset()),
    "certificate_inventory": ("identity", frozenset({"certificate_renewals"})),
}

# The round's groups left to right (the lineage graph draws one box per group): every
# edge goes from a group to the same group or a later one.
PIPELINE_GROUP_ORDER = (
    "setup",
    "train",
    "encrypt",
    "aggregate",
    "optimize",
    "gate",
    "package",
    "publish",
)

# tensorrt_engine is built by its own job on a GPU machine, never as part of a round.
GPU_ONLY_ASSETS = frozenset({"tensorrt_engine"})
# A canary release is decided from fleet telemetry by its own sensor, never in a round.
CANARY_ASSETS = frozenset({"canary_rollout"})
# Certificates are renewed and inventoried by their own scheduled job, never in a round.
IDENTITY_ASSETS = frozenset({"certificate_renewals", "certificate_inventory"})


def asset_names() -> frozenset[str]:
    """Every pinned asset name."""
    return frozenset(ASSET_GRAPH)


def round_asset_names() -> set[str]:
    """Every asset a full round must materialise: all pinned assets but the GPU-only, the
    fleet identity and the canary rollout ones."""
    return set(ASSET_GRAPH) - GPU_ONLY_ASSETS - IDENTITY_ASSETS - CANARY_ASSETS


def asset_groups() -> set[str]:
    """The pinned asset groups."""
    return {group for group, _ in ASSET_GRAPH.values()}
