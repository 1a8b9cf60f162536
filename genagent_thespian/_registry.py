"""``Registry``: the name -> address table of one actor system.

Callers hold names, never addresses, so an agent restarted at a new address keeps working
for them. The supervisor is the only writer (``_Register`` / ``_Unregister``); anyone may
read (``WhereIs``, ``ListAgents``). One registry per actor system, created with the
``globalName`` :data:`REGISTRY_NAME` at application boot.
"""

from __future__ import annotations

import logging
from typing import Any

from thespian.actors import Actor, ActorExitRequest

from ._protocol import _Register, _Unregister
from .messages import AgentEntry, AgentList, ListAgents, Located, WhereIs

__all__ = ["REGISTRY_NAME", "Registry"]

REGISTRY_NAME = "genagent_thespian.registry"

_log = logging.getLogger("genagent_thespian.registry")


class Registry(Actor):
    """Maps agent names to addresses (see the module docstring)."""

    def __init__(self) -> None:
        super().__init__()
        self._entries: dict[Any, AgentEntry] = {}

    def receiveMessage(self, message: Any, sender: Any) -> None:
        """Serve lookups and apply the supervisor's updates. Never raises."""
        try:
            if isinstance(message, WhereIs):
                entry = self._entries.get(message.name)
                self.send(sender, Located(message.name, entry.address if entry else None))
            elif isinstance(message, ListAgents):
                self.send(sender, AgentList(tuple(self._entries.values())))
            elif isinstance(message, _Register):
                entry = AgentEntry(message.name, message.address, message.node)
                self._entries[message.name] = entry
                self._send_all(message.then)
            elif isinstance(message, _Unregister):
                entry = self._entries.get(message.name)
                if entry is not None and entry.address == message.address:
                    del self._entries[message.name]
                self._send_all(message.then)
            elif isinstance(message, ActorExitRequest):
                self._entries.clear()
        except Exception:
            _log.exception("registry failed handling %s", type(message).__name__)

    def _send_all(self, replies: tuple[tuple[Any, Any], ...]) -> None:
        for address, reply in replies:
            self.send(address, reply)
