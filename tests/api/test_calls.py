"""The client calls as plans, driven without an actor system: how every call ends.

A plan does no I/O (``_api/calls.py``), so a test can play the driver: it answers each
exchange itself. This is the seam the sync and the asyncio drivers share, so what is
checked here holds for both APIs.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

import pytest

from genagent_thespian import AgentOverloaded, Response, aio, start_agent, stop
from genagent_thespian._api import calls
from genagent_thespian.messages import (
    Accepted,
    AgentSpec,
    AgentStarted,
    Failure,
    Located,
    Prompt,
    WhereIs,
)

NAME = "a"


class _Endpoint:
    """What a plan reads of its ``AgentSystem``: the service addresses and the name cache."""

    base = "multiprocTCPBase"
    registry = "registry-address"
    supervisor = "supervisor-address"

    def cached_address(self, name: Any) -> Any:
        return "agent-address"

    def cached_incarnation(self, name: Any) -> int:
        return 1

    def remember(self, name: Any, address: Any, incarnation: int | None = None) -> None:
        return None


def _drive(plan: calls.Plan[Any], answer: Callable[[Any], Any]) -> Any:
    """Run ``plan`` as a driver would, answering each request with ``answer(message)``;
    a name look-up is answered with the agent's (cached) address."""
    try:
        exchange = next(plan)
        while True:
            message = exchange.message
            reply = (
                Located(NAME, address="agent-address", incarnation=1)
                if isinstance(message, WhereIs)
                else answer(message)
            )
            exchange = plan.send(reply)
    except StopIteration as stop:
        return stop.value


_SYSTEM: Any = _Endpoint()

#: Every call that sends a request and waits for its answer.
_PLANS: dict[str, Callable[[], calls.Plan[Any]]] = {
    "start_agent": lambda: calls.start_agent(
        _SYSTEM, AgentSpec(name=NAME, impl=None, backend=None), 5.0
    ),
    "stop": lambda: calls.stop(_SYSTEM, NAME, 5.0),
    "ask": lambda: calls.ask(_SYSTEM, NAME, Prompt("hi"), 5.0),
    "stream": lambda: calls.stream(_SYSTEM, NAME, Prompt("hi"), 5.0),
    "subscribe": lambda: calls.subscribe(_SYSTEM, NAME, "r1"),
    "tell": lambda: calls.tell(_SYSTEM, NAME, "hi"),
    "poll": lambda: calls.poll(_SYSTEM, NAME, "r1"),
    "notify": lambda: calls.notify(_SYSTEM, NAME, {"ci": "red"}),
    "interrupt": lambda: calls.interrupt(_SYSTEM, NAME, None),
    "cancel": lambda: calls.cancel(_SYSTEM, NAME, "r1"),
    "halt": lambda: calls.halt(_SYSTEM, NAME),
    "resume": lambda: calls.resume(_SYSTEM, NAME),
    "status": lambda: calls.status(_SYSTEM, NAME),
    "backend_session": lambda: calls.backend_session(_SYSTEM, NAME),
}


@pytest.mark.parametrize("call", sorted(_PLANS))
def test_a_failure_reply_raises_its_error_from_every_call(call: str) -> None:
    """The error the agent (or supervisor) decided on reaches the caller as it was sent:
    the same exception, with its context, from every call (none drops a ``Failure``)."""
    error = AgentOverloaded("the mailbox is full", agent=NAME, ref="r1")
    with pytest.raises(AgentOverloaded) as raised:
        _drive(_PLANS[call](), lambda message: Failure(error, ref=getattr(message, "ref", None)))
    assert raised.value is error


def test_an_answer_is_returned_as_it_came() -> None:
    response = Response(text="hello", ref="r1")
    assert _drive(calls.ask(_SYSTEM, NAME, Prompt("hi", ref="r1"), 5.0), lambda m: response) is (
        response
    )
    started = AgentStarted(NAME, "new-address")
    spec = AgentSpec(name=NAME, impl=None, backend=None)
    assert _drive(calls.start_agent(_SYSTEM, spec, 5.0), lambda m: started) == NAME
    assert _drive(calls.tell(_SYSTEM, NAME, "hi"), lambda m: Accepted(m.ref)) != ""


def test_the_sync_and_asyncio_apis_share_their_default_timeouts() -> None:
    """A default decided once: ``start_agent`` and ``stop`` wait as long in both APIs."""

    def default(function: Callable[..., Any]) -> Any:
        return inspect.signature(function).parameters["timeout"].default

    assert default(start_agent) == default(aio.start_agent) == calls.START_TIMEOUT
    assert default(stop) == default(aio.stop) == calls.STOP_TIMEOUT
