"""``Registry``: the name -> address table of one actor system.

Callers hold names, never addresses, so an agent restarted at a new address keeps working
for them. The supervisor is the only writer (``_Register`` / ``_Unregister``); anyone may
read (``WhereIs``, ``ListAgents``). One registry per actor system, created with the
``globalName`` :data:`REGISTRY_NAME` at application boot.

It is also the system's dead-letter handler: a ``TurnEvent`` an agent could not deliver
means its ``Watch`` subscriber is gone (a killed client), and the registry, which knows
every agent's address, tells that agent to drop it (``_WatcherGone``). Without this a
killed subscriber would stay in the agent's set, and be sent every event, forever.
"""

from __future__ import annotations

from typing import Any

from thespian.actors import Actor, ActorExitRequest, DeadEnvelope

from .._core.log import get_logger
from .._core.protocol import _Register, _Restarting, _Unregister, _WatcherGone
from ..messages import AgentEntry, AgentList, ListAgents, Located, TurnEvent, WhereIs

__all__ = ["REGISTRY_NAME", "Registry"]

REGISTRY_NAME = "genagent_thespian.registry"

_log = get_logger("genagent_thespian.registry")


class Registry(Actor):
    """Maps agent names to addresses (see the module docstring)."""

    def __init__(self) -> None:
        super().__init__()
        self._entries: dict[Any, AgentEntry] = {}
        self._handling_dead_letters = False

    def receiveMessage(self, message: Any, sender: Any) -> None:
        """Serve lookups and apply the supervisor's updates. Never raises."""
        try:
            if not self._handling_dead_letters and not isinstance(message, ActorExitRequest):
                self._handling_dead_letters = True
                self.handleDeadLetters()  # not in __init__: the actor is not wired up yet
            if isinstance(message, WhereIs):
                entry = self._entries.get(message.name)
                if entry is None:
                    self.send(sender, Located(message.name))
                else:
                    located = Located(
                        message.name,
                        entry.address,
                        entry.restarting,
                        entry.durable,
                        entry.incarnation,
                    )
                    self.send(sender, located)
            elif isinstance(message, ListAgents):
                live = tuple(e for e in self._entries.values() if e.address is not None)
                self.send(sender, AgentList(live))
            elif isinstance(message, _Register):
                entry = AgentEntry(
                    message.name,
                    message.address,
                    message.node,
                    message.durable,
                    incarnation=message.incarnation,
                )
                self._entries[message.name] = entry
                self._send_all(message.then)
            elif isinstance(message, _Restarting):
                previous = self._entries.get(message.name)
                node = previous.node if previous else ""
                self._entries[message.name] = AgentEntry(
                    message.name, None, node, message.durable, restarting=True
                )
            elif isinstance(message, _Unregister):
                entry = self._entries.get(message.name)
                # A restarting entry has no address yet: it belongs to the same agent.
                if entry is not None and (entry.restarting or entry.address == message.address):
                    del self._entries[message.name]
                self._send_all(message.then)
            elif isinstance(message, DeadEnvelope):
                self._on_dead_letter(message)
            elif isinstance(message, ActorExitRequest):
                self._entries.clear()
        except Exception:
            _log.exception("registry failed handling %s", type(message).__name__)

    def _on_dead_letter(self, envelope: DeadEnvelope) -> None:
        dead = envelope.deadMessage
        if not isinstance(dead, TurnEvent):
            return  # other dead letters have no one to tell
        entry = self._entries.get(dead.agent)
        if entry is not None and entry.address is not None:
            self.send(entry.address, _WatcherGone(envelope.deadAddress))

    def _send_all(self, replies: tuple[tuple[Any, Any], ...]) -> None:
        for address, reply in replies:
            self.send(address, reply)
