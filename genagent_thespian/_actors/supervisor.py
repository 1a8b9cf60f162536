"""``AgentSupervisor``: the parent of every agent of one actor system.

It starts agents (``StartAgent``), stops them for good (``StopAgent``), keeps the registry
in step with which agents are alive, tells watchers when an agent exits (``AgentDown``), and
decides what happens when an agent's process dies (``ChildActorExited``). Restart
decisions come from the pure :class:`~genagent_thespian._restart.RestartTracker`.

``ChildActorExited`` can arrive twice for one exit; handling is idempotent because the
supervisor forgets an address on the first notice.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from thespian.actors import Actor, ActorExitRequest, ChildActorExited, WakeupMessage

from .._core.backend import resolve_backend
from .._core.errors import AgentAlreadyExists, AgentNotFound, AgentStartFailed, GenAgentError
from .._core.log import get_logger
from .._core.protocol import (
    AddressBook,
    _AgentInitFailed,
    _AgentProcesses,
    _AgentReady,
    _InitAgent,
    _Register,
    _Restarting,
    _ShutdownAgent,
    _TelemetryBatch,
    _TelemetryLeave,
    _Unregister,
)
from .._core.restart_policy import ExitKind, RestartAction, RestartPolicy
from .._durable.record import answer_stored_callers, delete_stored_agent
from .._os.processes import AGENT_MARKER, is_alive, kill_marked, kill_process, kill_process_group
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

__all__ = ["SUPERVISOR_NAME", "AgentSupervisor", "Boot", "Booted", "NodeLost", "StopAll"]

SUPERVISOR_NAME = "genagent_thespian.supervisor"

#: Seconds an agent has to answer ``_ShutdownAgent`` before it is told to exit.
STOP_GRACE = 15.0
#: Seconds an agent has to exit after ``ActorExitRequest`` before it is killed.
EXIT_GRACE = 5.0
#: Seconds a restarted agent has to report ready before the restart counts as failed.
RESTART_START_DEADLINE = 120.0
#: Seconds during which a repeated exit notice for a handled address is a duplicate.
_RECENT_EXIT_SECONDS = 30.0

_log = get_logger("genagent_thespian.supervisor")


@dataclass(frozen=True, slots=True)
class Boot:
    """Client -> supervisor at application boot: the shared services' addresses."""

    registry: Any
    telemetry: Any
    node: str
    store_path: str | None = None


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


@dataclass
class _Child:
    spec: AgentSpec
    address: Any
    state: str = "starting"  # starting | running | stopping
    starter: Any = None
    stop_waiters: list[Any] = field(default_factory=list)
    stop_reason: str = ""
    pid: int = 0
    incarnation: int = 0
    remains: _AgentProcesses = field(default_factory=lambda: _AgentProcesses(0))
    instance_id: str = field(default_factory=lambda: uuid.uuid4().hex)
    policy: RestartPolicy | None = None
    exit_kind: ExitKind = ExitKind.KILLED
    node: str = ""  # the node it runs on (another host's pids mean nothing here)


