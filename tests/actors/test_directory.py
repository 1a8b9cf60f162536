"""The service directory of a node: services by leader epoch, waiting clients, local agents.

Run on ``simpleSystemBase`` (the directory is plain message handling; no processes needed).
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
from support_agents import Minimal
from thespian.actors import ActorSystem

from genagent_thespian._actors.directory import (
    ExpectServices,
    ListLocalAgents,
    LocalAgent,
    LocalAgentGone,
    LocalAgents,
    NoServices,
    ServiceDirectory,
    Services,
    SetServices,
    WhereAreServices,
)
from genagent_thespian.messages import AgentSpec


@pytest.fixture
def asys() -> Iterator[ActorSystem]:
    system = ActorSystem("simpleSystemBase", transientUnique=True)
    yield system
    system.shutdown()


def _services(epoch: int, tag: str = "") -> Services:
    return Services(f"registry{tag}", "hub", "supervisor", None, "node-1", epoch)


def test_a_directory_never_goes_back_to_an_older_leaders_services(asys: ActorSystem) -> None:
    directory = asys.createActor(ServiceDirectory)
    assert asys.ask(directory, SetServices(_services(2, "-new")), 5) == _services(2, "-new")
    # A deposed leader's late message changes nothing; the answer names the current ones.
    assert asys.ask(directory, SetServices(_services(1, "-old")), 5) == _services(2, "-new")
    assert asys.ask(directory, WhereAreServices(), 5) == _services(2, "-new")
    assert asys.ask(directory, SetServices(_services(3, "-next")), 5) == _services(3, "-next")


def test_a_waiting_node_holds_its_clients_until_a_leader_names_the_services(
    asys: ActorSystem,
) -> None:
    unconfigured = asys.createActor(ServiceDirectory)
    assert isinstance(asys.ask(unconfigured, WhereAreServices(), 5), NoServices)
    waiting = asys.createActor(ServiceDirectory)
    assert isinstance(asys.ask(waiting, ExpectServices(), 5), ExpectServices)
    assert asys.ask(waiting, WhereAreServices(), 0.5) is None  # held, not "no services"
    asys.tell(waiting, SetServices(_services(1)))
    # Two answers: the held question's, and the setter's acknowledgement.
    assert [asys.listen(5), asys.listen(5)] == [_services(1), _services(1)]
    assert asys.listen(0.2) is None


def test_the_local_agents_listed_are_those_whose_processes_run(asys: ActorSystem) -> None:
    directory = asys.createActor(ServiceDirectory)
    spec = AgentSpec(name="a", impl=Minimal, backend="scripted")
    here = LocalAgent(spec, "address-a", os.getpid(), 0, "i-a", "node-1")
    gone = LocalAgent(
        AgentSpec(name="b", impl=Minimal, backend="scripted"), "address-b", 0, 1, "", ""
    )
    asys.tell(directory, here)
    asys.tell(directory, gone)  # pid 0: no such process (an agent killed without a goodbye)
    assert asys.ask(directory, ListLocalAgents(), 5) == LocalAgents((here,))
    asys.tell(directory, LocalAgentGone("a", "address-other"))  # another incarnation's goodbye
    assert asys.ask(directory, ListLocalAgents(), 5) == LocalAgents((here,))
    asys.tell(directory, LocalAgentGone("a", "address-a"))
    assert asys.ask(directory, ListLocalAgents(), 5) == LocalAgents(())
