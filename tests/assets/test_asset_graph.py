"""The definitions hold exactly the pinned asset graph (tests/asset_graph.py)."""

from __future__ import annotations

import pytest
from dagster import AssetKey

from tensorguard_assets import groups
from tensorguard_assets.locations import Federation, all_in_one_definitions
from tests.asset_graph import ASSET_GRAPH, PIPELINE_GROUP_ORDER


@pytest.fixture(scope="module")
def defined() -> dict[str, tuple[str, frozenset[str]]]:
    graph = all_in_one_definitions({}).resolve_asset_graph()
    found: dict[str, tuple[str, frozenset[str]]] = {}
    for key in graph.get_all_asset_keys():
        node = graph.get(key)
        assert node.group_name is not None, key
        found[key.to_user_string()] = (
            node.group_name,
            frozenset(parent.to_user_string() for parent in node.parent_keys),
        )
    return found


def test_every_pinned_asset_and_no_other_is_defined(
    defined: dict[str, tuple[str, frozenset[str]]],
) -> None:
    assert sorted(defined) == sorted(ASSET_GRAPH)


@pytest.mark.parametrize("name", sorted(ASSET_GRAPH))
def test_each_asset_has_its_pinned_group_and_upstream_edges(
    defined: dict[str, tuple[str, frozenset[str]]], name: str
) -> None:
    assert defined.get(name) == ASSET_GRAPH[name]


def test_the_code_locations_together_materialise_every_pinned_asset() -> None:
    keys = Federation({}).asset_keys()
    assert keys == {AssetKey(name) for name in ASSET_GRAPH}


def test_every_edge_goes_forward_in_the_pipeline_order() -> None:
    """The graph reads left to right: no asset depends on one of a later group."""
    rank = {group: index for index, group in enumerate(PIPELINE_GROUP_ORDER)}
    backward = [
        f"{parent} ({ASSET_GRAPH[parent][0]}) -> {name} ({group})"
        for name, (group, parents) in ASSET_GRAPH.items()
        if group in rank
        for parent in parents
        if rank[ASSET_GRAPH[parent][0]] > rank[group]
    ]
    assert not backward


def test_the_pipeline_order_is_the_definitions_order() -> None:
    assert groups.PIPELINE_ORDER == PIPELINE_GROUP_ORDER
    pipeline = {group for group, _ in ASSET_GRAPH.values()} - {groups.IDENTITY}
    assert pipeline == set(PIPELINE_GROUP_ORDER)