class AgentSupervisor(Actor):
    """Starts, stops and watches agents (see the module docstring)."""

    def __init__(self) -> None:
        super().__init__()
        self._registry: Any = None
        self._telemetry: Any = None
        self._node = ""
        self._store_path: str | None = None
        self._children: dict[Any, _Child] = {}
        self._watchers: dict[Any, AddressBook] = {}
        self._stop_all_waiters: list[Any] = []
        self._recent_exits: list[tuple[Any, float]] = []  # (address, when) of handled exits

    def receiveMessage(self, message: Any, sender: Any) -> None:
        """Dispatch by type. Never raises (a raise would re-deliver a start)."""
        try:
            handler = _HANDLERS.get(type(message))
            if handler is not None:
                handler(self, message, sender)
        except Exception:
            _log.exception("supervisor failed handling %s", type(message).__name__)

    # ------------------------------------------------------------------ boot

    def _on_boot(self, message: Boot, sender: Any) -> None:
        if self._registry is None:
            self._registry = message.registry
            self._telemetry = message.telemetry
            self._node = message.node
            self._store_path = message.store_path
        self.send(sender, Booted(os.getpid(), os.getpgid(0)))

    # ------------------------------------------------------------------ start

    def _on_start(self, message: StartAgent, sender: Any) -> None:
        spec = message.spec
        if spec.name in self._children:
            error = AgentAlreadyExists(
                "an agent with that name is already running", agent=spec.name
            )
            self.send(sender, Failure(error))
            return
        child = _Child(spec=spec, address=None, starter=sender, policy=RestartPolicy.for_spec(spec))
        self._children[spec.name] = child
        self._spawn(child)

    def _spawn(self, child: _Child) -> None:
        # Placement: Thespian asks AgentActor.actorSystemCapabilityCheck on each node.
        requirements = dict(child.spec.placement) or None
        _preload_backend(child.spec.backend)
        child.address = self.createActor(AgentActor, targetActorRequirements=requirements)
        child.state = "starting"
        child.node = ""
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
            ),
        )

    def _on_ready(self, message: _AgentReady, sender: Any) -> None:
        child = self._children.get(message.name)
        if child is None or child.address != sender:
            return
        child.state = "running"
        child.pid = message.pid
        child.node = message.node or self._node
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
        self.send(self._registry, register)
        if child.incarnation > 0:
            self._emit("agent.restarted", {"agent": message.name, "incarnation": child.incarnation})
        self._emit("agent.started", {"agent": message.name, "incarnation": child.incarnation})

    def _on_init_failed(self, message: _AgentInitFailed, sender: Any) -> None:
        child = self._children.get(message.name)
        if child is None or child.address != sender:
            return
        if child.starter is not None:  # a first start: the caller hears why, nothing restarts
            self._forget(child)
            self.send(child.starter, Failure(message.error))
            self.send(sender, ActorExitRequest())
        else:  # a restart that could not resume: it goes through the restart policy now
            _log.error("agent %r could not restart: %s", message.name, message.error)
            child.exit_kind = ExitKind.CRASHED
            self.send(sender, ActorExitRequest())
            self._handle_exit(child, sender)

    # ------------------------------------------------------------------ stop

    def _on_stop(self, message: StopAgent, sender: Any) -> None:
        child = self._children.get(message.name)
        if child is None:
            self.send(sender, Failure(AgentNotFound("no agent has that name", agent=message.name)))
            return
        self._begin_stop(child, message.reason, sender)

    def _begin_stop(self, child: _Child, reason: str, waiter: Any) -> None:
        if waiter is not None:
            child.stop_waiters.append(waiter)
        if child.state == "stopping":
            return
        if child.state == "restarting":  # no process to ask: it is gone already
            child.state = "stopping"
            if child.spec.durable and self._store_path:
                answer_stored_callers(self._store_path, child.spec, "stopped", self.send)
                delete_stored_agent(self._store_path, child.spec)
            self._forget(
                child, then=tuple((w, Stopped(child.spec.name)) for w in child.stop_waiters)
            )
            self._check_stop_all()
            return
        if child.state == "starting":
            # Not initialized yet: it has nothing to answer, so it can exit right away.
            child.state = "stopping"
            child.stop_reason = reason
            self.send(child.address, ActorExitRequest())
            self.wakeupAfter(EXIT_GRACE, payload=("kill", child.address, child.incarnation))
            return
        child.state = "stopping"
        child.stop_reason = reason
        self.send(self._registry, _Unregister(child.spec.name, child.address))
        self.send(child.address, _ShutdownAgent(reason))
        self.wakeupAfter(STOP_GRACE, payload=("exit", child.address, child.incarnation))

    def _on_agent_processes(self, message: _AgentProcesses, sender: Any) -> None:
        child = self._child_at(sender)
        if child is not None:
            child.remains = message

    def _on_agent_stopped(self, message: Stopped, sender: Any) -> None:
        """The agent answered everything pending and ended its session: let it exit."""
        if self._child_at(sender) is not None:
            self.send(sender, ActorExitRequest())
            child = self._child_at(sender)
            incarnation = child.incarnation if child is not None else -1
            self.wakeupAfter(EXIT_GRACE, payload=("kill", sender, incarnation))

    def _on_stop_all(self, message: StopAll, sender: Any) -> None:
        self._stop_all_waiters.append(sender)
        for child in list(self._children.values()):
            self._begin_stop(child, message.reason, None)
        self._check_stop_all()

    def _check_stop_all(self) -> None:
        if self._stop_all_waiters and not self._children:
            waiters, self._stop_all_waiters = self._stop_all_waiters, []
            for waiter in waiters:
                self.send(waiter, Stopped(None))

    def _on_wakeup(self, message: WakeupMessage, sender: Any) -> None:
        payload = message.payload
        if not isinstance(payload, tuple):
            return
        if payload[0] == "restart":
            self._restart(payload[1], payload[2])
            return
        if payload[0] == "started?":
            child = self._children.get(payload[1])
            if child and child.incarnation == payload[2] and child.state == "starting":
                _log.error(
                    "agent %r did not come back in time; counting a failed restart", payload[1]
                )
                child.exit_kind = ExitKind.CRASHED
                if child.address is not None:
                    self.send(child.address, ActorExitRequest())
                self._handle_exit(child, child.address)
            return
        kind, address, incarnation = payload
        child = self._child_at(address)
        if child is None or child.incarnation != incarnation:
            return  # meant for an incarnation that is gone (a new one may reuse its port)
        name = child.spec.name
        if kind == "exit":
            _log.warning("agent %r did not stop in time; ending it", name)
            self.send(address, ActorExitRequest())
            self.wakeupAfter(EXIT_GRACE, payload=("kill", address, incarnation))
        elif kind == "kill" and child.pid and child.pid != os.getpid() and self._is_local(child):
            _log.warning("agent %r did not exit in time; killing pid %d", name, child.pid)
            with contextlib.suppress(ProcessLookupError):
                os.kill(child.pid, signal.SIGKILL)

    # ------------------------------------------------------------------ exits

    def _on_child_exited(self, message: ChildActorExited, sender: Any) -> None:
        child = self._child_at(message.childAddress)
        if child is None or self._stale_exit(child, message.childAddress):
            return  # the duplicate notice of an exit already handled
        self._handle_exit(child, message.childAddress)

    def _handle_exit(self, child: _Child, address: Any) -> None:
        """``child``'s process ended: answer its stoppers, or restart, or forget it."""
        self._recent_exits.append((address, time.monotonic()))
        name = child.spec.name
        if child.state == "stopping":
            self._forget(child, then=tuple((w, Stopped(name)) for w in child.stop_waiters))
            self._emit("agent.stopped", {"agent": name, "reason": child.stop_reason})
            self._notify_watchers(name, child.stop_reason or "stopped")
            self._check_stop_all()
            return
        if self._is_local(child):
            _end_remains(child)
        self._emit("agent.crashed", {"agent": name, "incarnation": child.incarnation})
        if child.state == "starting" and child.starter is not None:
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
            child.state = "restarting"
            if self._telemetry is not None:
                self.send(self._telemetry, _TelemetryLeave(child.address))
            child.address = None
            self.send(self._registry, _Restarting(name, child.spec.durable))
            self.wakeupAfter(decision.delay, payload=("restart", name, child.incarnation))
            return
        if decision.action is RestartAction.GIVE_UP:
            _log.error("agent %r: %s", name, decision.reason)
            self._emit("agent.gave_up", {"agent": name, "reason": decision.reason})
        self._end_for_good(child, decision.reason)

    def _on_node_lost(self, message: NodeLost, sender: Any) -> None:
        lost = [c for c in self._children.values() if c.node == message.node and c.address]
        for child in lost:
            _log.warning("agent %r was on lost node %s", child.spec.name, message.node)
            self._on_child_exited(ChildActorExited(child.address), sender)

    def _end_for_good(self, child: _Child, reason: str) -> None:
        """Forget an agent that will not come back; answer what its record still holds."""
        name = child.spec.name
        self._forget(child)
        if child.spec.durable and self._store_path:
            answer_stored_callers(self._store_path, child.spec, reason, self.send)
        self._notify_watchers(name, "crashed")

    def _restart(self, name: Any, incarnation: int) -> None:
        child = self._children.get(name)
        if child is None or child.state != "restarting" or child.incarnation != incarnation:
            return
        child.incarnation += 1
        child.pid = 0  # unknown until the new incarnation reports ready
        child.instance_id = uuid.uuid4().hex
        child.remains = _AgentProcesses(0)
        self._spawn(child)
        self.wakeupAfter(RESTART_START_DEADLINE, payload=("started?", name, child.incarnation))

    def _forget(self, child: _Child, *, then: tuple[tuple[Any, Any], ...] = ()) -> None:
        """Drop ``child``; the registry sends the ``then`` replies once the name is gone."""
        name = child.spec.name
        if self._telemetry is not None and child.address is not None:
            self.send(self._telemetry, _TelemetryLeave(child.address))
        if self._children.get(name) is child:
            del self._children[name]
        self.send(self._registry, _Unregister(name, child.address, then=then))

    def _stale_exit(self, child: _Child, address: Any) -> bool:
        """Whether an exit notice is about an earlier incarnation, not ``child``'s process.

        Thespian may report one exit twice, and multiprocTCPBase reuses ports, so a restarted
        agent can have its predecessor's address: the late duplicate must not be taken for
        the new incarnation's death.
        """
        now = time.monotonic()
        self._recent_exits = [
            (a, t) for a, t in self._recent_exits if now - t < _RECENT_EXIT_SECONDS
        ]
        if child.pid and child.pid != os.getpid() and self._is_local(child):
            return is_alive(child.pid)  # its process runs: the notice is not about it
        return any(recent == address for recent, _ in self._recent_exits)

    def _is_local(self, child: _Child) -> bool:
        """Whether ``child`` runs on this node, so its pids may be signalled from here."""
        return not child.node or child.node == self._node

    def _child_at(self, address: Any) -> _Child | None:
        for child in self._children.values():
            if child.address is not None and child.address == address:
                return child
        return None

    # ------------------------------------------------------------------ watchers

    def _on_watch_agent(self, message: WatchAgent, sender: Any) -> None:
        if message.name not in self._children:
            self.send(sender, AgentDown(message.name, "not_found"))
            return
        self._watchers.setdefault(message.name, AddressBook()).add(sender)

    def _notify_watchers(self, name: Any, reason: str) -> None:
        for watcher in self._watchers.pop(name, AddressBook()):
            self.send(watcher, AgentDown(name, reason))

    def _emit(self, event: str, metadata: dict[str, Any]) -> None:
        if self._telemetry is not None:
            self.send(
                self._telemetry, _TelemetryBatch(((event, {}, {**metadata, "node": self._node}),))
            )

    def _on_exit_request(self, message: ActorExitRequest, sender: Any) -> None:
        for child in self._children.values():
            for waiter in child.stop_waiters:
                self.send(waiter, Stopped(child.spec.name))
            if child.starter is not None:
                error: GenAgentError = AgentStartFailed(
                    "the actor system is shutting down", agent=child.spec.name
                )
                self.send(child.starter, Failure(error))


