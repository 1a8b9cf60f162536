"""Exit notices the supervisor must not believe: a repeat about a hibernated agent's process.

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

from types import SimpleNamespace
from typing import Any

from support_agents import Recorder
from thespian.actors import ActorAddress, ChildActorExited
from thespian.system.transport.IPBase import TCPv4ActorAddress

from genagent_thespian._actors.supervisor import AgentSupervisor, _Child, _ChildState
from genagent_thespian._core.protocol import _Hibernating
from genagent_thespian._core.validate import build_spec


def _address(port: int) -> ActorAddress:
    return ActorAddress(TCPv4ActorAddress("127.0.0.1", port, external=True))


def _supervisor() -> tuple[AgentSupervisor, list[Any]]:
    supervisor = AgentSupervisor({"Thespian ActorSystem Name": "multiprocTCPBase"})
    supervisor._myRef = SimpleNamespace(address=_address(40000))  # what Thespian sets up
    sent: list[Any] = []
    supervisor.send = lambda to, message: sent.append((to, message))
    supervisor.wakeupAfter = lambda delay, payload=None: None
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
