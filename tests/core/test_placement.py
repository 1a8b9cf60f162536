"""Placement (pure): matching, capacity and spreading by load."""

from __future__ import annotations

from typing import Any

import pytest

from genagent_thespian._core.placement import NoNodeWithRoom, choose_node

NODES: dict[str, dict[str, Any]] = {
    "leader:1": {"role": "leader"},
    "m1:2": {"claude": "yes", "capacity": 2},
    "m2:3": {"claude": "yes", "capacity": 3},
    "m3:4": {"codex": "yes"},
}


def test_the_matching_node_running_fewest_agents_wins() -> None:
    assert choose_node(NODES, {"claude": "yes"}, {}, "leader:1") == "m2:3"  # more room
    assert choose_node(NODES, {"claude": "yes"}, {"m2:3": 1}, "leader:1") == "m1:2"
    assert choose_node(NODES, {"claude": "yes"}, {"m1:2": 1, "m2:3": 1}, "leader:1") == "m2:3"


def test_a_full_node_is_skipped() -> None:
    assert choose_node(NODES, {"claude": "yes"}, {"m2:3": 3}, "leader:1") == "m1:2"


def test_every_matching_node_full_names_the_usage() -> None:
    with pytest.raises(NoNodeWithRoom, match=r"at its capacity \(m1:2 2/2, m2:3 3/3\)"):
        choose_node(NODES, {"claude": "yes"}, {"m1:2": 2, "m2:3": 3}, "leader:1")


def test_no_matching_node_names_the_placement() -> None:
    with pytest.raises(NoNodeWithRoom, match=r"matches placement \{'gpu': 'yes'\}"):
        choose_node(NODES, {"gpu": "yes"}, {}, "leader:1")


def test_no_placement_stays_home_within_its_capacity() -> None:
    assert choose_node(NODES, {}, {"leader:1": 50}, "leader:1") == "leader:1"  # no capacity
    nodes = {**NODES, "leader:1": {"capacity": 1}}
    with pytest.raises(NoNodeWithRoom, match="its own node 'leader:1'"):
        choose_node(nodes, {}, {"leader:1": 1}, "leader:1")
