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

from collections import OrderedDict
from typing import Any

from thespian.actors import Actor, ActorExitRequest, DeadEnvelope

from .._core.log import get_logger
from .._core.protocol import _Register, _Restarting, _Unregister, _WatcherGone
from ..messages import AgentEntry, AgentList, ListAgents, Located, TurnEvent, WhereIs

__all__ = ["REGISTRY_NAME", "Registry"]

REGISTRY_NAME = "genagent_thespian.registry"
#: Names of stopped agents remembered, so that calls say ``AgentStopped``, not "not found".
_STOPPED_NAMES_KEPT = 10_000

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
        self._waiting: dict[Any, list[Any]] = {}  # name -> askers waiting out a restart
        self._stopped: OrderedDict[Any, None] = OrderedDict()  # names of agents gone, newest last
        self._applied: dict[Any, int] = {}  # name -> seq of the newest update applied
        self._handling_dead_letters = False

    def receiveMessage(self, message: Any, sender: Any) -> None:
        """Serve lookups and apply the supervisor's updates. Never raises."""
        try:
            if not self._handling_dead_letters and not isinstance(message, ActorExitRequest):
                self._handling_dead_letters = True
                self.handleDeadLetters()  # not in __init__: the actor is not wired up yet
            if isinstance(message, WhereIs):
                entry = self._entries.get(message.name)
                if entry is not None and entry.restarting and message.wait:
                    self._waiting.setdefault(message.name, []).append(sender)
                else:
                    self.send(sender, self._located(message.name))
            elif isinstance(message, ListAgents):
                live = tuple(e for e in self._entries.values() if e.address is not None)
                self.send(sender, AgentList(live))
            elif isinstance(message, _Register | _Restarting | _Unregister) and self._overtaken(
                message
            ):
                # An older update delivered late: only its replies still matter.
                self._send_all(getattr(message, "then", ()))
            elif isinstance(message, _Register):
                entry = AgentEntry(
                    message.name,
                    message.address,
                    message.node,
                    message.durable,
                    incarnation=message.incarnation,
                )
                self._entries[message.name] = entry
                self._stopped.pop(message.name, None)
                self._send_all(message.then)
                self._answer_waiting(message.name)
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
                    self._remember_stopped(message.name)
                self._send_all(message.then)
                self._answer_waiting(message.name)
            elif isinstance(message, DeadEnvelope):
                self._on_dead_letter(message)
            elif isinstance(message, ActorExitRequest):
                self._entries.clear()
                for name in list(self._waiting):
                    self._answer_waiting(name)
        except Exception:
            _log.exception("registry failed handling %s", type(message).__name__)

    def _located(self, name: Any) -> Located:
        entry = self._entries.get(name)
        if entry is None:
            return Located(name, stopped=name in self._stopped)
        return Located(name, entry.address, entry.restarting, entry.durable, entry.incarnation)

    def _overtaken(self, update: _Register | _Restarting | _Unregister) -> bool:
        """Whether a newer update for the same name was applied already (else record it)."""
        if not update.seq:
            return False
        if update.seq <= self._applied.get(update.name, 0):
            return True
        self._applied[update.name] = update.seq
        return False

    def _remember_stopped(self, name: Any) -> None:
        self._stopped[name] = None
        self._stopped.move_to_end(name)
        while len(self._stopped) > _STOPPED_NAMES_KEPT:
            self._stopped.popitem(last=False)

    def _answer_waiting(self, name: Any) -> None:
        """Answer those waiting out ``name``'s restart, unless it is still restarting."""
        located = self._located(name)
        if located.restarting:
            return
        for asker in self._waiting.pop(name, []):
            self.send(asker, located)

    def _on_dead_letter(self, envelope: DeadEnvelope) -> None:
        dead = envelope.deadMessage
        if not isinstance(dead, TurnEvent):
            return  # other dead letters have no one to tell
        entry = self._entries.get(dead.agent)
        if entry is not None and entry.address is not None:
            self.send(entry.address, _WatcherGone(envelope.deadAddress))

    def _send_all(self, replies: tuple[tuple[Any, Any], ...]) -> None:
        """Send the replies the supervisor attached to an update, now that it is applied.

        A caller answered this way (``AgentStarted``, ``Stopped``) can use or reuse the name
        at once: the registry already says what the answer says."""
        for address, reply in replies:
            self.send(address, reply)
