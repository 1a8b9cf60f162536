"""Nodes: several actor systems (hosts) joined into one Thespian convention.

A convention has one **leader** and any number of **members**. Every node is a
``multiprocTCPBase`` actor system with the capability ``Convention Address.IPv4`` pointing
at the leader's admin (the leader points at itself) and advertises what it offers:

* ``GenAgent Node`` -- its name, ``"<host name>:<admin port>"`` (what ``AgentEntry.node`` and
  ``AgentStatus.node`` show for the agents it runs);
* ``GenAgent Role`` -- ``"leader"`` or ``"member"``; ``GenAgent Host`` -- the host name;
* the labels given in ``capabilities`` (``{"claude": "yes"}``) and ``capacity`` (how many
  agents it runs at most).

Only the leader boots the framework's services (registry, supervisor, telemetry); every node
names them in its directory (``_actors/directory.py``), so a client attached to any node
uses the leader's. The leader's node watcher tells the supervisor the live nodes
(``NodesChanged``); the supervisor chooses the node for each agent (``_core/placement.py``:
matching labels, room under ``capacity``, fewest agents) and creates it with
``targetActorRequirements`` naming that node, which
:meth:`~genagent_thespian._actors.agent.AgentActor.actorSystemCapabilityCheck` accepts only
there. The supervisor stays its parent: when the agent dies (or its whole node does) the
``ChildActorExited`` reaches the leader, which restarts it per its policy, again by
placement, so on a surviving matching node with room.

A member that stops answering is declared dead after ``reregistration_period`` seconds times
``registration_miss_max`` (Thespian's ``CONVENTION_REREGISTRATION_PERIOD`` and
``CONVENTION_REGISTRATION_MISS_MAX``: 7 min 22 s times 3 by default, here 5 s times 2). The
same values must be used on every node.

With **standby leaders** (``start_node(leaders=[...])``, the same ordered list on every
node) the leader is no single point of failure: the shared store elects which candidate runs
the services, and a new leader re-adopts the running agents (``_nodes/leadership.py``).

A member's :class:`AgentSystem` is a client of the leader's services (``ask``, ``tell``,
``status``, ``list_agents``... by name work from it); shutting a member down stops no agent
by itself, but its agents' processes end with it, so the leader restarts the permanent ones
elsewhere. Shut members down before the leader.

How a member joins (``_start_member``)::

    member process: ActorSystem(Convention Address.IPv4 = leader) -- the admin registers
    member --createActor(_ServicesFinder, on a leader)--> leader's node
    _ServicesFinder --_Services(registry, telemetry, supervisor, watcher)--> member
    member: _Heartbeat (re-registers every period), _Probe (its process group, to sweep)
    leader's NodeWatcher --NodesChanged--> supervisor: agents may now be placed there

A join that cannot reach the leader's services within ``join_timeout`` shuts the new
system down again and ends whatever it forked: a failed ``start_node`` leaves nothing.
"""

from __future__ import annotations

import contextlib
import os
import socket
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import timedelta

from thespian.actors import (
    Actor,
    ActorExitRequest,
    ActorSystem,
    WakeupMessage,
)

from .._actors.directory import (
    DIRECTORY_NAME,
    ExpectServices,
    ServiceDirectory,
    Services,
    WhereAreServices,
)
from .._actors.governor import (
    GOVERNOR_NAME,
    SessionGovernorActor,
    node_sessions,
    session_capabilities,
)
from .._actors.registry import REGISTRY_NAME, Registry
from .._actors.supervisor import SUPERVISOR_NAME, AgentSupervisor
from .._actors.telemetry import TELEMETRY_NAME, TelemetryHub
from .._api.system import AgentSystem, _marker_env, free_port
from .._core.errors import GenAgentError, InvalidOption
from .._core.log import get_logger
from .._core.protocol import NODE_CAPABILITY
from .._core.types import ActorAddress, Capabilities, Options, WireMessage
from .._os.frames import TransportLimits
from .._os.processes import SYSTEM_MARKER, kill_marked
from .._os.security import check_capabilities, harden_transport
from ..messages import AgentEntry, AgentList, ListAgents
from .membership import (
    HEARTBEAT_CAPABILITY,
    HOST_CAPABILITY,
    NODES_NAME,
    RESERVED_PREFIXES,
    ROLE_CAPABILITY,
    NodeInfo,
)
from .membership import LeaderOnly as _LeaderOnly
from .membership import ListNodes as _ListNodes
from .membership import NodeWatcher as _NodeWatcher

