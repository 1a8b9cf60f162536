"""``ServiceDirectory``: where a node's clients find the framework's services.

A Thespian ``globalName`` is local to one admin: a client attaching to a convention member
and creating the registry by its global name would get a new, private registry on the member
(empty, and left running after the client goes). So every node keeps one small directory
actor under :data:`DIRECTORY_NAME` that knows the services its clients must use: its own on a
single system or a convention leader, the leader's on a member.

A client attaching to a node asks the directory first. A directory it had to create itself
(a node from an older release, which kept none) answers :class:`NoServices` and leaves: the
client then boots the services itself, as before.

**Leader failover** (``_nodes/leadership.py``). In a convention with standby leaders the
services move when the leader does: the new leader's node keeper (``_actors/keeper.py``)
tells each node's directory the new services with the new leader epoch, and a directory
never goes back to an older epoch (a deposed leader's late message changes nothing). A
node waiting for its first leader (:class:`ExpectServices`) holds its clients' questions
until the services are known. The directory also lists the agents running on its node
(:class:`LocalAgent`), which a new leader reads to re-adopt them instead of restarting them.
"""

from __future__ import annotations

from dataclasses import dataclass

from thespian.actors import Actor, ActorExitRequest, WakeupMessage

from .._core.types import ActorAddress, AgentName, Sender
from .._os.processes import process_alive
from ..messages import AgentSpec

__all__ = [
    "DIRECTORY_NAME",
    "ExpectServices",
    "ListLocalAgents",
    "LocalAgent",
    "LocalAgentGone",
    "LocalAgents",
    "NoServices",
    "ServiceDirectory",
    "Services",
    "SetServices",
    "WhereAreServices",
]

DIRECTORY_NAME = "genagent_thespian.directory"

#: Seconds an unconfigured directory stays after its answer, so the answer is delivered first.
_LINGER = 2.0


@dataclass(frozen=True, slots=True)
class Services:
    """The addresses a node's clients use, and the node they run on."""

    registry: ActorAddress
    telemetry: ActorAddress
    supervisor: ActorAddress
    watcher: ActorAddress  # the convention's node watcher (``None`` outside a convention)
    node: str  # the name of the node whose directory answered
    epoch: int = 0  # the leader's epoch (0: a convention without standby leaders)


@dataclass(frozen=True, slots=True)
class WhereAreServices:
    """Client -> directory: answered with :class:`Services` or :class:`NoServices`."""


@dataclass(frozen=True, slots=True)
class NoServices:
    """Directory -> client: nobody configured this node; the client boots the services."""


@dataclass(frozen=True, slots=True)
class SetServices:
    """Node starter or leader's keeper -> directory: the services its clients use from now on.

    Ignored when ``services.epoch`` is older than the directory's (a deposed leader).
    """

    services: Services


@dataclass(frozen=True, slots=True)
class ExpectServices:
    """Node starter -> directory: a leader will tell the services; hold questions until then."""


@dataclass(frozen=True, slots=True)
class LocalAgent:
    """Agent -> its node's directory: it runs here (sent when ready and when re-adopted)."""

    spec: AgentSpec
    address: ActorAddress
    pid: int
    incarnation: int
    instance_id: str
    node: str
    governor: Sender = None  # its node's session governor (see _AgentReady)


@dataclass(frozen=True, slots=True)
class LocalAgentGone:
    """Agent -> its node's directory: it is leaving (a clean exit)."""

    name: AgentName
    address: ActorAddress


@dataclass(frozen=True, slots=True)
class ListLocalAgents:
    """Keeper -> directory: answered with :class:`LocalAgents`."""


@dataclass(frozen=True, slots=True)
class LocalAgents:
    """Directory -> keeper: the agents whose processes run on this node now."""

    agents: tuple[LocalAgent, ...]


class ServiceDirectory(Actor):
    """Answers :class:`WhereAreServices` for one node (see the module docstring)."""

    def __init__(self) -> None:
        """No services known yet: a client asking now hears ``NoServices`` or waits, as
        configured.
        """
        super().__init__()
        self._services: Services | None = None
        self._expecting = False
        self._waiting: list[ActorAddress] = []
        self._agents: dict[AgentName, LocalAgent] = {}

    def receiveMessage(self, message: object, sender: ActorAddress) -> None:
        """Answer where the services are, track this node's agents, leave when unused.

        ``SetServices`` is answered with the services now in force, so a deposed leader's
        keeper learns that a newer epoch won. ``WhereAreServices`` is answered at once, held
        while the node expects a leader (``ExpectServices``), or answered ``NoServices`` by a
        directory nobody configured, which then exits after ``_LINGER`` unless it was given
        something to keep (it must not stay behind on a node from an older release).
        """
        if isinstance(message, SetServices):
            current = self._services
            if current is None or message.services.epoch >= current.epoch:
                self._services = message.services
                waiting, self._waiting = self._waiting, []
                for waiter in waiting:
                    self.send(waiter, message.services)
            self.send(sender, self._services)
        elif isinstance(message, WhereAreServices):
            if self._services is not None:
                self.send(sender, self._services)
            elif self._expecting:
                self._waiting.append(sender)
            else:
                self.send(sender, NoServices())
                self.wakeupAfter(_LINGER)
        elif isinstance(message, ExpectServices):
            self._expecting = True
            self.send(sender, message)
        elif isinstance(message, LocalAgent):
            self._agents[message.spec.name] = message
        elif isinstance(message, LocalAgentGone):
            entry = self._agents.get(message.name)
            if entry is not None and entry.address == message.address:
                del self._agents[message.name]
        elif isinstance(message, ListLocalAgents):
            # A killed agent never said goodbye: only processes that still run count.
            self._agents = {n: a for n, a in self._agents.items() if process_alive(a.pid)}
            self.send(sender, LocalAgents(tuple(self._agents.values())))
        elif isinstance(message, WakeupMessage) and self._unused():
            self.send(self.myAddress, ActorExitRequest())

    def _unused(self) -> bool:
        """Whether nobody configured this directory and no agent of this node is listed."""
        return self._services is None and not self._expecting and not self._agents