def _end_remains(child: _Child) -> None:
    """SIGKILL what a dead agent leaves behind: its worker, its CLIs, their groups."""
    for pgid in child.remains.process_groups:
        kill_process_group(pgid)
    if child.remains.worker_pid:
        kill_process(child.remains.worker_pid)
    kill_marked(child.instance_id, variable=AGENT_MARKER)


_HANDLERS: dict[type, Any] = {
    _AgentProcesses: AgentSupervisor._on_agent_processes,
    Boot: AgentSupervisor._on_boot,
    StartAgent: AgentSupervisor._on_start,
    _AgentReady: AgentSupervisor._on_ready,
    _AgentInitFailed: AgentSupervisor._on_init_failed,
    StopAgent: AgentSupervisor._on_stop,
    Stopped: AgentSupervisor._on_agent_stopped,
    StopAll: AgentSupervisor._on_stop_all,
    WakeupMessage: AgentSupervisor._on_wakeup,
    ChildActorExited: AgentSupervisor._on_child_exited,
    NodeLost: AgentSupervisor._on_node_lost,
    WatchAgent: AgentSupervisor._on_watch_agent,
    ActorExitRequest: AgentSupervisor._on_exit_request,
}


def _preload_backend(backend: Any) -> None:
    """Import an agent's backend module here, before Thespian forks the agent from this process.

    Memory: a module imported before the fork is shared (copy-on-write) by every agent and
    worker forked after it; imported in each agent, it is a private copy per agent (about
    1 MiB for the CLI backends with pexpect). A backend that does not import is reported by
    the agent itself, as before.
    """
    with contextlib.suppress(Exception):
        resolve_backend(backend)