__all__ = [
    "HOST_CAPABILITY",
    "NODE_CAPABILITY",
    "ROLE_CAPABILITY",
    "NodeInfo",
    "list_fleet",
    "list_nodes",
    "start_node",
    "wait_for_nodes",
]

#: Seconds a helper actor stays after its answer, so the answer is delivered first.
_FINDER_LINGER = 2.0
#: Seconds a member waits for the leader's services while joining.
_JOIN_TIMEOUT = 30.0

_log = get_logger("genagent_thespian.nodes")


# ---------------------------------------------------------------------- actors


@dataclass(frozen=True, slots=True)
class _WhereAreServices:
    """Member client -> services finder on the leader."""


@dataclass(frozen=True, slots=True)
class _Services:
    """The leader's services: registry, telemetry, supervisor and node watcher."""

    registry: ActorAddress
    telemetry: ActorAddress
    supervisor: ActorAddress
    watcher: ActorAddress


class _ServicesFinder(_LeaderOnly):
    """Created on the leader by a joining member; answers where the services are, then exits."""

    def receiveMessage(self, message: object, sender: ActorAddress) -> None:
        """Answer with the leader's services (by global name, booted or not), then leave.

        An actor on the leader is the only way for a member to reach the leader's named actors:
        a ``globalName`` resolves in the admin it is asked of, and the member's own admin would
        create a second, empty registry.
        """
        if isinstance(message, _WhereAreServices):
            services = _Services(
                self.createActor(Registry, globalName=REGISTRY_NAME),
                self.createActor(TelemetryHub, globalName=TELEMETRY_NAME),
                self.createActor(AgentSupervisor, globalName=SUPERVISOR_NAME),
                self.createActor(_NodeWatcher, globalName=NODES_NAME),
            )
            self.send(sender, services)
            # Exiting at once can drop the reply in flight: leave a moment later.
            self.wakeupAfter(_FINDER_LINGER)
        elif isinstance(message, WakeupMessage):
            self.send(self.myAddress, ActorExitRequest())


class _Probe(Actor):
    """Created on the local node: answers its pid and process group, then exits."""

    def receiveMessage(self, message: object, sender: ActorAddress) -> None:
        """Answer ``"probe"`` with this actor's pid and process group, then leave.

        Every actor of a system shares the admin's process group; the starter learns it here so
        that ``shutdown`` can sweep the group afterwards.
        """
        if message == "probe":
            self.send(sender, (os.getpid(), os.getpgid(0)))
            self.wakeupAfter(_FINDER_LINGER)
        elif isinstance(message, WakeupMessage):
            self.send(self.myAddress, ActorExitRequest())


@dataclass(frozen=True, slots=True)
class _Beat:
    """Node starter -> heartbeat: check in with the leader every ``period`` seconds."""

    period: float


class _Heartbeat(Actor):
    """On a member: makes its admin re-register with the leader every period.

    Thespian 4.0.1's member admin does not re-register on its own while idle (checked
    here: only the first registration is ever sent, so the leader declares a healthy
    member dead after ``period * miss_max``). A capability update makes the admin send
    its registration again, so this actor sets a capability every period. The value never
    changes: an unchanged value re-registers without making the admin re-check every local
    actor against the new capabilities (it does that only when a value changes).
    """

    def __init__(self) -> None:
        super().__init__()
        self._period = 0.0

    def receiveMessage(self, message: object, sender: ActorAddress) -> None:
        """Start beating on ``_Beat``; on each wakeup, touch the capability and re-arm."""
        if isinstance(message, _Beat):
            self._period = message.period
            self.wakeupAfter(self._period)
        elif isinstance(message, WakeupMessage) and self._period:
            self.updateCapability(HEARTBEAT_CAPABILITY, True)
            self.wakeupAfter(self._period)


# ---------------------------------------------------------------------- starting


