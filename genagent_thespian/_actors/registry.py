"""``Registry``: the name -> address table of one actor system.

Callers hold names, never addresses, so an agent restarted at a new address keeps working
for them. The supervisor is the only writer (``_Register`` / ``_Unregister``); anyone may
read (``WhereIs``, ``ListAgents``). One registry per actor system, created with the
``globalName`` :data:`REGISTRY_NAME` at application boot.

A hibernated agent (see ``_actors/hibernation.py``) keeps its entry without an address:
``WhereIs(wait=True)`` wakes it (``_Wake`` to the supervisor) and is answered once it is
registered again, as after a restart; ``WhereIs`` without ``wait`` and ``ListAgents`` answer
for it without waking it, with the status it had when it went to sleep.

It is also the system's dead-letter handler: a ``TurnEvent`` an agent could not deliver
means its ``Watch`` subscriber is gone (a killed client), and the registry, which knows
every agent's address, tells that agent to drop it (``_WatcherGone``). Without this a
killed subscriber would stay in the agent's set, and be sent every event, forever.

Who talks to it::

    supervisor --_Register / _Restarting / _Unregister / _Hibernated (numbered)--> Registry
    client, agent --WhereIs(name, wait)--> Registry --Located--> client, agent
    client --ListAgents--> Registry --AgentList--> client
    Registry --_Wake(name)--> supervisor          (a caller waits for a sleeping agent)
    Thespian --DeadEnvelope(TurnEvent)--> Registry --_WatcherGone--> agent

Every ``WhereIs`` gets exactly one ``Located``: at once, or (``wait=True``) once the
agent runs again, or with no address once the name is unregistered or the registry ends.
The supervisor's updates carry the replies that must follow them (``then``), sent only
after the update is applied; an update overtaken by a newer one for the same name (the
multiproc transports do not keep order across connections) is dropped, its replies sent.
"""

from __future__ import annotations

from collections import OrderedDict

from thespian.actors import Actor, ActorExitRequest, DeadEnvelope

