"""``AgentSupervisor``: the parent of every agent of one actor system.

It starts agents (``StartAgent``), stops them for good (``StopAgent``), keeps the registry
in step with which agents are alive, tells watchers when an agent exits (``AgentDown``), and
decides what happens when an agent's process dies (``ChildActorExited``). Restart
decisions come from the pure :class:`~genagent_thespian._core.restart_policy.RestartPolicy`.

``ChildActorExited`` can arrive twice for one exit; handling is idempotent because the
supervisor forgets an address on the first notice.

One agent's life, as the supervisor sees it (``_ChildState``)::

    StartAgent -> STARTING --_AgentReady--> RUNNING --StopAgent--> STOPPING --exit--> gone
                     |                        |  |                 (_ShutdownAgent, then
                     | exit, or a failed      |  '--_Hibernating-> ActorExitRequest, then
                     | restart's init         |     HIBERNATED      SIGKILL)
                     v                        |        | a caller or a timer: STARTING
                 RESTARTING <--exit, policy---'
                     | back-off (_RestartDue): STARTING, next incarnation
                     '-- the policy gives up: gone, watchers get AgentDown

A first start that fails (``_AgentInitFailed``, or an exit before ready) is not restarted:
the starter gets the ``Failure`` and the name is gone, since a bad spec would fail again.

Which message answers whom: the starter gets ``AgentStarted`` (sent by the registry once
the name resolves, so the name works the moment ``start_agent`` returns) or a ``Failure``
with the typed reason; a stopper gets ``Stopped`` once the process is gone; ``StopAll``
gets ``Stopped(None)`` when no agent is left; a ``WatchAgent`` gets one ``AgentDown``.
Every registry update is numbered (``_tell_registry``), so one overtaken in transit cannot
undo a later one.

Why so much care about exits: Thespian reports a child's exit without saying which
incarnation it was, may report it twice, reuses TCP ports (a late notice can name the
current incarnation's address), reports nothing for a process killed before it connected
back, and leaves the children of a SIGKILLed actor running. So each incarnation reports
its pid at once (``_AgentBorn``), an exit is believed only once that process (pid and start
time) is gone, every timer carries the incarnation it was set for, and what a dead agent
left (worker, CLI process groups, marked processes) is killed here or by a
``NodeSweeper`` on its node.

In a convention the elected leader's supervisor also places agents on nodes
(``NodesChanged``), treats the agents of a lost node as exited (``NodeLost``), and after a
failover re-adopts the agents the nodes' keepers report (``Lead``, ``NodeCensus``) before
restarting the durable agents nobody reported.
"""

from __future__ import annotations

import contextlib
import dataclasses
import enum
import itertools
import os
import pickle
import signal
import time
import uuid
from collections.abc import Hashable
from dataclasses import dataclass, field

import psutil
from thespian.actors import Actor, ActorExitRequest, ChildActorExited, WakeupMessage

from .._core.backend import resolve_backend
from .._core.classref import UnimportableClass
from .._core.deadlines import Deadlines
from .._core.errors import (
    AgentAlreadyExists,
    AgentNotFound,
    AgentStartFailed,
    AgentStopped,
    GenAgentError,
)
from .._core.log import get_logger
from .._core.placement import NoNodeWithRoom, choose_node
from .._core.protocol import (
    NODE_CAPABILITY,
    AddressBook,
    _Adopted,
    _AgentBorn,
    _AgentInitFailed,
    _AgentProcesses,
    _AgentReady,
    _GovernorAt,
    _Hibernated,
    _Hibernating,
    _InitAgent,
    _Register,
    _Restarting,
    _SessionGone,
    _ShutdownAgent,
    _TelemetryBatch,
    _TelemetryLeave,
    _Unregister,
    _Wake,
    _WhereIsGovernor,
)
from .._core.restart_policy import ExitKind, RestartAction, RestartPolicy
from .._core.types import (
    ActorAddress,
    AgentName,
    Capabilities,
    ClassSpec,
    MessageHandler,
    Metadata,
    OptionValue,
    Sender,
)
from .._durable.location import open_store
from .._durable.record import answer_stored_callers, delete_stored_agent
from .._durable.store import StoreError
from .._os.heap import share_inherited_heap
from .._os.processes import (
    AGENT_MARKER,
    SYSTEM_MARKER,
    kill_marked,
    kill_process,
    kill_process_group,
    owner_alive,
    owner_identity,
)
from ..messages import (
    AgentDown,
    AgentSpec,
    AgentStarted,
    Failure,
    StartAgent,
    StopAgent,
    Stopped,
    WatchAgent,
)
from .agent import AgentActor
from .directory import LocalAgent, Services
from .governor import GOVERNOR_NAME, SessionGovernorActor, node_sessions
from .keeper import AdoptedExited, KeepNode, NodeCensus, NodeKeeper
from .reaper import ProcessReaper, StartReaping, reap_interval
from .sweeper import NodeSweeper, SweepAgent
from .unexpected import answer_unexpected

__all__ = [
    "CENSUS_SECONDS",
    "SUPERVISOR_NAME",
    "AgentSupervisor",
    "Boot",
    "Booted",
    "Lead",
    "NodeLost",
    "NodesChanged",
    "StopAll",
]

SUPERVISOR_NAME = "genagent_thespian.supervisor"

#: Seconds an agent has to answer ``_ShutdownAgent`` before it is told to exit.
STOP_GRACE = 15.0
#: Seconds an agent has to exit after ``ActorExitRequest`` before it is killed.
EXIT_GRACE = 5.0
#: Seconds a restarted agent has to report ready before the restart counts as failed.
RESTART_START_DEADLINE = 120.0
#: Seconds an agent's process may take to end after Thespian announced its exit; a notice
#: whose incarnation's process still runs after that was about an earlier incarnation.
_EXIT_CONFIRM_SECONDS = 3.0
#: Seconds a new incarnation has to report its pid (it does so before anything else).
_BIRTH_REPORT_SECONDS = 10.0
#: The incarnation of a recent exit that was a hibernation (matches no running incarnation).
_NO_INCARNATION = -1
#: Most remembered process addresses (``_child_at``): a few per agent, bounded for fleets.
_ADDRESS_NOTES_BOUND = 50_000
#: Seconds after an exit notice before the other agents are checked for an unannounced exit
#: (the wakeup runs after Thespian's own clean-up of that notice, which can drop others).
_LOST_EXIT_SWEEP_SECONDS = 0.05
#: Seconds between checks that an announced exit happened.
_EXIT_CONFIRM_INTERVAL = 0.02
#: Seconds between checks that the process owning the system still runs.
OWNER_CHECK_INTERVAL = 0.5
#: Seconds during which a repeated exit notice for a handled address is a duplicate.
_RECENT_EXIT_SECONDS = 30.0
#: Seconds a new convention leader waits for the nodes' census before it restarts the
#: durable agents nobody reported (they ran on the dead leader's host).
CENSUS_SECONDS = 2.0
#: Seconds after which the census ends even if a listed node never reported (a dead node
#: Thespian has not dropped yet): its agents are then resumed elsewhere.
CENSUS_MAX_SECONDS = 10.0
#: Seconds before a keeper that could not be created on its node is tried again.
KEEPER_RETRY_SECONDS = 1.0

_log = get_logger("genagent_thespian.supervisor")


@dataclass(frozen=True, slots=True)
class Boot:
    """Client -> supervisor at application boot: the shared services' addresses."""

    registry: ActorAddress
    telemetry: ActorAddress
    node: str
    store_path: str | None = None
    #: ``(pid, start time)`` of the process that owns the system: when it is gone (even
    #: SIGKILLed), the supervisor stops every agent and ends the system. ``None``: a node
    #: meant to outlive whoever started it (or an in-process base with nothing to end).
    owner: tuple[int, float] | None = None


@dataclass(frozen=True, slots=True)
class Booted:
    """Supervisor -> client: booted; ``pid``/``pgid`` identify the actor system's processes."""

    pid: int
    pgid: int


@dataclass(frozen=True, slots=True)
class StopAll:
    """Client -> supervisor: stop every agent (orderly shutdown); answered ``Stopped(None)``."""

    reason: str = "shutdown"


@dataclass(frozen=True, slots=True)
class NodeLost:
    """Node watcher -> supervisor: convention node ``node`` is gone with all its agents.

    Thespian 4.0.1 does not tell a parent that its children on a dead member are gone (the
    bookkeeping for it is never filled in), so the leader's node watcher does.
    """

    node: str


