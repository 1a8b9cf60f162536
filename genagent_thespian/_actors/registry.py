"""``Registry``: the name -> address table of one actor system.

Callers hold names, never addresses, so an agent restarted at a new address keeps working
for them. The supervisor is the only writer (``_Register`` / ``_Unregister``); anyone may
read (``WhereIs``, ``ListAgents``). One registry per actor system, created with the
``globalName`` :data:`REGISTRY_NAME` at application boot.
"""

from __future__ import annotations

from typing import Any

from thespian.actors import Actor, ActorExitRequest

from .._core.log import get_logger
from .._core.protocol import _Register, _Restarting, _Unregister
from ..messages import AgentEntry, AgentList, ListAgents, Located, WhereIs

__all__ = ["REGISTRY_NAME", "Registry"]

REGISTRY_NAME = "genagent_thespian.registry"

_log = get_logger("genagent_thespian.registry")


class Registry(Actor):
    """Maps agent names to addresses (see the module docstring).

    Callers hold names, never addresses, so an agent restarted in another process (or on
    another node) keeps working for them. An agent between incarnations stays listed as
    restarting, so a caller can wait for it instead of concluding it is gone.
    """

    def __init__(self) -> None:
        super().__init__()
        self._entries: dict[Any, AgentEntry] = {}

    def receiveMessage(self, message: Any, sender: Any) -> None:
        """Serve lookups and apply the supervisor's updates. Never raises."""
        try:
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
            elif isinstance(message, ActorExitRequest):
                self._entries.clear()
        except Exception:
            _log.exception("registry failed handling %s", type(message).__name__)

    def _send_all(self, replies: tuple[tuple[Any, Any], ...]) -> None:
        """Send the replies the supervisor attached to an update, now that it is applied.

        A caller answered this way (``AgentStarted``, ``Stopped``) can use or reuse the name
        at once: the registry already says what the answer says."""
        for address, reply in replies:
            self.send(address, reply)
