"""Convention membership: the node watcher on the leader, and what it reports.

The leader's :class:`NodeWatcher` follows Thespian's ``ActorSystemConventionUpdate``
notices and tells the supervisor the live nodes (``NodesChanged``) and the lost ones
(``NodeLost``); ``list_nodes`` asks it (:class:`ListNodes`). Kept apart from
``convention.py`` (starting nodes) so the leader election (``leadership.py``) can start a
watcher without importing the node starter.

Message flow::

    Thespian admin --ActorSystemConventionUpdate(added | removed)--> NodeWatcher
    NodeWatcher --NodesChanged(live nodes and their placement capabilities)--> supervisor
    NodeWatcher --NodeLost(node), after _LEAVE_GRACE without re-registering--> supervisor
    client (list_nodes) --ListNodes--> NodeWatcher --tuple[NodeInfo, ...]--> client

Why the watcher and not Thespian tells the supervisor of lost agents: Thespian 4.0.1 sends
no ``ChildActorExited`` for children on a member that died, so without ``NodeLost`` the
agents of a dead host would stay "running" for ever.
"""

from __future__ import annotations

from dataclasses import dataclass

from thespian.actors import Actor, ActorSystemConventionUpdate, WakeupMessage

from .._actors.supervisor import SUPERVISOR_NAME, AgentSupervisor, NodeLost, NodesChanged
from .._core.log import get_logger
from .._core.protocol import NODE_CAPABILITY
from .._core.types import ActorAddress, Capabilities, Options, OptionValue, Sender

__all__ = [
    "HEARTBEAT_CAPABILITY",
    "HOST_CAPABILITY",
    "NODES_NAME",
    "RESERVED_PREFIXES",
    "ROLE_CAPABILITY",
    "LeaderOnly",
    "ListNodes",
    "NodeInfo",
    "NodeWatcher",
]

ROLE_CAPABILITY = "GenAgent Role"
HOST_CAPABILITY = "GenAgent Host"
HEARTBEAT_CAPABILITY = "GenAgent Heartbeat"
NODES_NAME = "genagent_thespian.nodes"

#: Capability names a user's labels may not use (Thespian's and ours).
RESERVED_PREFIXES = (
    "Thespian",
    "Admin ",
    "Convention ",
    "GenAgent ",
    "Outbound Only",
    "Python Version",
    "Process Startup Method",
)
#: Seconds a member's removal must last before it counts: Thespian 4.0.1 reports a member
#: that registers again as a newcomer as leaving and joining at once (both notices arrive
#: back to back), which must not restart its agents.
_LEAVE_GRACE = 0.5
_log = get_logger("genagent_thespian.nodes")


@dataclass(frozen=True, slots=True)
class NodeInfo:
    """One node of the convention, as the leader sees it."""

    name: str
    role: str
    host: str
    labels: tuple[tuple[str, OptionValue], ...]
    capacity: int | None


class LeaderOnly(Actor):
    """Base of the helper actors that must run on the leader (or a standby leader)."""

    @staticmethod
    def actorSystemCapabilityCheck(
        capabilities: Capabilities, requirements: Capabilities | None = None
    ) -> bool:
        """Accept only a leader or a standby leader's system (Thespian asks each node).

        Membership notices reach only the convention leader's admin; a watcher created on a
        member would never hear of a node joining or leaving.
        """
        return capabilities.get(ROLE_CAPABILITY) in ("leader", "candidate")


@dataclass(frozen=True, slots=True)
class ListNodes:
    """Client -> node watcher: answered with a tuple of :class:`NodeInfo`."""


class NodeWatcher(LeaderOnly):
    """On the leader: follows the convention's membership (``ActorSystemConventionUpdate``)."""

    def __init__(self, capabilities: Capabilities | None = None) -> None:
        """Keep the leader's own capabilities: the leader is a node too, and placement may use
        it.
        """
        super().__init__()
        self._own = dict(capabilities or {})
        self._members: dict[str, Capabilities] = {}
        self._leaving: dict[str, Capabilities] = {}  # removed, within the grace
        self._registered = False
        self._told: tuple[tuple[str, tuple[tuple[str, OptionValue], ...]], ...] | None = None

    def receiveMessage(self, message: object, sender: ActorAddress) -> None:
        """Track joins and leaves; report a leave only once it lasted ``_LEAVE_GRACE``.

        It registers for membership notices on its first message (an actor cannot call Thespian
        in ``__init__``) and tells the supervisor the nodes at once, so placement starts with
        the leader itself. A member that registers again within the grace never left: Thespian
        reports a re-registration as a leave and a join.
        """
        if not self._registered:
            self._registered = True
            self.notifyOnSystemRegistrationChanges(True)
            self._tell_supervisor()
        if isinstance(message, ActorSystemConventionUpdate):
            key = str(message.remoteAdminAddress)
            if message.remoteAdded:
                self._leaving.pop(key, None)  # it registered again: it never left
                self._members[key] = dict(message.remoteCapabilities or {})
                self._tell_supervisor()
            elif key in self._members:
                self._leaving[key] = self._members.pop(key)
                self.wakeupAfter(_LEAVE_GRACE, payload=key)
        elif isinstance(message, WakeupMessage) and message.payload in self._leaving:
            key = message.payload
            caps = self._leaving.pop(key)
            _log.warning("convention member %s left or was declared dead", key)
            self._tell_supervisor()
            node = caps.get(NODE_CAPABILITY)
            if node:
                self.send(self._supervisor(), NodeLost(str(node)))
        elif isinstance(message, ListNodes):
            nodes = [_node_info(self._own)] + [_node_info(c) for c in self._members.values()]
            self.send(sender, tuple(nodes))

    def _supervisor(self) -> Sender:
        """The supervisor's address, by its global name (created once per system, at boot)."""
        return self.createActor(AgentSupervisor, globalName=SUPERVISOR_NAME)

    def _tell_supervisor(self) -> None:
        """Send the supervisor the live nodes when they changed (it places agents by them)."""
        nodes = tuple(
            (str(caps[NODE_CAPABILITY]), _placement_view(caps))
            for caps in (self._own, *self._members.values())
            if caps.get(NODE_CAPABILITY)
        )
        if nodes != self._told:
            self._told = nodes
            self.send(self._supervisor(), NodesChanged(nodes))


def _placement_view(capabilities: Options) -> tuple[tuple[str, OptionValue], ...]:
    """The capabilities placement reads: labels, capacity and the node name (no heartbeat)."""
    return tuple(sorted((k, v) for k, v in capabilities.items() if k != HEARTBEAT_CAPABILITY))


def _node_info(capabilities: Options) -> NodeInfo:
    """What ``list_nodes`` shows of a node: its name, role, host, user labels and capacity.

    Thespian's and the framework's own capabilities are left out of ``labels``: they are
    not the user's, and placement must not be asked to match them.
    """
    labels = tuple(
        sorted(
            (key, value)
            for key, value in capabilities.items()
            if not key.startswith(RESERVED_PREFIXES) and key != "capacity"
        )
    )
    capacity = capabilities.get("capacity")
    return NodeInfo(
        name=str(capabilities.get(NODE_CAPABILITY, "")),
        role=str(capabilities.get(ROLE_CAPABILITY, "")),
        host=str(capabilities.get(HOST_CAPABILITY, "")),
        labels=labels,
        capacity=int(capacity) if capacity is not None else None,
    )