@dataclass(frozen=True, slots=True)
class Lead:
    """Elector -> supervisor: this supervisor leads the convention under ``services.epoch``.

    From then on it keeps a :class:`~genagent_thespian._actors.keeper.NodeKeeper` on every
    node, re-adopts the agents they report, and once every live node reported (at least
    :data:`CENSUS_SECONDS`, at most :data:`CENSUS_MAX_SECONDS` after) restarts the
    stored durable agents no node reported (``_nodes/leadership.py``).
    """

    services: Services
    leaders: tuple[tuple[str, int], ...] = ()  # the candidates, this leader first


@dataclass(frozen=True, slots=True)
class NodesChanged:
    """Node watcher -> supervisor: the convention's live nodes and their capabilities.

    Sent whenever membership changes. From the first one on, the supervisor places agents
    itself (``_core/placement.py``: capacity enforced, spread by load) instead of leaving
    the choice to Thespian's first matching node.
    """

    nodes: tuple[tuple[str, tuple[tuple[str, OptionValue], ...]], ...]


class _ChildState(enum.Enum):
    """Where one supervised agent is in its life, as the supervisor sees it."""

    STARTING = "starting"  # created; waiting for _AgentReady (or its start to fail)
    RUNNING = "running"  # ready and registered under its name
    STOPPING = "stopping"  # asked to stop (or to exit); its exit notice ends it for good
    RESTARTING = "restarting"  # its process is gone; a restart is scheduled (no address)
    HIBERNATED = "hibernated"  # idle, its process ended on purpose; a call or timer wakes it


@dataclass(frozen=True, slots=True)
class _RestartDue:
    """Timer: the back-off before restarting incarnation ``incarnation`` of ``name`` is over."""

    name: AgentName
    incarnation: int


@dataclass(frozen=True, slots=True)
class _WakeDue:
    """Timer: the earliest timer of hibernated incarnation ``incarnation`` of ``name`` is due."""

    name: AgentName
    incarnation: int


@dataclass(frozen=True, slots=True)
class _StartCheck:
    """Timer: a restarted incarnation should have reported ready by now."""

    name: AgentName
    incarnation: int


@dataclass(frozen=True, slots=True)
class _ExitDue:
    """Timer: a stopping agent should have answered ``_ShutdownAgent`` by now; make it exit."""

    name: AgentName
    address: ActorAddress
    incarnation: int


@dataclass(frozen=True, slots=True)
class _KillDue:
    """Timer: an agent told to exit should be gone by now; SIGKILL its process."""

    name: AgentName
    address: ActorAddress
    incarnation: int


@dataclass(frozen=True, slots=True)
class _OwnerCheck:
    """Timer: time to check that the process owning this system still runs."""


@dataclass(frozen=True, slots=True)
class _EndSystem:
    """Timer: the owner is gone and the agents had their time to stop; end every process."""


@dataclass(frozen=True, slots=True)
class _BornCheck:
    """Timer: a spawned incarnation should have reported its process by now.

    ``after_notice``: set when an exit notice arrived for an address not yet heard from."""

    name: AgentName
    address: ActorAddress
    incarnation: int
    after_notice: bool


@dataclass(frozen=True, slots=True)
class _LostExitSweep:
    """Timer: look for local agents whose process ended without an exit notice.

    Thespian 4.0.1 drops the notice of a child that dies while the notice of another child
    is handled: after each ``ChildActorExited`` it removes every dead child from its list
    (``_childExited``), so its SIGCHLD handler later finds nothing to announce."""


@dataclass(frozen=True, slots=True)
class _ExitCheck:
    """Timer: look again whether an incarnation announced as exited is really gone."""

    name: AgentName
    address: ActorAddress
    incarnation: int
    deadline: float


@dataclass(frozen=True, slots=True)
class _KeepNodes:
    """Timer: try again to put a keeper on the nodes that have none."""


@dataclass(frozen=True, slots=True)
class _CensusDue:
    """Timer: a new leader's census may end (``final``: it must, see :class:`Lead`)."""

    final: bool = False


_Deadline = (
    _RestartDue
    | _WakeDue
    | _StartCheck
    | _ExitDue
    | _KillDue
    | _OwnerCheck
    | _EndSystem
    | _BornCheck
    | _LostExitSweep
    | _ExitCheck
    | _KeepNodes
    | _CensusDue
)


@dataclass
class _Child:
    """The supervisor's record of one agent, kept under its name across incarnations.

    The address changes with every incarnation (and is ``None`` while restarting or asleep);
    the name, spec, restart policy and waiters stay. ``incarnation`` is what every timer and
    exit notice is checked against, so one meant for a predecessor does nothing.
    """

    spec: AgentSpec
    address: ActorAddress
    state: _ChildState = _ChildState.STARTING
    starter: Sender = None
    stop_waiters: list[ActorAddress] = field(default_factory=list)
    stop_reason: str = ""
    pid: int = 0
    identity: tuple[int, float] | None = None  # (pid, start time) of this incarnation
    born: bool = False  # this incarnation's process reported itself (_AgentBorn)
    incarnation: int = 0
    remains: _AgentProcesses = field(default_factory=lambda: _AgentProcesses(0))
    instance_id: str = field(default_factory=lambda: uuid.uuid4().hex)
    policy: RestartPolicy | None = None
    exit_kind: ExitKind = ExitKind.KILLED
    node: str = ""  # the node it runs on (another host's pids mean nothing here)
    unplaced: bool = False  # a restart waiting for a node with room
    adopted: bool = False  # started by a previous leader; a keeper reports its exit
    governor: Sender = None  # the session governor of its node, which counts its session

    @property
    def shareable_address(self) -> Sender:
        """The address to put inside a message to another actor, or ``None``.

        Until a new process has reported itself, Thespian knows its address only locally
        (the child connects back to its parent when it starts). A message that carries such
        an address cannot be pickled, and Thespian holds it back until the address resolves:
        for a process killed before it reported, never. That held back the registry's
        ``_Unregister`` after a give-up, leaving the name "restarting" for good.
        """
        return self.address if self.born else None

    timers: tuple[tuple[str, float, object], ...] = ()  # send_after timers kept while it sleeps
    slept_at: float | None = None  # wall-clock time it hibernated; set until it is woken
    wakes: int = 0  # incarnations started to wake it (status does not count them as restarts)
    warm_worker: bool = False  # the next incarnation wakes for a waiting caller


