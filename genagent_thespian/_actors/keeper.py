"""``NodeKeeper``: a new convention leader's hand on each node, for re-adoption.

When a standby takes the lead (``_nodes/leadership.py``), the agents running on the
surviving nodes are alive but were the children of the dead leader's supervisor: Thespian
cannot give a running actor a new parent, and it tells nobody when a non-child dies. So the
new leader's supervisor creates a keeper on every node (``targetActorRequirements`` naming
the node, as for the sweeper). The keeper

1. points the node's directory at the new services (clients there follow the new leader);
2. reads the agents running there from the directory and reports them to the supervisor
   (:class:`NodeCensus`), which re-adopts them: same process, same incarnation;
3. stands in for Thespian's ``ChildActorExited``: it checks every second that each adopted
   agent's process still runs and reports those that end (:class:`AdoptedExited`), then
   exits once none is left to watch.

Pids mean something only on their own host, which is why this runs on the agent's node.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from thespian.actors import Actor, ActorExitRequest, WakeupMessage

from .._core.types import ActorAddress, Capabilities, Sender
from .._os.processes import process_alive
from .directory import (
    DIRECTORY_NAME,
    ListLocalAgents,
    LocalAgent,
    LocalAgents,
    ServiceDirectory,
    Services,
    SetServices,
)

__all__ = ["AdoptedExited", "KeepNode", "NodeCensus", "NodeKeeper"]

CONVENTION_CAPABILITY = "Convention Address.IPv4"
#: Seconds between checks that the adopted agents' processes still run.
WATCH_INTERVAL = 1.0


@dataclass(frozen=True, slots=True)
class KeepNode:
    """Supervisor -> keeper: the new services, the node the keeper is on, the leader list.

    ``leaders`` is the convention's list of leader candidates with the new leader first.
    """

    services: Services
    node: str
    leaders: tuple[tuple[str, int], ...] = ()


@dataclass(frozen=True, slots=True)
class NodeCensus:
    """Keeper -> supervisor: the agents running on ``node`` when the new leader took over."""

    node: str
    agents: tuple[LocalAgent, ...]


@dataclass(frozen=True, slots=True)
class AdoptedExited:
    """Keeper -> supervisor: an adopted agent's process ended (its ``ChildActorExited``)."""

    address: ActorAddress


class NodeKeeper(Actor):
    """Created on one node by a new leader's supervisor (see the module docstring)."""

    def __init__(self) -> None:
        """Empty until ``KeepNode``; watched agents are a list, since addresses do not hash."""
        super().__init__()
        self._supervisor: Sender = None
        self._watched: list[tuple[ActorAddress, int]] = []  # (address, pid); addresses do not hash
        self._node = ""

    @staticmethod
    def actorSystemCapabilityCheck(
        capabilities: Capabilities, requirements: Capabilities | None = None
    ) -> bool:
        """Run where the supervisor asked: the node whose capabilities match every key."""
        return all(capabilities.get(key) == value for key, value in (requirements or {}).items())

    def receiveMessage(self, message: object, sender: ActorAddress) -> None:
        """Take the node over for the new leader, report its agents, then watch them.

        ``KeepNode`` repoints the directory and asks it for the agents; ``LocalAgents`` becomes
        the census; each wakeup reports the adopted agents whose processes ended. The keeper
        exits when none is left to watch: it holds no state the leader needs afterwards.
        """
        if isinstance(message, KeepNode):
            self._supervisor = message.services.supervisor
            if message.leaders:
                # Thespian 4.0.1 counts a member's failed check-ins with the dead leader and
                # its good ones with the others together, so the member never drops the dead
                # leader and registers with the new one as a newcomer each period (which the
                # new leader sees as the member leaving and joining). Naming the new leader
                # first makes it the member's leader at once.
                self.updateCapability(CONVENTION_CAPABILITY, list(message.leaders))
            directory = self.createActor(ServiceDirectory, globalName=DIRECTORY_NAME)
            # The directory names its own node (``Services.node``), the services the leader's.
            here = dataclasses.replace(message.services, node=message.node)
            self.send(directory, SetServices(here))
            self.send(directory, ListLocalAgents())
            self._node = message.node
        elif isinstance(message, LocalAgents):
            self._watched = [(agent.address, agent.pid) for agent in message.agents]
            self.send(self._supervisor, NodeCensus(self._node, message.agents))
            self.wakeupAfter(WATCH_INTERVAL)
        elif isinstance(message, WakeupMessage):
            for address, _ in [w for w in self._watched if not process_alive(w[1])]:
                self.send(self._supervisor, AdoptedExited(address))
            self._watched = [w for w in self._watched if process_alive(w[1])]
            if self._watched:
                self.wakeupAfter(WATCH_INTERVAL)
            else:
                self.send(self.myAddress, ActorExitRequest())
