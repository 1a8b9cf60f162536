"""State of pattern agents, read by each pattern's client-side facade through the agent.

A pattern's result lives on its agents (the phase a Research agent reached, the drafts a
Checkpointer produced). Pattern agents show a JSON-compatible snapshot of their state as
their ``agent_state()``; the facade reads it with ``status(name).agent_state``, a message to
wherever the agent runs. So a pattern's agents may be spread over a convention's hosts:
nothing passes through the facade's file system (earlier releases wrote snapshot files to a
temporary directory, which tied every agent to the facade's host).

An agent answers ``status`` at once and in order with its other messages, so a caller that
got an answer from the agent then reads a snapshot at least that fresh.
"""

from __future__ import annotations

import json
from typing import Any

import genagent_thespian as g
from genagent_thespian import AgentSystem, GenAgent

__all__ = ["PatternStates", "SnapshotAgent"]


class SnapshotAgent(GenAgent):
    """A ``GenAgent`` whose ``agent_state()`` is its :meth:`snapshot` (see the module doc)."""

    def snapshot(self) -> dict[str, Any]:
        """Return the state to show (JSON-compatible). Override in subclasses."""
        return {}

    def agent_state(self) -> dict[str, Any]:
        """The snapshot as plain JSON data, so any client can read it."""
        data = json.loads(json.dumps(self.snapshot(), default=str))
        return data if isinstance(data, dict) else {}


class PatternStates:
    """Reads the snapshots of a facade's agents by name, wherever they run."""

    def __init__(self, system: AgentSystem | None = None) -> None:
        """Read published states through ``system`` (``None``: the current system)."""
        self._system = system
        self._closed = False

    def read(self, name: Any) -> dict[str, Any] | None:
        """Agent ``name``'s current snapshot; ``None`` if it is gone or the facade closed."""
        if self._closed:
            return None
        try:
            state = g.status(name, system=self._system).agent_state
        except (g.AgentNotFound, g.AgentStopped):
            return None
        return state if isinstance(state, dict) else None

    def close(self) -> None:
        """Stop reading: the facade stopped its agents (later reads give ``None``)."""
        self._closed = True