def start_node(
    *,
    leader: tuple[str, int] | None = None,
    leaders: Sequence[tuple[str, int]] | None = None,
    admin_port: int | None = None,
    bind_host: str = "127.0.0.1",
    advertise_host: str | None = None,
    capabilities: Options | None = None,
    store_path: str | os.PathLike[str] | None = None,
    secret_path: str | os.PathLike[str] | None = None,
    reregistration_period: float = 5.0,
    registration_miss_max: int = 2,
    log_config: dict[str, object] | None = None,
    join_timeout: float = _JOIN_TIMEOUT,
    transport_limits: TransportLimits | None = None,
    node_name: str | None = None,
    max_live_sessions: int | str | None = "auto",
    session_idle_timeout: float | None = None,
) -> AgentSystem:
    """Start a convention node in this process's care and return its :class:`AgentSystem`.

    Args:
        leader: ``(host, admin_port)`` of the leader; ``None`` starts the leader itself.
        leaders: Instead of ``leader``: the ordered leader candidates, the same list on
            every node, for leader failover (``_nodes/leadership.py``). A node whose own
            address is listed is a candidate and needs ``store_path`` (the shared store
            decides who leads); the others are members.
        admin_port: This node's admin port (a free one when ``None``).
        bind_host: Address to listen on (loopback by default; see ``docs/security.md``).
        advertise_host: Address peers use when ``bind_host`` is ``0.0.0.0``.
        capabilities: Placement labels (``{"claude": "yes"}``) and ``capacity`` (an int).
        store_path: The durable store (leader only; members' agents use the leader's):
            for several hosts a ``postgresql://`` URL every node reaches (or a SQLite
            file every node can open, e.g. on shared storage).
        secret_path: The node secret file; the same secret on every node of the convention.
        reregistration_period: Seconds between a member's check-ins with the leader.
        registration_miss_max: Missed check-ins after which the leader declares a member
            dead (detection takes about ``reregistration_period * registration_miss_max``).
        log_config: A ``logging.config.dictConfig`` dict for actor processes.
        join_timeout: Seconds a member tries to reach the leader's services.
        transport_limits: Frame size limit of the transport (the same on every node; see
            :class:`~genagent_thespian.TransportLimits` and ``docs/security.md``).
        node_name: The leader's home folder name (its store, lock and log; see
            ``start_system``); default ``node-<admin_port>``, stable across restarts on a
            fixed port and distinct for several nodes on one host.
        max_live_sessions: This node's cap on live provider sessions (CLI processes) of the
            agents running on it: an int, ``"auto"`` (the default: sized from this host's
            memory) or ``0``/``None`` (no cap). Each node governs its own (see
            ``docs/supervision.md``).
        session_idle_timeout: Seconds after which this node retires an idle session even
            when nobody waits (needs a cap).

    Raises:
        InvalidOption: A label uses a reserved name, ``capacity`` is not a positive int,
            the timing is not positive, ``store_path`` is given to a member, or a session
            setting is bad.
        SystemNotRunning: A member could not reach the leader within ``join_timeout``.
    """
    labels = session_capabilities(
        _check_labels(capabilities), max_live_sessions, session_idle_timeout
    )
    if leaders is not None:
        if leader is not None:
            raise InvalidOption("give leader or leaders, not both")
        return _start_candidate_or_member(
            [(str(h), int(p)) for h, p in leaders],
            labels,
            admin_port=admin_port or free_port(),
            bind_host=bind_host,
            advertise_host=advertise_host,
            store_path=store_path,
            secret_path=secret_path,
            timing=(reregistration_period, registration_miss_max),
            log_config=log_config,
            join_timeout=join_timeout,
            transport_limits=transport_limits,
        )
    if reregistration_period <= 0 or registration_miss_max < 1:
        raise InvalidOption(
            "reregistration_period must be > 0 and registration_miss_max >= 1, got "
            f"{reregistration_period!r} and {registration_miss_max!r}"
        )
    if leader is not None and store_path is not None:
        raise InvalidOption(
            "store_path is the leader's setting: agents on members use the leader's store"
        )
    admin_port = admin_port or free_port()
    host = advertise_host or bind_host
    name = f"{socket.gethostname()}:{admin_port}"
    caps: Capabilities = {
        **labels,
        "Admin Port": admin_port,
        "Convention Address.IPv4": (host, admin_port) if leader is None else tuple(leader),
        NODE_CAPABILITY: name,
        ROLE_CAPABILITY: "leader" if leader is None else "member",
        HOST_CAPABILITY: socket.gethostname(),
    }
    if leader is not None:
        caps[HEARTBEAT_CAPABILITY] = True
    with _convention_timing(reregistration_period, registration_miss_max):
        if leader is None:
            system = AgentSystem.start(
                admin_port=admin_port,
                capabilities=caps,
                log_config=log_config,
                bind_host=bind_host,
                advertise_host=advertise_host,
                secret_path=secret_path,
                store_path=store_path,
                transport_limits=transport_limits,
                node_name=node_name or f"node-{admin_port}",
            )
            try:
                list_nodes(system)  # creates the node watcher, which follows membership
                system.publish_services()  # now with the watcher, for clients of the leader
            except BaseException:
                system.shutdown()
                raise
            return system
        return _start_member(
            caps,
            admin_port,
            bind_host,
            advertise_host,
            secret_path,
            log_config,
            name,
            reregistration_period,
            join_timeout,
            transport_limits,
        )