class AgentSupervisor(Actor):
    """Starts, stops and watches agents (see the module docstring).

    Every agent is this actor's child, so an agent's death reaches it as Thespian's
    ``ChildActorExited`` even when the agent was SIGKILLed. It keeps one ``_Child`` per name
    with an explicit state (``_ChildState``); callers hold names, never addresses, so a
    restarted agent keeps working for them through the registry.
    """

    def __init__(self, capabilities: Capabilities | None = None) -> None:
        """Empty until ``Boot`` names the services; the node's session cap comes from capabilities.

        Thespian passes no constructor arguments, so the registry, hub, node and store come in
        ``Boot``; every client that attaches sends ``Boot`` again, and only the first counts.
        """
        super().__init__()
        caps = capabilities or {}
        self._forks = caps.get("Thespian ActorSystem Name") != "simpleSystem"
        if self._forks:
            share_inherited_heap()  # the agents it forks inherit these pages too
        # Absent (a node started without start_system): the host's default, as "auto".
        self._sessions = node_sessions(caps)
        self._governor: Sender = None  # the node's session governor, when capped
        self._registry: Sender = None
        self._telemetry: Sender = None
        self._node = ""
        self._store_path: str | None = None
        self._children: dict[AgentName, _Child] = {}
        self._watchers: dict[AgentName, AddressBook] = {}
        self._stop_all_waiters: list[ActorAddress] = []
        # (address, incarnation, when) of handled exits
        self._recent_exits: list[tuple[AgentName, int, float]] = []
        self._unplaced: dict[AgentName, None] = {}  # names of restarts waiting for a node, in order
        self._names_at: dict[
            Hashable, AgentName
        ] = {}  # transport address -> agent name (_child_at)
        self._sleeping_at: dict[Hashable, AgentName] = {}  # addresses of hibernated processes
        self._lost_exit_sweep_armed = False  # a _LostExitSweep wakeup is pending
        # every timer of this actor, under one Thespian wakeup
        self._timers: Deadlines[_Deadline] = Deadlines()
        self._timer_keys = itertools.count()
        self._owner: tuple[int, float] | None = None
        self._registry_seq = 0
        self._owner_gone = False
        self._nodes: dict[str, Capabilities] | None = None  # None: not a convention leader
        self._run = uuid.uuid4().hex  # this boot of the system (see _InitAgent.run)
        # An agent process started ahead, not yet any agent's (see _take_spare).
        self._spare: ActorAddress | None = None
        self._stopping_all = False  # StopAll began: no spare is made again
        self._lead: Lead | None = None  # set when elected among standby leaders
        self._kept: set[str] = set()  # nodes with a keeper of this leader
        self._keepers: list[
            tuple[ActorAddress, str]
        ] = []  # (keeper address, node); addresses do not hash
        self._censused: set[str] = set()  # nodes whose keeper reported
        self._census_open = False  # elected, and the lost agents not resumed yet
        self._census_ready = False  # the census's shortest window has passed
        self._silent: set[str] = set()  # nodes that gave no census: not placed on

    def receiveMessage(self, message: object, sender: ActorAddress) -> None:
        """Dispatch by type. Never raises (a raise would re-deliver a start)."""
        try:
            handler = _HANDLERS.get(type(message))
            if handler is not None:
                handler(self, message, sender)
            else:
                answer_unexpected(self, "the agent supervisor", message, sender)
        except Exception:
            _log.exception("supervisor failed handling %s", type(message).__name__)

    # ------------------------------------------------------------------ boot

    def _on_boot(self, message: Boot, sender: ActorAddress) -> None:
        """Learn the system's services once; answer with this process's pid and group.

        A second ``Boot`` (a client attaching again) changes nothing. The pid and group let
        ``AgentSystem.shutdown`` sweep every process of the system afterwards."""
        if self._registry is None:
            self._registry = message.registry
            self._telemetry = message.telemetry
            self._node = message.node
            self._store_path = message.store_path
            self._owner = message.owner
            self._watch_owner()
            if self._sessions is not None:
                self._governor = self.createActor(SessionGovernorActor, globalName=GOVERNOR_NAME)
            if message.store_path:
                reaper = self.createActor(ProcessReaper)
                self.send(reaper, StartReaping(message.store_path, reap_interval()))
        self.send(sender, Booted(os.getpid(), os.getpgid(0)))

    def _on_where_is_governor(self, message: _WhereIsGovernor, sender: ActorAddress) -> None:
        """Name this node's session governor (``None``: live sessions are not capped)."""
        self.send(sender, _GovernorAt(self._governor))

    # ------------------------------------------------------------------ start

    def _on_start(self, message: StartAgent, sender: ActorAddress) -> None:
        """Start a new agent under its name, refusing a name already in use.

        The starter gets ``AgentStarted`` only once the agent's ``init_agent`` succeeded
        (``_on_ready``), or the typed reason it did not (``_on_init_failed``)."""
        spec = message.spec
        if spec.name in self._children:
            error = AgentAlreadyExists(
                "an agent with that name is already running", agent=spec.name
            )
            self.send(sender, Failure(error))
            return
        unimportable = next(
            (c for c in (spec.impl, spec.backend) if isinstance(c, UnimportableClass)), None
        )
        if unimportable is not None:
            _log.error("agent %r not started: %s", spec.name, unimportable.problem)
            self.send(sender, Failure(AgentStartFailed(unimportable.problem, agent=spec.name)))
            return
        child = _Child(spec=spec, address=None, starter=sender, policy=RestartPolicy.for_spec(spec))
        try:
            node = self._place(spec)
        except NoNodeWithRoom as exc:
            self.send(sender, Failure(AgentStartFailed(str(exc), agent=spec.name)))
            self._notify_watchers(spec.name, "crashed")
            return
        self._children[spec.name] = child
        self._spawn(child, node)

    def _place(self, spec: AgentSpec) -> str:
        """The node to run ``spec`` on (``""``: let Thespian choose, outside a convention).

        Load counts the agents starting, running or stopping on each node (all hold a
        process there); nodes that gave no census after a failover are left out, since
        they may be dead ones Thespian has not dropped yet.
        """
        if self._nodes is None:
            return ""
        load: dict[str, int] = {}
        live = (_ChildState.STARTING, _ChildState.RUNNING, _ChildState.STOPPING)
        for other in self._children.values():
            if other.node and other.state in live:
                load[other.node] = load.get(other.node, 0) + 1
        nodes = {n: caps for n, caps in self._nodes.items() if n not in self._silent}
        return choose_node(nodes, dict(spec.placement), load, self._node)

    def _spawn(self, child: _Child, node: str) -> None:
        """Create the agent's actor on ``node`` and send it its spec.

        Used for the first start and for every restart: a restart is a new process with the
        next incarnation and a new instance id (what its CLIs are marked with)."""
        # Thespian asks AgentActor.actorSystemCapabilityCheck on each node: the placement
        # labels, plus the node's own name once the supervisor has chosen one.
        requirements = dict(child.spec.placement)
        if node:
            requirements[NODE_CAPABILITY] = node
        _preload_backend(child.spec.backend)
        waking = child.slept_at is not None  # (cleared once the woken incarnation is ready)
        child.address = (self._take_spare(requirements) if waking else None) or self.createActor(
            AgentActor, targetActorRequirements=requirements or None
        )
        timers, child.timers = child.timers, ()
        child.state = _ChildState.STARTING
        child.node = node
        child.unplaced = False
        self._unplaced.pop(child.spec.name, None)
        child.born = False
        self._after(
            _BIRTH_REPORT_SECONDS,
            _BornCheck(child.spec.name, child.address, child.incarnation, False),
        )
        self.send(
            child.address,
            _InitAgent(
                child.spec,
                self._registry,
                self._telemetry,
                self.myAddress,
                self._node,
                incarnation=child.incarnation,
                instance_id=child.instance_id,
                store_path=self._store_path,
                run=self._run,
                timers=timers,
                governor=self._governor,
                wakes=child.wakes,
                warm_worker=child.warm_worker,
            ),
        )
        child.warm_worker = False
        if waking:
            self._make_spare()  # the next wake-up finds one (made after this one's start)

    def _take_spare(self, requirements: Capabilities) -> ActorAddress | None:
        """The spare agent process, for an agent that may run on this node; ``None`` if none.

        Waking a hibernated agent paid for two process creations in a row: the agent's
        (forked by this supervisor, then the new process's start-up until it can receive
        its spec) and then its worker's. With hibernating agents about, one agent process
        is kept started ahead: a wake-up sends its spec to that one, and a new spare is
        made after the wake-up's start has gone out. Only for wake-ups (first starts and
        restarts create their process: a start taking the spare made every agent that
        went to sleep fork a new one, and registering thousands paid twice), only outside
        conventions (the spare
        runs here, and a convention places agents on nodes) and for agents without
        placement labels; the spare becomes the agent at ``_InitAgent`` (its marker, its
        record, its worker), so nothing of another agent is in it.
        """
        if requirements or self._nodes is not None:
            return None  # placement decides where it runs: the spare stays for a wake-up
        spare, self._spare = self._spare, None
        return spare

    def _make_spare(self) -> None:
        """Start a spare agent process if there is none (see ``_take_spare``)."""
        if self._spare is None and self._forks and self._nodes is None and not self._stopping_all:
            self._spare = self.createActor(AgentActor)

    def _on_ready(self, message: _AgentReady, sender: ActorAddress) -> None:
        """The agent initialized: register its name, then answer its starter.

        The registry sends the starter's ``AgentStarted`` after the name is registered, so a
        caller can use the name as soon as ``start_agent`` returns.

        An agent stopped while it was starting stays stopping: the ``ActorExitRequest`` sent
        then is on its way, and its exit answers the stoppers (and its starter). Made
        running and registered here, its exit would be taken for a crash and restarted,
        and the stoppers never answered (found by ``tests/api/test_stops_stateful.py``)."""
        child = self._children.get(message.name)
        if child is None or child.address != sender:
            return
        stopping = child.state is _ChildState.STOPPING
        if not stopping:
            child.state = _ChildState.RUNNING
        child.pid = message.pid
        child.node = message.node or self._node
        child.governor = message.governor
        if self._is_local(child):
            # Keep the identity read at birth: a process gone by now has none to read.
            child.identity = child.identity or self._identity_of(message.pid)
            if self._ended_unannounced(child):
                self._arm_lost_exit_sweep()
        else:
            child.identity = None
        if stopping:
            return
        then = ((child.starter, AgentStarted(message.name, sender)),) if child.starter else ()
        child.starter = None
        register = _Register(
            message.name,
            sender,
            child.node,
            then=then,
            durable=child.spec.durable,
            incarnation=child.incarnation,
        )
        self._tell_registry(register)
        if child.slept_at is not None:
            slept, child.slept_at = time.time() - child.slept_at, None
            metadata = {"agent": message.name, "incarnation": child.incarnation}
            self._emit("agent.woken", {**metadata, "slept_seconds": slept})
            return
        if child.incarnation > 0:
            self._emit("agent.restarted", {"agent": message.name, "incarnation": child.incarnation})
        self._emit("agent.started", {"agent": message.name, "incarnation": child.incarnation})

    def _on_init_failed(self, message: _AgentInitFailed, sender: ActorAddress) -> None:
        """The agent could not initialize.

        On a first start the caller gets the error and nothing restarts (a bad spec would
        fail again); on a restart it counts as a crash for the restart policy."""
        child = self._children.get(message.name)
        if child is None or child.address != sender:
            return
        if child.starter is not None:  # a first start: the caller hears why, nothing restarts
            starter, child.starter = child.starter, None
            self._forget(child, then=self._stopped_replies(child))  # stoppers, if any
            self.send(starter, Failure(message.error))
            self.send(sender, ActorExitRequest())
        else:  # a restart that could not resume: it goes through the restart policy now
            _log.error("agent %r could not restart: %s", message.name, message.error)
            child.exit_kind = ExitKind.CRASHED
            self.send(sender, ActorExitRequest())
            self._handle_exit(child, sender)

    # ------------------------------------------------------------------ stop

    def _on_stop(self, message: StopAgent, sender: ActorAddress) -> None:
        """``stop()``: end an agent for good; ``sender`` gets ``Stopped`` once it is gone.

        A second stop of an agent already stopping joins the first: both callers are
        answered by the same exit. An unknown name is answered ``AgentNotFound`` at once.
        """
        child = self._children.get(message.name)
        if child is None:
            self.send(sender, Failure(AgentNotFound("no agent has that name", agent=message.name)))
            return
        self._begin_stop(child, message.reason, sender)

    def _begin_stop(
        self, child: _Child, reason: str, waiter: Sender, *, keep_record: bool = False
    ) -> None:
        """Stop ``child`` in the way its state allows, answering ``waiter`` when it is gone.

        A running agent is asked to stop (it answers its callers and ends its session) and
        is made to exit after ``STOP_GRACE`` if it does not; one still starting has nothing to
        answer and exits at once; one between restarts has no process, so its durable
        record's callers are answered here and the record deleted. ``keep_record`` (a system
        shutdown) keeps a durable agent's record for the next run."""
        if waiter is not None:
            child.stop_waiters.append(waiter)
        if child.state is _ChildState.STOPPING:
            return
        if child.state in (_ChildState.RESTARTING, _ChildState.HIBERNATED):
            # No process to ask: it is gone already (or asleep, its record up to date).
            child.state = _ChildState.STOPPING
            if child.spec.durable and self._store_path and not keep_record:
                answer_stored_callers(self._store_path, child.spec, "stopped", self.send)
                delete_stored_agent(self._store_path, child.spec)
            self._forget(child, then=self._stopped_replies(child))
            self._check_stop_all()
            return
        if child.state is _ChildState.STARTING:
            # Not initialized yet: it has nothing to answer, so it can exit right away.
            child.state = _ChildState.STOPPING
            child.stop_reason = reason
            self.send(child.address, ActorExitRequest())
            self._after(EXIT_GRACE, _KillDue(child.spec.name, child.address, child.incarnation))
            return
        child.state = _ChildState.STOPPING
        child.stop_reason = reason
        self._tell_registry(_Unregister(child.spec.name, child.address))
        self.send(child.address, _ShutdownAgent(reason, keep_record=keep_record))
        self._after(STOP_GRACE, _ExitDue(child.spec.name, child.address, child.incarnation))

    @staticmethod
    def _stopped_replies(child: _Child) -> tuple[tuple[ActorAddress, object], ...]:
        """What a stopped agent's callers get: ``Stopped`` for each stopper, and
        ``AgentStopped`` for a starter still waiting (stopped before it was ready)."""
        name = child.spec.name
        replies: list[tuple[ActorAddress, object]] = [
            (w, Stopped(name)) for w in child.stop_waiters
        ]
        if child.starter is not None:
            error = AgentStopped("the agent was stopped before it finished starting", agent=name)
            replies.append((child.starter, Failure(error)))
            child.starter = None
        return tuple(replies)

    def _on_agent_processes(self, message: _AgentProcesses, sender: ActorAddress) -> None:
        """Remember what to kill should this agent die: its worker and its CLI process groups.

        Thespian leaves the children of a SIGKILLed actor running, so the supervisor ends them."""
        child = self._child_at(sender)
        if child is not None:
            child.remains = message

    def _on_agent_stopped(self, message: Stopped, sender: ActorAddress) -> None:
        """The agent answered everything pending and ended its session: let it exit.

        The agent does not exit by itself: the supervisor ends it, and arms a SIGKILL for
        ``EXIT_GRACE`` later, so a stop completes even if the process hangs on its way out.
        ``Stopped`` reaches the stopper only with the exit notice (``_handle_exit``).
        """
        child = self._child_at(sender)
        if child is not None:
            self.send(sender, ActorExitRequest())
            self._after(EXIT_GRACE, _KillDue(child.spec.name, sender, child.incarnation))

    def _on_stop_all(self, message: StopAll, sender: ActorAddress) -> None:
        """Orderly shutdown: stop every agent, answer ``Stopped(None)`` when none is left.

        Durable agents keep their records (the next run resumes them). ``sender`` is
        ``None`` when the supervisor shuts down on its own (its owner is gone)."""
        if sender is not None:
            self._stop_all_waiters.append(sender)
        self._stopping_all = True
        if self._spare is not None:
            self.send(self._spare, ActorExitRequest())
            self._spare = None
        for child in list(self._children.values()):
            self._begin_stop(child, message.reason, None, keep_record=True)
        self._check_stop_all()

    def _check_stop_all(self) -> None:
        """Answer the shutdown waiters once the last agent is gone (and end an orphaned system).

        Called after every forgotten agent, so ``StopAll`` is answered by the last exit,
        whichever way it came (a clean stop, a kill after the grace, a lost node). When the
        owner is gone there is nobody to shut Thespian down, so the system ends itself.
        """
        if self._children:
            return
        waiters, self._stop_all_waiters = self._stop_all_waiters, []
        for waiter in waiters:
            self.send(waiter, Stopped(None))
        if self._owner_gone:
            self._end_own_system()

    # ------------------------------------------------------------------ hibernation

    def _on_hibernating(self, message: _Hibernating, sender: ActorAddress) -> None:
        """A running agent saved its record and is ending its process: keep it asleep.

        Its name stays registered without an address (the registry wakes it for a caller,
        see ``_on_wake``); its timers are kept here and the earliest wakes it. Its process
        exit that follows is expected: the child has no address any more, so the notice
        matches nobody. An agent being stopped meanwhile is left to its stop."""
        child = self._child_at(sender)
        if child is None or child.state is not _ChildState.RUNNING:
            return
        child.state = _ChildState.HIBERNATED
        child.timers = message.timers
        child.slept_at = time.time()
        if self._telemetry is not None:
            self.send(self._telemetry, _TelemetryLeave(sender))
        self._expect_hibernation_exit(sender, child.spec.name)
        child.address = None
        self._tell_registry(_Hibernated(child.spec.name, sender, message.status, self.myAddress))
        self._emit(
            "agent.hibernated",
            {
                "agent": child.spec.name,
                "incarnation": child.incarnation,
                "timers": len(child.timers),
            },
        )
        self._make_spare()  # a sleeping agent will be woken: have its process ready
        if message.wake_at is not None:
            delay = max(0.0, message.wake_at - time.time())
            self._after(delay, _WakeDue(child.spec.name, child.incarnation))
        self._place_waiting()  # its node has room again

    def _on_wake(self, message: _Wake, sender: ActorAddress) -> None:
        """A caller waits for a hibernated agent (the registry asks): start it from its record.

        A name stopped meanwhile is unregistered again, so the waiting callers are answered
        (no address, ``stopped``) instead of waiting for a wake that will not come.
        """
        child = self._children.get(message.name)
        if child is not None and child.state is _ChildState.HIBERNATED:
            child.warm_worker = True  # a caller waits: its request will want a worker
            self._wake(child)
        elif child is None:
            # Stopped meanwhile: the registry's waiting callers need the name gone.
            self._tell_registry(_Unregister(message.name, None))

    def _wake(self, child: _Child) -> None:
        """Start the next incarnation of a hibernated agent, as a restart does, uncounted.

        A new incarnation number tells callers holding the old address that requests sent
        there were lost, so they send them again (a durable agent drops a ref it holds)."""
        child.state = _ChildState.RESTARTING
        self._tell_registry(_Restarting(child.spec.name, child.spec.durable))
        child.incarnation += 1
        child.wakes += 1
        child.pid = 0
        child.identity = None
        child.instance_id = uuid.uuid4().hex
        child.remains = _AgentProcesses(0)
        self._respawn(child)

    # ------------------------------------------------------------------ owner

    def _watch_owner(self) -> None:
        """Check that the process that started this system still runs (see ``Boot.owner``).

        Polled, because nothing else would tell: an owner killed with SIGKILL runs no
        ``atexit`` and sends no message, and Thespian's admin, in a session of its own,
        outlives it. When it is gone, every agent is stopped in order and, after their
        grace, every process of the system is ended.
        """
        if self._owner is None or self._owner_gone:
            return
        if owner_alive(self._owner):
            self._after(OWNER_CHECK_INTERVAL, _OwnerCheck())
            return
        self._owner_gone = True
        _log.warning(
            "the process that started this actor system (pid %d) is gone; shutting down",
            self._owner[0],
        )
        self._after(STOP_GRACE + 2 * EXIT_GRACE, _EndSystem())
        self._on_stop_all(StopAll("owner gone"), None)

    def _end_own_system(self) -> None:
        """End every process of this system: the script that owned it can no longer.

        By marker first (programs the agents executed, in groups of their own), then the
        system's process group, which holds the admin, the logger and every actor, this
        one included: it ends last, with the rest.
        """
        marker = os.environ.get(SYSTEM_MARKER, "")
        kill_marked(marker, variable=SYSTEM_MARKER)
        # The admin, the logger and every actor share this process group (the admin runs
        # in its own session); this process is part of it and ends last, with the rest.
        os.killpg(os.getpgid(0), signal.SIGKILL)

    def _after(self, seconds: float, deadline: _Deadline) -> None:
        """Have ``deadline`` handled in ``seconds`` (``_on_deadline``).

        The timers live in a heap (:class:`Deadlines`) under as few Thespian wakeups as
        possible: Thespian sorts an actor's whole list of pending wakeups at every new one,
        and a supervisor of thousands of agents keeps a check pending per start, wake-up
        and exit, which made every wake-up of a hibernated agent pay for the others'."""
        delay = self._timers.schedule(next(self._timer_keys), seconds, deadline)
        if delay is not None:
            self.wakeupAfter(delay)

    def _on_wakeup(self, message: WakeupMessage, sender: ActorAddress) -> None:
        """Handle the timers now due, in deadline order, and arm the wakeup for the next."""
        due, delay = self._timers.fire()
        if delay is not None:
            self.wakeupAfter(delay)
        for timer in due:
            self._on_deadline(timer)

    def _on_deadline(self, timer: _Deadline) -> None:
        """Act on a timer: a restart after its back-off, or a deadline for a start or an exit.

        Deadlines carry the incarnation they were set for, so one that outlived its agent
        (a restarted agent may reuse its predecessor's address) does nothing."""
        match timer:
            case _OwnerCheck():
                self._watch_owner()
            case _EndSystem():
                _log.error("agents did not stop in time after the owner was gone; ending them")
                self._end_own_system()
            case _BornCheck(name, address, incarnation, after_notice):
                self._check_born(name, address, incarnation, after_notice)
            case _LostExitSweep():
                self._lost_exit_sweep_armed = False
                self._sweep_lost_exits()
            case _ExitCheck(name, address, incarnation, deadline):
                self._confirm_exit(name, address, incarnation, deadline)
            case _KeepNodes():
                self._keep_nodes()
            case _CensusDue(final):
                self._census_ready = True
                if final:
                    self._census_over()
                else:
                    self._end_census_if_complete()
            case _RestartDue(name, incarnation):
                self._restart(name, incarnation)
            case _WakeDue(name, incarnation):
                child = self._children.get(name)
                if (
                    child
                    and child.incarnation == incarnation
                    and child.state is _ChildState.HIBERNATED
                ):
                    self._wake(child)
            case _StartCheck(name, incarnation):
                self._check_started(name, incarnation)
            case _ExitDue(name, address, incarnation) | _KillDue(name, address, incarnation) as due:
                child = self._child_by_name(name, address)
                if child is None or child.incarnation != incarnation:
                    return  # meant for an incarnation that is gone (a new one may reuse its port)
                if isinstance(due, _ExitDue):
                    _log.warning("agent %r did not stop in time; ending it", child.spec.name)
                    self.send(address, ActorExitRequest())
                    self._after(EXIT_GRACE, _KillDue(name, address, incarnation))
                elif self._process_runs(child) and child.pid != os.getpid():
                    _log.warning(
                        "agent %r did not exit in time; killing pid %d", child.spec.name, child.pid
                    )
                    kill_process(child.pid)

    def _check_started(self, name: AgentName, incarnation: int) -> None:
        """Count a restarted incarnation that never reported ready as a failed restart.

        A restart that hangs in ``init_agent`` or ``resume_session`` would otherwise hold
        the name "restarting" for ever; counted as a crash, it goes through the restart
        policy, whose intensity gives up on an agent that can never start.
        """
        child = self._children.get(name)
        if child and child.incarnation == incarnation and child.state is _ChildState.STARTING:
            _log.error("agent %r did not come back in time; counting a failed restart", name)
            child.exit_kind = ExitKind.CRASHED
            if child.address is not None:
                self.send(child.address, ActorExitRequest())
            self._handle_exit(child, child.address)

    # ------------------------------------------------------------------ exits

    def _on_born(self, message: _AgentBorn, sender: ActorAddress) -> None:
        """A new incarnation reports its process before anything else (``_AgentBorn``).

        From now on its address can be shared with other actors (see
        ``_Child.shareable_address``), and an exit notice is checked against this pid and start
        time, not believed on the word of a notice that may concern a predecessor.
        """
        child = self._child_by_name(message.name, sender) or self._child_at(sender)
        if child is None or child.born:
            return
        key = _address_key(sender)
        if key is not None:  # its later messages and exit notice are then found at once
            self._remember_address(key, child.spec.name)
        child.born = True
        child.node = message.node or self._node
        if self._is_local(child):
            child.pid = message.pid
            child.identity = self._identity_of(message.pid)
            if self._ended_unannounced(child):
                # Gone before its report was read: Thespian may never announce it.
                self._arm_lost_exit_sweep()

    def _on_child_exited(self, message: ChildActorExited, sender: ActorAddress) -> None:
        """An agent's process ended; ignore the duplicate or stale notices Thespian may send.

        Three checks before an exit is believed: the notice is not one already handled (for
        this address and incarnation); an incarnation that has not reported its pid yet, at
        an address whose exit was handled moments ago, is given ``_BIRTH_REPORT_SECONDS``
        to do so (the notice may concern its predecessor on a reused port); and a process
        that still runs is watched until it is gone or the notice expires. Restarting an
        agent that is alive would run it twice.

        Every notice, whoever it is for, also schedules a look for exits Thespian dropped
        while handling it (``_LostExitSweep``).
        """
        self._arm_lost_exit_sweep()
        address = message.childAddress
        if self._spare is not None and address == self._spare:
            self._spare = None  # the spare died: the next wake-up makes another
            return
        if self._keeper_gone(address) or self._hibernation_exit(address):
            return
        child = self._child_at(address)
        if child is None or self._handled_already(child, address):
            return  # the duplicate notice of an exit already handled
        if not child.born and self._recently_at(address):
            # A new incarnation at a reused address, not yet heard from: its birth report
            # (milliseconds after it starts) or its silence tells whether it is the one gone.
            self._after(
                _BIRTH_REPORT_SECONDS, _BornCheck(child.spec.name, address, child.incarnation, True)
            )
            return
        if self._process_runs(child):
            # Thespian announces an exit before the process is gone, and a late notice of an
            # earlier incarnation on a reused port looks the same: watch the process itself.
            deadline = time.monotonic() + _EXIT_CONFIRM_SECONDS
            self._confirm_exit(child.spec.name, address, child.incarnation, deadline)
            return
        self._handle_exit(child, address)

    def _confirm_exit(
        self, name: AgentName, address: ActorAddress, incarnation: int, deadline: float
    ) -> None:
        """Handle the exit once ``incarnation``'s process is gone; a stale notice expires."""
        child = self._child_by_name(name, address)
        if child is None or child.incarnation != incarnation:
            return  # handled meanwhile (a second notice, a restart)
        if not self._process_runs(child):
            self._handle_exit(child, address)
        elif time.monotonic() < deadline:
            self._after(_EXIT_CONFIRM_INTERVAL, _ExitCheck(name, address, incarnation, deadline))
        else:
            _log.info(
                "agent %r: ignored an exit notice for an earlier incarnation", child.spec.name
            )

    def _process_runs(self, child: _Child) -> bool:
        """Whether ``child``'s own incarnation's process (pid + start time) still runs."""
        if child.identity is None or not self._is_local(child):
            return False
        return owner_alive(child.identity)

    def _ended_unannounced(self, child: _Child) -> bool:
        """Whether a local incarnation that reported its process no longer runs.

        No identity for a reported pid means the process was gone when its report was read
        (on ``simpleSystemBase`` the pid is this process's: never an exit). Otherwise the pid
        is tested, not the whole identity: a child whose notice Thespian dropped was reaped
        by Thespian, so its pid no longer exists, and the test costs one ``kill(pid, 0)``
        per agent where the identity costs two ``/proc`` reads (a sweep follows every exit).
        """
        if not child.born or not child.pid or child.pid == os.getpid():
            return False
        if child.state not in (_ChildState.STARTING, _ChildState.RUNNING, _ChildState.STOPPING):
            return False
        if not self._is_local(child):
            return False
        return child.identity is None or not psutil.pid_exists(child.pid)

    def _arm_lost_exit_sweep(self) -> None:
        """Schedule one ``_LostExitSweep``; a burst of notices shares it.

        One armed sweep covers every notice handled before it runs, since each notice's
        clean-up (where Thespian drops the others) ends before the next message or wakeup.
        """
        if not self._lost_exit_sweep_armed:
            self._lost_exit_sweep_armed = True
            self._after(_LOST_EXIT_SWEEP_SECONDS, _LostExitSweep())

    def _sweep_lost_exits(self) -> None:
        """Handle the exit of every local agent whose process ended without a notice.

        Without this an agent SIGKILLed while another one's exit was being handled kept its
        registration at a dead address: callers waited for ever, and no restart came.
        """
        for child in list(self._children.values()):
            if child.address is not None and self._ended_unannounced(child):
                _log.info("agent %r: its process ended unannounced", child.spec.name)
                self._handle_exit(child, child.address)

    def _handle_exit(self, child: _Child, address: ActorAddress) -> None:
        """``child``'s process ended: answer its stoppers, or restart, or forget it.

        In order: the exit is remembered (a repeated notice is then recognised), the
        governor drops the agent's session, and then by state. A stopping agent is gone for
        good: stoppers and watchers hear it. Otherwise it crashed: what it left is killed
        (here, or by a sweeper on its node); a first start that never got ready fails its
        starter; anything else goes to the restart policy, which restarts it after a
        back-off (callers wait: the registry says "restarting") or gives up (the record's
        callers get ``AgentStopped``, watchers ``AgentDown``).
        """
        self._note_exit(address, child.incarnation)
        name = child.spec.name
        if child.governor is not None:  # a dead agent's session and queued turn are gone
            self.send(child.governor, _SessionGone(name, withdraw=True))
        if child.state is _ChildState.STOPPING:
            self._forget(child, then=self._stopped_replies(child))
            self._emit("agent.stopped", {"agent": name, "reason": child.stop_reason})
            self._notify_watchers(name, child.stop_reason or "stopped")
            self._check_stop_all()
            return
        if self._is_local(child):
            _end_remains(child)
        else:
            self._sweep_remotely(child)
        self._emit("agent.crashed", {"agent": name, "incarnation": child.incarnation})
        if child.state is _ChildState.STARTING and child.starter is not None:
            self._forget(child)
            reason = "the agent's process exited while starting"
            if child.spec.placement:
                reason = (
                    f"no node of the convention could start the agent with placement "
                    f"{dict(child.spec.placement)!r} (no node matches, or {reason})"
                )
            error = AgentStartFailed(reason, agent=name)
            self.send(child.starter, Failure(error))
            self._notify_watchers(name, "crashed")
            return
        assert child.policy is not None
        decision = child.policy.decide(child.exit_kind, exit_id=child.incarnation)
        child.exit_kind = ExitKind.KILLED
        if decision.action is RestartAction.RESTART:
            _log.warning("agent %r exited; restarting in %.3fs", name, decision.delay)
            child.state = _ChildState.RESTARTING
            if self._telemetry is not None and child.shareable_address is not None:
                self.send(self._telemetry, _TelemetryLeave(child.shareable_address))
            child.address = None
            self._tell_registry(_Restarting(name, child.spec.durable))
            self._after(decision.delay, _RestartDue(name, child.incarnation))
            return
        if decision.action is RestartAction.GIVE_UP:
            _log.error("agent %r: %s", name, decision.reason)
            self._emit("agent.gave_up", {"agent": name, "reason": decision.reason})
        self._end_for_good(child, decision.reason)

    def _sweep_remotely(self, child: _Child) -> None:
        """Have the node the dead agent ran on end what it left there (see ``sweeper.py``)."""
        if self._nodes is not None and child.node not in self._nodes:
            return  # the node itself is gone, and its processes with it
        sweeper = self.createActor(
            NodeSweeper, targetActorRequirements={NODE_CAPABILITY: child.node}
        )
        remains = child.remains
        self.send(
            sweeper,
            SweepAgent(child.instance_id, remains.worker_pid, tuple(remains.process_groups)),
        )

    def _on_node_lost(self, message: NodeLost, sender: ActorAddress) -> None:
        """Treat every agent on a lost convention node as exited (Thespian does not say so).

        Each goes through the same path as a real exit notice: restarted by its policy on
        a surviving node, or given up on. Nothing is swept there: the node is gone.
        """
        lost = [c for c in self._children.values() if c.node == message.node and c.address]
        for child in lost:
            _log.warning("agent %r was on lost node %s", child.spec.name, message.node)
            self._on_child_exited(ChildActorExited(child.address), sender)

    def _end_for_good(self, child: _Child, reason: str) -> None:
        """Forget an agent that will not come back; answer what its record still holds.

        A durable agent's record may hold asks whose callers still wait (they were queued
        when it died): they get ``AgentStopped`` now. The record itself is kept: a later
        start of the same name resumes from it.
        """
        name = child.spec.name
        self._forget(child)
        if child.spec.durable and self._store_path:
            answer_stored_callers(self._store_path, child.spec, reason, self.send)
        self._notify_watchers(name, "crashed")

    def _restart(self, name: AgentName, incarnation: int) -> None:
        """Start the next incarnation, if this restart is still wanted.

        A stop or a newer exit may have happened during the back-off. The new incarnation
        must report ready within ``RESTART_START_DEADLINE`` or it counts as a failed restart."""
        child = self._children.get(name)
        if (
            child is None
            or child.state is not _ChildState.RESTARTING
            or child.incarnation != incarnation
        ):
            return
        child.incarnation += 1
        child.pid = 0  # unknown until the new incarnation reports ready
        child.identity = None
        child.instance_id = uuid.uuid4().hex
        child.remains = _AgentProcesses(0)
        self._respawn(child)

    def _respawn(self, child: _Child) -> None:
        """Start a restarting agent again, or leave it waiting until a node has room.

        An agent that finds no node is not given up on: it stays "restarting" (its callers
        wait) and is placed when a node joins or another agent ends (``_place_waiting``).
        The failure is reported once, not at every retry. A placed restart must report
        ready within ``RESTART_START_DEADLINE`` or it counts as a failed restart.
        """
        try:
            node = self._place(child.spec)
        except NoNodeWithRoom as exc:
            if not child.unplaced:
                _log.error("agent %r cannot restart yet: %s", child.spec.name, exc)
                self._emit("agent.unplaced", {"agent": child.spec.name, "reason": str(exc)})
            child.unplaced = True
            self._unplaced[child.spec.name] = None
            return
        self._spawn(child, node)
        self._after(RESTART_START_DEADLINE, _StartCheck(child.spec.name, child.incarnation))

    def _place_waiting(self) -> None:
        """Give restarts that found no room another chance (a node joined or room freed).

        Only the waiting ones are looked at: this runs after every agent that ends, and a
        pass over every child made a shutdown of 10,000 agents quadratic (minutes)."""
        for name in list(self._unplaced):
            child = self._children.get(name)
            if child is None or not child.unplaced:
                self._unplaced.pop(name, None)
            elif child.state is _ChildState.RESTARTING:
                self._respawn(child)

    def _on_nodes_changed(self, message: NodesChanged, sender: ActorAddress) -> None:
        """Learn the convention's live nodes; from now on the supervisor places agents.

        A node that joins may have room for restarts that waited (``_place_waiting``); a
        new leader also puts a keeper on it.
        """
        self._nodes = {name: dict(caps) for name, caps in message.nodes}
        self._silent &= set(self._nodes)
        self._keep_nodes()
        self._end_census_if_complete()
        self._place_waiting()

    # ------------------------------------------------------------------ leader failover

    def _on_lead(self, message: Lead, sender: ActorAddress) -> None:
        """Elected: adopt what runs, then resume what died with the old leader."""
        self._lead = message
        self._kept.clear()
        self._censused.clear()
        self._keep_nodes()
        # Until the census is over, callers of a stored agent hear "restarting" (wait), not
        # "no such agent": it is either adopted or started again when the census ends.
        for name in self._stored_names():
            if name not in self._children:
                self._tell_registry(_Restarting(name, True))
        self._census_open, self._census_ready = True, False
        self._after(CENSUS_SECONDS, _CensusDue())
        self._after(CENSUS_MAX_SECONDS, _CensusDue(final=True))

    def _end_census_if_complete(self) -> None:
        """End the census once its shortest window passed and every live node reported."""
        nodes = set(self._nodes or ())
        if self._census_open and self._census_ready and nodes and nodes <= self._censused:
            self._census_over()

    def _stored_names(self) -> list[AgentName]:
        """The names of the durable agents in the store (empty when there is none or it fails).

        A new leader marks them "restarting" in its registry until the census decides whether
        they are adopted or started again, so their callers wait rather than hear "not found".
        """
        if not self._store_path:
            return []
        try:
            store = open_store(self._store_path)
            try:
                return [pickle.loads(entry.name_blob) for entry in store.list_agents()]
            finally:
                store.close()
        except StoreError:
            _log.exception("could not list the stored durable agents")
            return []

    def _keep_nodes(self) -> None:
        """Put a keeper on every node that has none of this leader's yet.

        Called at the lead and whenever the nodes change, so a node that joins (or whose
        keeper could not be created the first time) is taken over too.
        """
        if self._lead is None or self._nodes is None:
            return
        for node in self._nodes:
            if node in self._kept:
                continue
            self._kept.add(node)
            keeper = self.createActor(NodeKeeper, targetActorRequirements={NODE_CAPABILITY: node})
            self._keepers.append((keeper, node))
            self.send(keeper, KeepNode(self._lead.services, node, self._lead.leaders))

    def _keeper_gone(self, address: ActorAddress) -> bool:
        """Whether ``address`` was a keeper; one that ended before its census is tried again.

        Thespian may fail to create an actor on a node that joined a moment ago.
        """
        for index, (keeper, node) in enumerate(self._keepers):
            if keeper == address:
                del self._keepers[index]
                if self._nodes and node in self._nodes and node not in self._censused:
                    self._kept.discard(node)
                    self._after(KEEPER_RETRY_SECONDS, _KeepNodes())
                return True
        return False

    def _on_census(self, message: NodeCensus, sender: ActorAddress) -> None:
        """A node's keeper lists the agents running there: adopt those not known yet.

        Adoption keeps the agent's process and incarnation: no turn is lost or re-run. A
        name this supervisor already runs at another address (the node reported after the
        census, and a new incarnation was started meanwhile) is not adopted: the late process
        is told to exit, so one name never keeps two processes (a durable one has lost its
        lease already and could not run a turn; a plain one would answer stale calls).
        """
        self._censused.add(message.node)
        self._silent.discard(message.node)
        for agent in message.agents:
            if agent.spec.name not in self._children:
                self._adopt(agent)
            elif self._children[agent.spec.name].address != agent.address:
                _log.warning(
                    "agent %r on %s reported after the census: a new incarnation replaces it;"
                    " ending the late process (pid %d)",
                    agent.spec.name,
                    message.node,
                    agent.pid,
                )
                self.send(agent.address, ActorExitRequest())
        self._end_census_if_complete()

    def _adopt(self, agent: LocalAgent) -> None:
        """Take a running agent of the previous leader as ours: same process, same incarnation."""
        assert self._lead is not None
        spec = agent.spec
        child = _Child(
            spec=spec,
            address=agent.address,
            state=_ChildState.RUNNING,
            pid=agent.pid,
            identity=self._identity_of(agent.pid) if agent.node == self._node else None,
            born=True,
            incarnation=agent.incarnation,
            instance_id=agent.instance_id,
            policy=RestartPolicy.for_spec(spec),
            node=agent.node,
            adopted=True,
            governor=agent.governor,
        )
        self._children[spec.name] = child
        self.send(
            agent.address,
            _Adopted(self._registry, self._telemetry, self.myAddress, self._governor),
        )
        register = _Register(
            spec.name,
            agent.address,
            agent.node,
            durable=spec.durable,
            incarnation=agent.incarnation,
        )
        self._tell_registry(register)
        _log.warning("re-adopted agent %r on %s (pid %d)", spec.name, agent.node, agent.pid)
        self._emit("agent.adopted", {"agent": spec.name, "incarnation": agent.incarnation})

    def _census_over(self) -> None:
        """Nodes that gave no census are not placed on; lost durable agents start again."""
        if not self._census_open:
            return
        self._census_open = False
        if self._nodes is not None:
            self._silent = {n for n in self._nodes if n != self._node} - self._censused
        if not self._store_path:
            return
        try:
            store = open_store(self._store_path)
        except StoreError:
            _log.exception("could not read the store to resume the lost durable agents")
            return
        try:
            for entry in store.list_agents():
                name = pickle.loads(entry.name_blob)
                if name in self._children:
                    continue
                stored = store.load(entry.key)
                if stored is None:
                    continue
                self._resume_lost(pickle.loads(stored.spec_blob), entry.incarnation)
        except StoreError:
            _log.exception("could not read the store to resume the lost durable agents")
        finally:
            store.close()

    def _resume_lost(self, spec: AgentSpec, incarnation: int) -> None:
        """Start a durable agent that died with the old leader; it resumes from its record.

        Its incarnation goes on from the stored one, so the record fences anything of the
        old incarnation that might still write, and the new one waits out the old lease
        like any durable restart.
        """
        _log.warning("durable agent %r ran on the lost leader's host; starting it again", spec.name)
        child = _Child(
            spec=spec,
            address=None,
            state=_ChildState.RESTARTING,
            incarnation=incarnation + 1,
            policy=RestartPolicy.for_spec(spec),
        )
        self._children[spec.name] = child
        self._tell_registry(_Restarting(spec.name, spec.durable))
        self._respawn(child)

    def _on_adopted_exited(self, message: AdoptedExited, sender: ActorAddress) -> None:
        """An adopted agent exited: handle it as if Thespian had told us (it cannot).

        Thespian reports an exit only to an actor's creator, the previous leader; the keeper on
        the agent's node watches it for us and sends this instead.
        """
        self._on_child_exited(ChildActorExited(message.address), sender)

    def _forget(self, child: _Child, *, then: tuple[tuple[ActorAddress, object], ...] = ()) -> None:
        """Drop ``child``; the registry sends the ``then`` replies once the name is gone.

        Replies travel with the ``_Unregister`` so that a caller told "stopped" can start
        the same name at once: the registry has already let it go when the answer leaves.
        """
        name = child.spec.name
        if self._telemetry is not None and child.shareable_address is not None:
            self.send(self._telemetry, _TelemetryLeave(child.shareable_address))
        if self._children.get(name) is child:
            del self._children[name]
        # An unborn incarnation never registered: the registry's entry for the name (if
        # any) is "restarting", which an _Unregister without an address removes.
        self._tell_registry(_Unregister(name, child.shareable_address, then=then))
        self._place_waiting()  # its node may have room now

    def _handled_already(self, child: _Child, address: ActorAddress) -> bool:
        """Whether an exit notice repeats one already handled.

        Thespian may report one exit twice. multiprocTCPBase also reuses ports, so a late
        notice of an earlier incarnation can name the current one's address: when the
        current incarnation's process is known (pid + start time, which Thespian cannot
        reuse), :meth:`_process_runs` tells them apart; while it is still starting, a notice
        for an address handled moments ago is taken as that repeat (a restart that dies
        before reporting ready is caught by its start deadline).
        """
        if any(a == address and n == child.incarnation for a, n, _ in self._recent()):
            return True
        if self._is_local(child):
            return False  # the process identity decides (see _on_child_exited)
        return self._recently_at(address)

    def _recent(self) -> list[tuple[AgentName, int, float]]:
        """The exits handled in the last ``_RECENT_EXIT_SECONDS`` (older ones dropped)."""
        now = time.monotonic()
        self._recent_exits = [
            (a, n, t) for a, n, t in self._recent_exits if now - t < _RECENT_EXIT_SECONDS
        ]
        return self._recent_exits

    def _note_exit(self, address: ActorAddress, incarnation: int) -> None:
        """Remember an exit at ``address`` (``_NO_INCARNATION`` for a hibernation)."""
        self._recent().append((address, incarnation, time.monotonic()))

    def _recently_at(self, address: ActorAddress) -> bool:
        """Whether an exit at ``address`` was handled moments ago (any incarnation)."""
        return any(a == address for a, _, _ in self._recent_exits)

    def _check_born(
        self, name: AgentName, address: ActorAddress, incarnation: int, after_notice: bool
    ) -> None:
        """``_BIRTH_REPORT_SECONDS`` after a spawn (or an unclear exit notice): is it alive?

        A process killed in its first milliseconds may never be announced by Thespian at
        all; without this check its name would stay "restarting" until the start deadline.
        The deadline names its agent: an agent that went to sleep meanwhile is found at once
        to be elsewhere, without a scan of every child for its old address.
        """
        child = self._child_by_name(name, address)
        if child is None or child.incarnation != incarnation:
            return
        if not child.born:  # never reported itself: it is gone (or hung before starting)
            _log.warning("agent %r ended before it reported its process", child.spec.name)
            # No ActorExitRequest: a send to a dead address stalls Thespian's transport, and
            # the registry updates that follow would queue behind it.
            self._handle_exit(child, address)
        elif after_notice:
            self._confirm_exit(name, address, incarnation, time.monotonic() + _EXIT_CONFIRM_SECONDS)
        elif child.identity is not None and not self._process_runs(child):
            self._handle_exit(child, address)  # died after reporting; no notice came

    @staticmethod
    def _identity_of(pid: int) -> tuple[int, float] | None:
        """The identity of a local agent's own process; ``None`` when it shares this one's
        (``simpleSystemBase``, where an agent's exit is never a process exit)."""
        return None if pid == os.getpid() else _identity(pid)

    def _tell_registry(self, update: _Register | _Restarting | _Unregister | _Hibernated) -> None:
        """Send a registry update numbered in order (the registry drops overtaken ones)."""
        self._registry_seq += 1
        self.send(self._registry, dataclasses.replace(update, seq=self._registry_seq))

    def _is_local(self, child: _Child) -> bool:
        """Whether ``child`` runs on this node, so its pids may be signalled from here."""
        return not child.node or child.node == self._node

    def _child_at(self, address: ActorAddress) -> _Child | None:
        """The child whose current process is at ``address``, if any.

        Thespian addresses do not hash and compare in Python, so a scan of every child
        costs about a millisecond per thousand agents: a fleet of 10,000 mostly sleeping
        agents paid it several times per wake-up. Each address found is remembered by its
        (hashable) transport details, and a remembered answer is used only once it is
        checked against the child's current address, so a reused port is never mistaken
        for the agent that had it before.
        """
        key = _address_key(address)
        if key is not None and key in self._names_at:
            child = self._child_by_name(self._names_at[key], address)
            if child is not None:
                return child
            del self._names_at[key]
        for child in self._children.values():
            if child.address is not None and child.address == address:
                if key is not None:
                    self._remember_address(key, child.spec.name)
                return child
        return None

    def _child_by_name(self, name: AgentName, address: ActorAddress) -> _Child | None:
        """Child ``name`` if its current process is at ``address`` (one comparison)."""
        try:
            child = self._children.get(name)
        except TypeError:  # an unhashable name from an old sender: never registered
            return None
        if child is not None and child.address is not None and child.address == address:
            return child
        return None

    def _remember_address(self, key: Hashable, name: AgentName) -> None:
        """Note where ``name`` runs; the oldest notes go first past a bound (addresses of
        incarnations that ended are dropped when a lookup finds them stale)."""
        _put_bounded(self._names_at, key, name)

    def _expect_hibernation_exit(self, address: ActorAddress, name: AgentName) -> None:
        """The process at ``address`` ends because ``name`` hibernates: its notice is expected.

        The exit is also remembered as a recent one (of no incarnation), so that a repeated
        notice, which Thespian sends now and then, is not taken for the exit of another
        agent that started meanwhile on the freed port: that one gets the birth grace of
        ``_on_child_exited``. Measured: mass starts beside hibernations failed a start now
        and then with "the agent's process exited while starting".
        """
        self._note_exit(address, _NO_INCARNATION)
        key = _address_key(address)
        if key is not None:
            self._names_at.pop(key, None)
            _put_bounded(self._sleeping_at, key, name)

    def _hibernation_exit(self, address: ActorAddress) -> bool:
        """Whether an exit notice is the expected one of a process that hibernated.

        Answered without a scan of every child. Not when a new incarnation of that agent
        already runs at the same address (a reused port): that notice gets the full checks.
        """
        key = _address_key(address)
        if key is None or key not in self._sleeping_at:
            return False
        name = self._sleeping_at.pop(key)
        return self._child_by_name(name, address) is None

    # ------------------------------------------------------------------ watchers

    def _on_watch_agent(self, message: WatchAgent, sender: ActorAddress) -> None:
        """Tell ``sender`` (``AgentDown``) when agent ``name`` exits; at once if it is unknown."""
        if message.name not in self._children:
            self.send(sender, AgentDown(message.name, "not_found"))
            return
        self._watchers.setdefault(message.name, AddressBook()).add(sender)

    def _notify_watchers(self, name: AgentName, reason: str) -> None:
        """Send ``AgentDown`` to everyone watching ``name`` (each watch fires once)."""
        for watcher in self._watchers.pop(name, AddressBook()):
            self.send(watcher, AgentDown(name, reason))

    def _emit(self, event: str, metadata: Metadata) -> None:
        """Send one supervisor telemetry event (``agent.crashed``...) to the hub.

        Sent as a batch of one, the same message agents use, so subscribers need no second
        path for the supervisor's events; the node is added as agents add theirs.
        """
        if self._telemetry is not None:
            self.send(
                self._telemetry, _TelemetryBatch(((event, {}, {**metadata, "node": self._node}),))
            )

    def _on_exit_request(self, message: ActorExitRequest, sender: ActorAddress) -> None:
        """The system is shutting down: answer every stopper and starter still waiting.

        A convention leader with standbys leaves its agents running (the exit is made not
        recursive): the next leader re-adopts those on other nodes, and this node's own end
        with its process group.
        """
        if self._lead is not None:
            message.notRecursive()
        for child in self._children.values():
            for waiter in child.stop_waiters:
                self.send(waiter, Stopped(child.spec.name))
            if child.starter is not None:
                error: GenAgentError = AgentStartFailed(
                    "the actor system is shutting down", agent=child.spec.name
                )
                self.send(child.starter, Failure(error))


