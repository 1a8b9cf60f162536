"""Placement: which convention node runs an agent (pure; the supervisor asks it).

A node matches a placement when its capabilities equal every placement key; it has room
while it runs fewer agents than its advertised ``capacity`` (a node without one has room
without limit). Among the matching nodes with room, the one running the fewest agents wins
(ties: the most room left, then the name), so agents spread by load rather than piling onto
the first node Thespian would ask. An agent without placement runs on the supervisor's own
node, as it always has, within that node's capacity.
"""

from __future__ import annotations

from collections.abc import Mapping

from .types import Options

__all__ = ["CAPACITY_LABEL", "NoNodeWithRoom", "choose_node"]

#: The capability a node advertises its capacity (an int: how many agents it runs) under.
CAPACITY_LABEL = "capacity"


class NoNodeWithRoom(Exception):
    """No node can run the agent; the message says why (no match, or every match full)."""


def choose_node(
    nodes: Mapping[str, Options],
    placement: Options,
    load: Mapping[str, int],
    home: str,
) -> str:
    """Return the name of the node that should run an agent with ``placement``.

    Args:
        nodes: Node name -> its capabilities, for every live node of the convention.
        placement: The capabilities the node must have (empty: the ``home`` node).
        load: Node name -> agents it runs now (starting, running or stopping).
        home: The supervisor's own node.

    Raises:
        NoNodeWithRoom: No node matches, or every matching node is at its capacity.
    """
    if placement:
        matching = [
            name
            for name, caps in nodes.items()
            if all(caps.get(key) == value for key, value in placement.items())
        ]
        wanted = f"placement {dict(placement)!r}"
    else:
        matching = [home] if home in nodes else []
        wanted = f"its own node {home!r} (no placement)"
    if not matching:
        raise NoNodeWithRoom(f"no node of the convention matches {wanted}")

    def room(name: str) -> float:
        """Free slots on node ``name``; a node without a capacity label has unbounded room."""
        capacity = nodes[name].get(CAPACITY_LABEL)
        if capacity is None:
            return float("inf")
        return int(capacity) - load.get(name, 0)

    with_room = [name for name in matching if room(name) > 0]
    if not with_room:
        usage = ", ".join(
            f"{name} {load.get(name, 0)}/{nodes[name].get(CAPACITY_LABEL)}"
            for name in sorted(matching)
        )
        raise NoNodeWithRoom(f"every node matching {wanted} is at its capacity ({usage})")
    return min(with_room, key=lambda name: (load.get(name, 0), -room(name), name))