def _start_member(
    caps: Capabilities,
    admin_port: int,
    bind_host: str,
    advertise_host: str | None,
    secret_path: str | os.PathLike[str] | None,
    log_config: dict[str, object] | None,
    name: str,
    period: float,
    join_timeout: float,
    transport_limits: TransportLimits | None,
) -> AgentSystem:
    """Start a member's actor system and attach it to the leader's services (see above).

    Transport security is configured before Thespian starts, as for any system; the new
    admin is marked with a fresh system id so that, should the join fail, what it forked is
    found and killed.
    """
    security = harden_transport(
        bind_host=bind_host,
        advertise_host=advertise_host,
        secret_path=secret_path,
        limits=transport_limits,
    )
    check_capabilities(caps, security)
    system_id = uuid.uuid4().hex
    with _marker_env(system_id):
        asys = ActorSystem(
            "multiprocTCPBase", capabilities=caps, logDefs=log_config, transientUnique=True
        )
    try:
        services = _find_leader_services(asys, join_timeout)
        system = AgentSystem(
            asys,
            base="multiprocTCPBase",
            admin_port=admin_port,
            owned=True,
            system_id=system_id,
            services=(services.registry, services.telemetry, services.supervisor),
            node=name,
            node_watcher=services.watcher,
        )
        heartbeat = asys.createActor(_Heartbeat)
        asys.tell(heartbeat, _Beat(period))
        _start_session_governor(asys, caps)
        probe = asys.createActor(_Probe)
        answer = asys.ask(probe, "probe", 10.0)
        if isinstance(answer, tuple):
            system.pgid = int(answer[1])
        return system
    except BaseException:
        asys.shutdown()
        kill_marked(system_id, variable=SYSTEM_MARKER)  # whatever the shutdown left
        raise


def _start_session_governor(asys: ActorSystem, caps: Capabilities) -> None:
    """Run this node's session governor from its start, when the node caps sessions.

    Each node caps the live sessions of the agents on it (``_actors/governor.py``); its
    agents find the governor by a global name, which Thespian resolves per node. Created
    here, as a child of this node's admin, it is part of the node from the start and
    outlives any leader; a supervisor elected on this node finds the same one."""
    sessions = node_sessions(caps)
    if sessions is not None:
        asys.tell(asys.createActor(SessionGovernorActor, globalName=GOVERNOR_NAME), sessions)