def _identity(pid: int) -> tuple[int, float] | None:
    """``(pid, start time)`` of a running process, or ``None`` when it is already gone."""
    try:
        return owner_identity(pid)
    except psutil.Error:
        return None


def _end_remains(child: _Child) -> None:
    """SIGKILL what a dead agent leaves behind: its worker, its CLIs, their groups."""
    for pgid in child.remains.process_groups:
        kill_process_group(pgid)
    if child.remains.worker_pid:
        kill_process(child.remains.worker_pid)
    kill_marked(child.instance_id, variable=AGENT_MARKER)


_HANDLERS: dict[type, MessageHandler] = {
    _AgentBorn: AgentSupervisor._on_born,
    _AgentProcesses: AgentSupervisor._on_agent_processes,
    Boot: AgentSupervisor._on_boot,
    StartAgent: AgentSupervisor._on_start,
    _AgentReady: AgentSupervisor._on_ready,
    _Hibernating: AgentSupervisor._on_hibernating,
    _Wake: AgentSupervisor._on_wake,
    _AgentInitFailed: AgentSupervisor._on_init_failed,
    StopAgent: AgentSupervisor._on_stop,
    Stopped: AgentSupervisor._on_agent_stopped,
    StopAll: AgentSupervisor._on_stop_all,
    WakeupMessage: AgentSupervisor._on_wakeup,
    ChildActorExited: AgentSupervisor._on_child_exited,
    NodeLost: AgentSupervisor._on_node_lost,
    NodesChanged: AgentSupervisor._on_nodes_changed,
    Lead: AgentSupervisor._on_lead,
    NodeCensus: AgentSupervisor._on_census,
    AdoptedExited: AgentSupervisor._on_adopted_exited,
    WatchAgent: AgentSupervisor._on_watch_agent,
    ActorExitRequest: AgentSupervisor._on_exit_request,
    _WhereIsGovernor: AgentSupervisor._on_where_is_governor,
}


def _put_bounded(notes: dict[Hashable, object], key: Hashable, value: object) -> None:
    """Set ``notes[key]``; past ``_ADDRESS_NOTES_BOUND`` entries the oldest one goes."""
    notes[key] = value
    if len(notes) > _ADDRESS_NOTES_BOUND:
        del notes[next(iter(notes))]


def _address_key(address: ActorAddress) -> Hashable | None:
    """The hashable transport details of a Thespian address (``None`` if it has none)."""
    details = getattr(address, "addressDetails", None)
    try:
        hash(details)
    except TypeError:
        return None
    return details


def _preload_backend(backend: ClassSpec) -> None:
    """Import an agent's backend module here, before Thespian forks the agent from this process.

    Memory: a module imported before the fork is shared (copy-on-write) by every agent and
    worker forked after it; imported in each agent, it is a private copy per agent (about
    1 MiB for the CLI backends with pexpect). A backend that does not import is reported by
    the agent itself, as before.
    """
    with contextlib.suppress(Exception):
        resolve_backend(backend)
