"""Exit notices the supervisor must not believe, or not yet: it trusts the process, not Thespian.

A notice is tied to an incarnation by its process (pid + start time, which Thespian cannot
reuse), not by the address alone: a notice that comes while that process still runs is
confirmed once the process is gone (a stop is answered then, never dropped), and one about
an earlier incarnation on a reused port expires without touching the running agent.

multiprocTCPBase reuses ports, and Thespian sends an exit notice twice now and then. When an
agent hibernates, its process ends and frees its port; another agent starting at that
moment may get the same port. A repeated notice of the first exit must not end the second
agent's start ("the agent's process exited while starting"): it gets the birth grace, and
its own birth report decides. The supervisor is built in this process with real Thespian
TCP addresses; what it would send is recorded instead of sent. A port reused at the right
millisecond cannot be produced on demand through Thespian (the hibernation benchmark hit it
now and then with thousands of agents).
"""

from __future__ import annotations

import dataclasses
import subprocess
import sys
import time
from types import SimpleNamespace
from typing import Any

from support_agents import Recorder
from thespian.actors import ActorAddress, ActorExitRequest, ChildActorExited
from thespian.system.transport.IPBase import TCPv4ActorAddress

from genagent_thespian._actors.supervisor import AgentSupervisor, _Child, _ChildState, _ExitCheck
from genagent_thespian._core.errors import AgentStopped
from genagent_thespian._core.protocol import (
    _AgentReady,
    _Hibernating,
    _Register,
    _Restarting,
    _Unregister,
)
from genagent_thespian._core.validate import build_spec
from genagent_thespian._os.processes import owner_identity
from genagent_thespian.messages import Failure, Stopped


def _address(port: int) -> ActorAddress:
    return ActorAddress(TCPv4ActorAddress("127.0.0.1", port, external=True))


def _supervisor() -> tuple[AgentSupervisor, list[Any]]:
    supervisor = AgentSupervisor({"Thespian ActorSystem Name": "multiprocTCPBase"})
    supervisor._myRef = SimpleNamespace(address=_address(40000))  # what Thespian sets up
    sent: list[Any] = []
    supervisor.send = lambda to, message: sent.append((to, message))
    supervisor.wakeupAfter = lambda delay, payload=None: None
    # A process it creates (the spare agent process it keeps once an agent sleeps) gets an
    # address of its own, away from the ports the tests reuse.
    ports = iter(range(41000, 42000))
    supervisor.createActor = lambda actor_class, **options: _address(next(ports))
    return supervisor, sent


def _timers(supervisor: AgentSupervisor) -> list[Any]:
    """The supervisor's pending timers, soonest first."""
    return [timer for _, timer in supervisor._timers.pending_items()]


def _child(name: str, address: ActorAddress, state: _ChildState) -> _Child:
    spec = build_spec(Recorder, name=name, backend="scripted")
    return _Child(spec=spec, address=address, state=state, born=state is _ChildState.RUNNING)


def test_a_repeated_notice_of_a_hibernated_process_spares_a_new_agent_on_its_port() -> None:
    supervisor, _ = _supervisor()
    port = _address(45541)
    sleeper = _child("sleeper", port, _ChildState.RUNNING)
    supervisor._children["sleeper"] = sleeper
    supervisor._on_hibernating(_Hibernating("sleeper", status=None), port)  # type: ignore[arg-type]
    supervisor._on_child_exited(ChildActorExited(port), None)  # the hibernated process ended
    assert sleeper.state is _ChildState.HIBERNATED

    newcomer = _child("newcomer", _address(45541), _ChildState.STARTING)
    newcomer.starter = "the caller of start_agent"
    supervisor._children["newcomer"] = newcomer
    supervisor._on_child_exited(ChildActorExited(port), None)  # Thespian repeats the notice

    assert supervisor._children.get("newcomer") is newcomer  # its start goes on
    assert newcomer.state is _ChildState.STARTING
    # Its birth report (or its silence) decides: a check is armed for this incarnation.
    assert any(type(t).__name__ == "_BornCheck" and t.after_notice for t in _timers(supervisor))


# -- a notice that comes before the process is gone (issue 14, "~260 stop() calls, 2 hung") ------


def _running_process() -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])


def _answers_to(sent: list[Any], waiter: str) -> list[Any]:
    """The replies the registry is to send ``waiter`` once the name is unregistered."""
    return [
        reply
        for _, message in sent
        if isinstance(message, _Unregister)
        for to, reply in message.then
        if to == waiter
    ]