def _start_candidate_or_member(
    leaders: list[tuple[str, int]],
    labels: Capabilities,
    *,
    admin_port: int,
    bind_host: str,
    advertise_host: str | None,
    store_path: str | os.PathLike[str] | None,
    secret_path: str | os.PathLike[str] | None,
    timing: tuple[float, int],
    log_config: dict[str, object] | None,
    join_timeout: float,
    transport_limits: TransportLimits | None,
) -> AgentSystem:
    """Start a node of a convention with standby leaders (see ``_nodes/leadership.py``).

    Every node registers with every candidate (Thespian's list of convention leaders), keeps
    a directory that waits for the leader's services, and returns once the elected leader's
    keeper has told it the services. A candidate also runs an elector.
    """
    from .._core.errors import SystemNotRunning
    from .leadership import Elect, Elector, leader_lease_seconds

    period, miss_max = timing
    if period <= 0 or miss_max < 1:
        raise InvalidOption(
            "reregistration_period must be > 0 and registration_miss_max >= 1, got "
            f"{period!r} and {miss_max!r}"
        )
    if len(leaders) < 1 or len(set(leaders)) != len(leaders):
        raise InvalidOption(f"leaders must be distinct (host, port) pairs, got {leaders!r}")
    host = advertise_host or bind_host
    candidate = (host, admin_port) in leaders
    if candidate and store_path is None:
        raise InvalidOption(
            "a leader candidate needs store_path: the shared store decides who leads"
        )
    if not candidate and store_path is not None:
        raise InvalidOption(
            "store_path is a leader candidate's setting: agents on members use the leader's"
        )
    name = f"{socket.gethostname()}:{admin_port}"
    caps: Capabilities = {
        **labels,
        "Admin Port": admin_port,
        "Convention Address.IPv4": list(leaders),
        NODE_CAPABILITY: name,
        ROLE_CAPABILITY: "candidate" if candidate else "member",
        HOST_CAPABILITY: socket.gethostname(),
        HEARTBEAT_CAPABILITY: True,
    }
    security = harden_transport(
        bind_host=bind_host,
        advertise_host=advertise_host,
        secret_path=secret_path,
        limits=transport_limits,
    )
    check_capabilities(caps, security)
    system_id = uuid.uuid4().hex
    with _convention_timing(period, miss_max), _marker_env(system_id):
        asys = ActorSystem(
            "multiprocTCPBase", capabilities=caps, logDefs=log_config, transientUnique=True
        )
    try:
        directory = asys.createActor(ServiceDirectory, globalName=DIRECTORY_NAME)
        asys.ask(directory, ExpectServices(), 10.0)
        asys.tell(asys.createActor(_Heartbeat), _Beat(period))
        _start_session_governor(asys, caps)
        if candidate:
            assert store_path is not None
            convention = ",".join(f"{h}:{p}" for h, p in leaders)
            elect = Elect(
                os.fspath(store_path),
                convention,
                f"{host}:{admin_port}/{system_id}",
                name,
                leader_lease_seconds(),
                (host, admin_port),
                tuple(leaders),
            )
            asys.tell(asys.createActor(Elector), elect)
        services = asys.ask(directory, WhereAreServices(), join_timeout)
        if not isinstance(services, Services):
            raise SystemNotRunning(
                f"no convention leader took this node in within {join_timeout}s; check the "
                "leader addresses, the shared secret, the bind hosts and the store"
            )
        system = AgentSystem(
            asys,
            base="multiprocTCPBase",
            admin_port=admin_port,
            owned=True,
            system_id=system_id,
            store_path=os.fspath(store_path) if store_path else None,
            services=(services.registry, services.telemetry, services.supervisor),
            node=name,
            node_watcher=services.watcher,
        )
        answer = asys.ask(asys.createActor(_Probe), "probe", 10.0)
        if isinstance(answer, tuple):
            system.pgid = int(answer[1])
        return system
    except BaseException:
        asys.shutdown()
        kill_marked(system_id, variable=SYSTEM_MARKER)
        raise


def _find_leader_services(asys: ActorSystem, join_timeout: float) -> _Services:
    """Ask a finder created on the leader (capability-directed) where its services are.

    Retried until ``join_timeout``: right after a member starts, its admin may not have
    registered with the leader yet, and the capability-directed ``createActor`` then fails
    or finds no leader. The error names what to check (address, secret, bind hosts),
    since a wrong secret looks exactly like silence from here.
    """
    from .._core.errors import SystemNotRunning

    deadline = time.monotonic() + join_timeout
    last_error = "no answer"
    while time.monotonic() < deadline:
        try:
            finder = asys.createActor(_ServicesFinder)
            answer = asys.ask(finder, _WhereAreServices(), 5.0)
        except Exception as exc:  # the leader may not have answered the registration yet
            last_error = f"{type(exc).__name__}: {exc}"
            answer = None
        if isinstance(answer, _Services):
            return answer
        time.sleep(0.2)  # not a test: pacing the retries of a join
    raise SystemNotRunning(
        f"could not reach the convention leader's services within {join_timeout}s "
        f"({last_error}); check the leader address, the shared secret and the bind hosts"
    )


