"""YAML loading for configuration files: safe constructors only, duplicate keys refused.

PyYAML's ``safe_load`` silently keeps the last of two equal keys, which lets a
second, forgotten ``max_eval_loss:`` line override the first. :func:`load_strict_yaml`
refuses such documents instead.
"""

from __future__ import annotations

from typing import Any

import yaml


class _UniqueKeySafeLoader(yaml.SafeLoader):
    """A safe YAML loader that refuses duplicate mapping keys instead of keeping the last."""


def _construct_unique_mapping(loader: yaml.SafeLoader, node: yaml.MappingNode) -> dict[Any, Any]:
    loader.flatten_mapping(node)
    mapping: dict[Any, Any] = {}
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=True)
        if key in mapping:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r}", key_node.start_mark
            )
        mapping[key] = loader.construct_object(value_node, deep=True)
    return mapping


_UniqueKeySafeLoader.add_constructor(
    yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_unique_mapping
)


def load_strict_yaml(text: str) -> object:
    """Parse YAML with safe constructors; raise ``yaml.YAMLError`` on duplicate keys."""
    return yaml.load(text, Loader=_UniqueKeySafeLoader)  # noqa: S506 - a SafeLoader subclass