def _child_of(
    supervisor: AgentSupervisor,
    process: subprocess.Popen[bytes],
    name: str,
    address: ActorAddress,
    state: _ChildState,
) -> _Child:
    """A child of ``supervisor`` whose process is ``process`` (pid and start time known)."""
    child = _child(name, address, state)
    child.pid = process.pid
    child.identity = owner_identity(process.pid)
    supervisor._children[name] = child
    return child


def _exit_checks(supervisor: AgentSupervisor) -> list[_ExitCheck]:
    return [timer for timer in _timers(supervisor) if isinstance(timer, _ExitCheck)]


def test_an_exit_notice_before_the_process_is_gone_answers_the_stopper_once_it_is() -> None:
    """Thespian can announce an agent's exit while its process still runs: the notice must
    neither be dropped (the stop hung until its caller's timeout) nor believed early."""
    supervisor, sent = _supervisor()
    port = _address(45551)
    process = _running_process()
    try:
        stopping = _child_of(supervisor, process, "leaving", port, _ChildState.STOPPING)
        stopping.stop_waiters.append("the caller of stop")

        supervisor._on_child_exited(ChildActorExited(port), None)
        assert _answers_to(sent, "the caller of stop") == []  # its process still runs
        (check,) = _exit_checks(supervisor)
        assert (check.address, check.incarnation) == (port, stopping.incarnation)

        supervisor._on_deadline(check)  # still running: it looks again later
        assert _answers_to(sent, "the caller of stop") == []
        (again,) = [c for c in _exit_checks(supervisor) if c is not check]

        process.kill()
        process.wait(10)
        supervisor._on_deadline(again)
    finally:
        process.kill()
        process.wait(10)
    assert _answers_to(sent, "the caller of stop") == [Stopped("leaving")]
    assert "leaving" not in supervisor._children


def test_a_late_notice_naming_a_running_incarnation_is_ignored_once_it_expires() -> None:
    """A notice about an earlier incarnation, on the port the running one reuses, must not
    restart or forget the running one: its process (pid + start time) is alive throughout."""
    supervisor, sent = _supervisor()
    port = _address(45552)
    process = _running_process()
    try:
        running = _child_of(supervisor, process, "steady", port, _ChildState.RUNNING)
        running.incarnation = 3

        supervisor._on_child_exited(ChildActorExited(port), None)
        (check,) = _exit_checks(supervisor)
        supervisor._on_deadline(dataclasses.replace(check, deadline=time.monotonic() - 1.0))
    finally:
        process.kill()
        process.wait(10)
    assert supervisor._children.get("steady") is running
    assert running.state is _ChildState.RUNNING and running.address == port
    assert not [m for _, m in sent if isinstance(m, (_Unregister, _Restarting))]


# -- a stop that comes while the agent is starting (found by test_stops_stateful.py) ----------


def test_an_agent_stopped_while_starting_is_not_made_running_by_its_ready_report() -> None:
    """A stop reaches the supervisor while a (re)started incarnation still initializes; its
    ``_AgentReady`` comes next. It must stay stopping: registered and made running, its exit
    was taken for a crash and restarted, and the stopper waited for ever."""
    supervisor, sent = _supervisor()
    port = _address(45561)
    process = _running_process()
    try:
        child = _child("late", port, _ChildState.STARTING)
        supervisor._children["late"] = child
        child.starter = "the caller of start_agent"
        supervisor._begin_stop(child, "stop", "the caller of stop")
        assert child.state is _ChildState.STOPPING
        assert (port, ActorExitRequest()) in sent  # on its way, behind the agent's init

        supervisor._on_ready(_AgentReady("late", process.pid), port)
        assert child.state is _ChildState.STOPPING
        assert not [m for _, m in sent if isinstance(m, _Register)]  # never registered
        assert child.identity is not None  # its exit can be checked against its process

        process.kill()
        process.wait(10)
        supervisor._on_child_exited(ChildActorExited(port), None)
    finally:
        process.kill()
        process.wait(10)
    assert _answers_to(sent, "the caller of stop") == [Stopped("late")]
    [(failure)] = _answers_to(sent, "the caller of start_agent")
    assert isinstance(failure, Failure) and isinstance(failure.error, AgentStopped)
    assert "late" not in supervisor._children