def _check_labels(capabilities: Options | None) -> Capabilities:
    """The node's labels, checked: plain string keys, and a positive int ``capacity``.

    A label named like one of Thespian's or the framework's capabilities would silently
    change how the node registers or is placed on; it is refused with ``InvalidOption``.
    """
    labels = dict(capabilities or {})
    for key in labels:
        if not isinstance(key, str) or key.startswith(RESERVED_PREFIXES):
            raise InvalidOption(
                f"node capability {key!r} is reserved or not a string; use plain labels "
                "such as 'claude'"
            )
    if "capacity" in labels:
        capacity = labels["capacity"]
        if isinstance(capacity, bool) or not isinstance(capacity, int) or capacity < 1:
            raise InvalidOption(f"capacity must be a positive int, got {capacity!r}")
    return labels


@contextlib.contextmanager
def _convention_timing(period: float, miss_max: int) -> Iterator[None]:
    """Set Thespian's convention timing while an admin is forked (it keeps the values).

    Thespian reads ``CONVENTION_REREGISTRATION_PERIOD`` / ``CONVENTION_REGISTRATION_MISS_MAX``
    from the environment once, at import; the admin is forked from this process, so the
    module values at fork time are the ones it uses.
    """
    from thespian.system.admin import convention

    saved = (
        convention.CONVENTION_REREGISTRATION_PERIOD,
        convention.CONVENTION_REGISTRATION_MISS_MAX,
    )
    convention.CONVENTION_REREGISTRATION_PERIOD = timedelta(seconds=period)
    convention.CONVENTION_REGISTRATION_MISS_MAX = miss_max
    try:
        yield
    finally:
        convention.CONVENTION_REREGISTRATION_PERIOD, convention.CONVENTION_REGISTRATION_MISS_MAX = (
            saved
        )


# ---------------------------------------------------------------------- fleet


def list_nodes(system: AgentSystem) -> tuple[NodeInfo, ...]:
    """The convention's nodes as the leader sees them (leader first).

    Raises:
        GenAgentError: ``system`` is not a convention node, or the leader did not answer.
    """
    watcher = system.node_watcher
    if watcher is None:
        if not system.leads_agents:
            raise GenAgentError("this system is not a convention node")
        watcher = system.asys.createActor(_NodeWatcher, globalName=NODES_NAME)
        system.node_watcher = watcher
    from .._api import calls
    from .._core.errors import AskTimeout

    def nodes_from(address: ActorAddress) -> WireMessage:
        """Ask the node watcher at ``address`` for the node list (10 s at most)."""
        return system.exchange(address, _ListNodes(), lambda m: isinstance(m, tuple), timeout=10.0)

    try:
        answer = nodes_from(watcher)
    except AskTimeout:
        # With standby leaders the watcher moves with the lead: follow it once.
        if not calls.run(system, calls.services_moved(system)):
            raise
        answer = nodes_from(system.node_watcher)
    return tuple(answer)


def wait_for_nodes(
    system: AgentSystem, count: int, *, timeout: float = 30.0
) -> tuple[NodeInfo, ...]:
    """Wait until the leader knows ``count`` nodes (itself included); return them.

    Raises:
        AskTimeout: Fewer nodes after ``timeout`` seconds.
    """
    from .._core.errors import AskTimeout

    deadline = time.monotonic() + timeout
    while True:
        nodes = list_nodes(system)
        if len(nodes) >= count:
            return nodes
        if time.monotonic() >= deadline:
            raise AskTimeout(f"{len(nodes)} node(s) joined within {timeout}s, expected {count}")
        time.sleep(0.1)  # pacing a poll with a deadline


def list_fleet(system: AgentSystem) -> tuple[AgentEntry, ...]:
    """Every registered agent with the node it runs on (``AgentEntry.node``).

    One question to the registry, not one per agent: the fleet view of a convention must
    stay cheap however many agents run, and a busy agent is never asked anything.
    """
    reply = system.exchange(
        system.registry, ListAgents(), lambda m: isinstance(m, AgentList), timeout=10.0
    )
    return tuple(reply.agents)