from .._core.log import get_logger
from .._core.protocol import (
    _Hibernated,
    _Register,
    _Restarting,
    _Unregister,
    _Wake,
    _WatcherGone,
)
from .._core.types import ActorAddress, AgentName, Sender
from ..messages import (
    AgentEntry,
    AgentList,
    AgentStatus,
    ListAgents,
    Located,
    TurnEvent,
    WhereIs,
)
from .unexpected import answer_unexpected

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
        """Empty tables; the dead-letter subscription is made at the first message.

        ``handleDeadLetters`` cannot be called from ``__init__``: Thespian wires the actor to
        its system only after construction.
        """
        super().__init__()
        self._entries: dict[AgentName, AgentEntry] = {}
        self._waiting: dict[
            AgentName, list[ActorAddress]
        ] = {}  # name -> askers waiting out a restart
        self._stopped: OrderedDict[AgentName, None] = (
            OrderedDict()
        )  # names of agents gone, newest last
        self._applied: dict[AgentName, int] = {}  # name -> seq of the newest update applied
        self._sleeping: dict[AgentName, AgentStatus] = {}  # hibernated name -> its last status
        self._supervisor: Sender = None  # who wakes hibernated agents (learnt from _Hibernated)
        self._handling_dead_letters = False

    def receiveMessage(self, message: object, sender: ActorAddress) -> None:
        """Serve lookups and apply the supervisor's updates. Never raises.

        A ``WhereIs(wait=True)`` for a restarting name is parked until the name is registered
        or unregistered; one for a hibernated name wakes the agent first. An update older
        than the newest applied for its name is dropped but its ``then`` replies still go
        out, since their callers wait for them. On ``ActorExitRequest`` every parked caller
        is answered (with no address) before the registry goes.
        """
        try:
            if not self._handling_dead_letters and not isinstance(message, ActorExitRequest):
                self._handling_dead_letters = True
                self.handleDeadLetters()  # not in __init__: the actor is not wired up yet
            if isinstance(message, WhereIs):
                entry = self._entries.get(message.name)
                if entry is not None and entry.hibernated and not entry.restarting and message.wait:
                    self._wake(entry, sender)
                elif entry is not None and entry.restarting and message.wait:
                    self._waiting.setdefault(message.name, []).append(sender)
                else:
                    self.send(sender, self._located(message.name))
            elif isinstance(message, ListAgents):
                live = tuple(
                    e for e in self._entries.values() if e.address is not None or e.hibernated
                )
                self.send(sender, AgentList(live))
            elif isinstance(
                message, _Register | _Restarting | _Unregister | _Hibernated
            ) and self._overtaken(message):
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
                self._sleeping.pop(message.name, None)
                self._stopped.pop(message.name, None)
                self._send_all(message.then)
                self._answer_waiting(message.name)
            elif isinstance(message, _Restarting):
                previous = self._entries.get(message.name)
                node = previous.node if previous else ""
                self._entries[message.name] = AgentEntry(
                    message.name, None, node, message.durable, restarting=True
                )
                self._sleeping.pop(message.name, None)
            elif isinstance(message, _Hibernated):
                self._on_hibernated(message)
            elif isinstance(message, _Unregister):
                entry = self._entries.get(message.name)
                # A restarting entry has no address yet: it belongs to the same agent.
                if entry is not None and (entry.restarting or entry.address == message.address):
                    del self._entries[message.name]
                    self._sleeping.pop(message.name, None)
                    self._remember_stopped(message.name)
                self._send_all(message.then)
                self._answer_waiting(message.name)
            elif isinstance(message, DeadEnvelope):
                self._on_dead_letter(message)
            elif isinstance(message, ActorExitRequest):
                self._entries.clear()
                for name in list(self._waiting):
                    self._answer_waiting(name)
            else:
                answer_unexpected(self, "the registry", message, sender)
        except Exception:
            _log.exception("registry failed handling %s", type(message).__name__)

    def _on_hibernated(self, message: _Hibernated) -> None:
        """Keep a sleeping agent's name, without an address, until a caller wakes it.

        The supervisor's address comes with the update: the registry needs it to wake the
        agent, and a registry created before the supervisor has no other way to learn it.
        The status kept is what lookups without ``wait`` answer while it sleeps.
        """
        entry = self._entries.get(message.name)
        if entry is None or entry.address != message.address:
            return  # it was stopped or restarted meanwhile: that update says what is true
        self._supervisor = message.supervisor
        self._sleeping[message.name] = message.status
        self._entries[message.name] = AgentEntry(
            message.name,
            None,
            entry.node,
            entry.durable,
            incarnation=entry.incarnation,
            hibernated=True,
        )

    def _wake(self, entry: AgentEntry, asker: ActorAddress) -> None:
        """Have the supervisor start a hibernated agent; ``asker`` is answered once it runs.

        The entry turns "restarting" at once, so every other waiting caller queues behind
        this one instead of asking for a second wake-up."""
        self._waiting.setdefault(entry.name, []).append(asker)
        self._entries[entry.name] = AgentEntry(
            entry.name,
            None,
            entry.node,
            entry.durable,
            restarting=True,
            incarnation=entry.incarnation,
            hibernated=True,
        )
        self.send(self._supervisor, _Wake(entry.name))

    def _located(self, name: AgentName) -> Located:
        """What the registry knows of ``name`` now, as the answer to a lookup.

        An unknown name says whether it was stopped (``stopped``), so the client raises
        ``AgentStopped`` rather than ``AgentNotFound`` for an agent that existed; a sleeping one
        carries the status it went to sleep with, so a lookup need not wake it.
        """
        entry = self._entries.get(name)
        if entry is None:
            return Located(name, stopped=name in self._stopped)
        return Located(
            name,
            entry.address,
            entry.restarting,
            entry.durable,
            entry.incarnation,
            hibernated=entry.hibernated,
            status=self._sleeping.get(name) if entry.hibernated else None,
        )

    def _overtaken(self, update: _Register | _Restarting | _Unregister | _Hibernated) -> bool:
        """Whether a newer update for the same name was applied already (else record it).

        Thespian keeps no order between messages that travel on different connections, so
        a ``_Restarting`` can arrive after the ``_Unregister`` of the give-up that followed
        it, and would leave the name "restarting" for ever. Numbers are per name; an
        update without one (``seq=0``) is always applied.
        """
        if not update.seq:
            return False
        if update.seq <= self._applied.get(update.name, 0):
            return True
        self._applied[update.name] = update.seq
        return False

    def _remember_stopped(self, name: AgentName) -> None:
        """Keep ``name`` among the stopped ones, newest last, within ``_STOPPED_NAMES_KEPT``.

        Bounded so that a system that starts and stops agents with fresh names forever does not
        grow this table without end; the oldest names fall back to "not found".
        """
        self._stopped[name] = None
        self._stopped.move_to_end(name)
        while len(self._stopped) > _STOPPED_NAMES_KEPT:
            self._stopped.popitem(last=False)

    def _answer_waiting(self, name: AgentName) -> None:
        """Answer those waiting out ``name``'s restart, unless it is still restarting."""
        located = self._located(name)
        if located.restarting:
            return
        for asker in self._waiting.pop(name, []):
            self.send(asker, located)

    def _on_dead_letter(self, envelope: DeadEnvelope) -> None:
        """A message could not be delivered: if it was an agent's event, drop its watcher.

        Thespian hands undeliverable mail to the actor that called ``handleDeadLetters``; only a
        ``TurnEvent`` says who should stop sending (its ``agent``), and the registry is the one
        actor that knows that agent's address.
        """
        dead = envelope.deadMessage
        if not isinstance(dead, TurnEvent):
            return  # other dead letters have no one to tell
        entry = self._entries.get(dead.agent)
        if entry is not None and entry.address is not None:
            self.send(entry.address, _WatcherGone(envelope.deadAddress))

    def _send_all(self, replies: tuple[tuple[ActorAddress, object], ...]) -> None:
        """Send the replies the supervisor attached to an update, now that it is applied.

        A caller answered this way (``AgentStarted``, ``Stopped``) can use or reuse the name
        at once: the registry already says what the answer says."""
        for address, reply in replies:
            self.send(address, reply)