# ---------------------------------------------------------------------- command line


def main(argv: list[str] | None = None) -> int:
    """Run one node until SIGINT/SIGTERM: the ``genagent-node`` command (``--help``).

    Prints one line ``node <name> admin_port <port> pgid <pgid> ready`` once it serves.
    ``--init-secret`` only creates the node secret (if missing) and prints its path.
    """
    import argparse
    import signal
    import threading

    parser = argparse.ArgumentParser(
        prog="genagent-node", description="Run a node of a multi-host convention."
    )
    parser.add_argument(
        "--init-secret",
        action="store_true",
        help="create the node secret (mode 600) if it is missing, print its path, and exit",
    )
    parser.add_argument(
        "--leader",
        action="append",
        default=[],
        help="HOST:PORT of the leader (omit to run the leader); repeat it to list the leader "
        "candidates in order (standby leaders: every node gets the same list)",
    )
    parser.add_argument("--admin-port", type=int, default=None)
    parser.add_argument("--bind-host", default="127.0.0.1")
    parser.add_argument("--advertise-host", default=None)
    parser.add_argument("--label", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--capacity", type=int, default=None)
    parser.add_argument(
        "--max-live-sessions",
        default="auto",
        help="this node's cap on live CLI sessions: a number, 'auto' (sized from the host's "
        "memory; the default) or 0 (no cap)",
    )
    parser.add_argument(
        "--session-idle-timeout",
        type=float,
        default=None,
        help="seconds after which an idle session is retired even when nobody waits",
    )
    parser.add_argument(
        "--store", default=None, help="durable store: SQLite file or postgresql:// URL (leader)"
    )
    parser.add_argument("--secret-file", default=None)
    parser.add_argument("--reregistration-period", type=float, default=5.0)
    parser.add_argument("--registration-miss-max", type=int, default=2)
    parser.add_argument(
        "--max-frame-bytes",
        type=int,
        default=None,
        help="largest message frame sent or accepted (default: $GENAGENT_MAX_FRAME_BYTES "
        "or 64 MiB); the same on every node",
    )
    args = parser.parse_args(argv)
    if args.init_secret:
        from .._os.security import load_or_create_secret, secret_file

        load_or_create_secret(args.secret_file)
        print(secret_file(args.secret_file), flush=True)
        return 0

    candidates: list[tuple[str, int]] = []
    for given in args.leader:
        host, _, port = given.rpartition(":")
        if not host or not port.isdigit():
            parser.error(f"--leader must be HOST:PORT, got {given!r}")
        candidates.append((host, int(port)))
    leader = candidates[0] if len(candidates) == 1 else None
    leaders = candidates if len(candidates) > 1 else None
    labels: Capabilities = {}
    for label in args.label:
        key, sep, value = label.partition("=")
        if not sep or not key:
            parser.error(f"--label must be KEY=VALUE, got {label!r}")
        labels[key] = value
    if args.capacity is not None:
        labels["capacity"] = args.capacity
    max_live: int | str = args.max_live_sessions
    if max_live != "auto":
        if not str(max_live).isdigit():
            parser.error(f"--max-live-sessions must be a number or 'auto', got {max_live!r}")
        max_live = int(max_live)

    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    system = start_node(
        leader=leader,
        leaders=leaders,
        admin_port=args.admin_port,
        bind_host=args.bind_host,
        advertise_host=args.advertise_host,
        capabilities=labels,
        store_path=args.store,
        secret_path=args.secret_file,
        reregistration_period=args.reregistration_period,
        registration_miss_max=args.registration_miss_max,
        max_live_sessions=max_live,
        session_idle_timeout=args.session_idle_timeout,
        transport_limits=(
            None
            if args.max_frame_bytes is None
            else TransportLimits(max_frame_bytes=args.max_frame_bytes)
        ),
    )
    try:
        print(
            f"node {system.node} admin_port {system.admin_port} pgid {system.pgid} ready",
            flush=True,
        )
        stop.wait()
    finally:
        system.shutdown()
    return 0


if __name__ == "__main__":
    # Run the module's own copy: actor classes must not come from ``__main__``.
    from genagent_thespian._nodes.convention import main as _main

    raise SystemExit(_main())
