"""The client API as coroutines, for asyncio applications.

Every function of the sync API (``genagent_thespian.ask``, ``tell``, ``stream``...) has a
coroutine here with the same arguments, the same results and the same typed errors: both
run the same *plans* (``_api/calls.py``), the sync ones on the calling thread, these on one
transport thread per system that carries every task's messages (``_api/aio_transport.py``).
A thousand tasks waiting on ``await aio.ask(...)`` cost a thousand small waiters, not a
thousand threads.

Cancellation is safe: cancelling a task inside ``await aio.ask(...)`` stops the wait at
once (a late answer is dropped); with ``interrupt_on_cancel=True`` it also ends the turn
if it is running. A turn still queued behind others runs when its time comes (queued
asks cannot be withdrawn: only tells can, with :func:`cancel`); its answer is dropped.

Example:
    >>> import asyncio
    >>> from genagent_thespian import aio
    >>> async def main():  # doctest: +SKIP
    ...     reply = await aio.ask("coder", "Fix the test")
    ...     async for item in aio.stream("coder", "Explain the fix"):
    ...         print(item)
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Iterable
from typing import Concatenate, ParamSpec, TypeVar

from ._actors.telemetry import Handler
from ._api import calls, telemetry
from ._api.aio_transport import AsyncTransport, transport_for
from ._api.calls import Plan
from ._api.client import _system, build_start_spec
from ._api.system import AgentSystem
from ._core.behaviour import GenAgent
from ._core.governor import GovernorStatus
from ._core.turn import Event, Response
from ._core.types import AgentName, ClassSpec, OptionValue, Sender, Session, UserTerm
from .messages import AgentStatus, Interrupt, PollResult, Prompt, TurnEvent, new_ref

__all__ = [
    "ask",
    "attach",
    "backend_session",
    "cancel",
    "detach",
    "halt",
    "interrupt",
    "list_agents",
    "notify",
    "poll",
    "resume",
    "sessions",
    "start_agent",
    "status",
    "stop",
    "stream",
    "tell",
    "transport",
    "watch",
    "whereis",
]

P = ParamSpec("P")
T = TypeVar("T")


def transport(system: AgentSystem | None = None) -> AsyncTransport:
    """The transport that carries this system's asyncio calls (one thread, made on first use)."""
    return transport_for(_system(system))


async def attach(
    handler_id: str,
    event_names: Iterable[str] | None,
    fn: Handler,
    *,
    system: AgentSystem | None = None,
) -> None:
    """Attach a telemetry handler (see :func:`genagent_thespian.attach`).

    The subscription is a rare, short exchange made by the telemetry bridge's own client,
    so it runs in a worker thread rather than on the transport.
    """
    await asyncio.to_thread(telemetry.attach, handler_id, event_names, fn, system=system)


async def detach(handler_id: str, *, system: AgentSystem | None = None) -> bool:
    """Remove a telemetry handler; return whether it was attached."""
    return await asyncio.to_thread(telemetry.detach, handler_id, system=system)


async def _run(
    system: AgentSystem | None,
    make: Callable[Concatenate[AgentSystem, P], Plan[T]],
    *args: P.args,
    **kwargs: P.kwargs,
) -> T:
    """Run the plan ``make(system, *args)`` on the system's asyncio transport."""
    target = _system(system)
    return await transport_for(target).run(make(target, *args, **kwargs))


# =============================================================================== agents


async def start_agent(
    impl: type[GenAgent],
    *,
    name: AgentName,
    backend: ClassSpec,
    timeout: float | None = calls.START_TIMEOUT,
    system: AgentSystem | None = None,
    **settings_and_options: OptionValue,
) -> AgentName:
    """Start an agent; the arguments are those of :func:`genagent_thespian.start_agent`."""
    target = _system(system)
    spec = build_start_spec(impl, name, backend, target, settings_and_options)
    return await transport_for(target).run(calls.start_agent(target, spec, timeout))


async def stop(
    name: AgentName,
    *,
    timeout: float | None = calls.STOP_TIMEOUT,
    system: AgentSystem | None = None,
) -> None:
    """Stop agent ``name`` for good (see :func:`genagent_thespian.stop`)."""
    await _run(system, calls.stop, name, timeout)


async def whereis(name: AgentName, *, system: AgentSystem | None = None) -> Sender:
    """The address of agent ``name``, or ``None``."""
    return await _run(system, calls.whereis, name)


async def list_agents(
    *, timeout: float | None = calls.CONTROL_TIMEOUT, system: AgentSystem | None = None
) -> list[AgentName]:
    """The names of every registered agent (``AskTimeout`` after ``timeout`` seconds)."""
    result: list[AgentName] = await _run(system, calls.list_agents, timeout)
    return result


async def sessions(*, system: AgentSystem | None = None) -> GovernorStatus | None:
    """The session governor's figures, or ``None`` when live sessions are not capped."""
    result: GovernorStatus | None = await _run(system, calls.sessions)
    return result


# =============================================================================== turns


async def ask(
    name: AgentName,
    prompt: str,
    timeout: float | None = None,
    *,
    interrupt_on_cancel: bool = False,
    system: AgentSystem | None = None,
) -> Response:
    """Run ``prompt`` as a turn of agent ``name`` and return its ``Response``.

    Cancelling the awaiting task stops the wait; the turn runs on unless
    ``interrupt_on_cancel`` is true, in which case a running turn is interrupted. Errors
    are those of :func:`genagent_thespian.ask`.
    """
    target = _system(system)
    calls.check_prompt(prompt, name)
    message = Prompt(prompt)
    channel = transport_for(target)
    try:
        response: Response = await channel.run(calls.ask(target, name, message, timeout))
    except asyncio.CancelledError:
        if interrupt_on_cancel:
            _abandon(target, channel, name, message.ref)
        raise
    return response


def _abandon(target: AgentSystem, channel: AsyncTransport, name: AgentName, ref: str) -> None:
    """Interrupt request ``ref`` if it is the running turn (its answer then goes nowhere)."""
    address = target.cached_address(name)
    if address is not None:
        channel.send_nowait(address, Interrupt(ref))  # ends the turn only if it is this one


async def stream(
    name: AgentName,
    prompt: str,
    timeout: float | None = None,
    *,
    interrupt_on_cancel: bool = False,
    system: AgentSystem | None = None,
) -> AsyncIterator[Event | Response]:
    """Yield the turn's events as they happen, then its ``Response`` (or raise its error).

    See :func:`genagent_thespian.stream`. Leaving the loop early ends the subscription; a
    cancelled task also ends the turn when ``interrupt_on_cancel`` is true.
    """
    target = _system(system)
    calls.check_prompt(prompt, name)
    message = Prompt(prompt)
    channel = transport_for(target)
    channel.subscriptions.add(name)
    steps = channel.run_stream(calls.stream(target, name, message, timeout))
    try:
        async with contextlib.aclosing(steps):
            async for kind, value in steps:
                yield value if kind == "result" else value.event
    except asyncio.CancelledError:
        if interrupt_on_cancel:
            _abandon(target, channel, name, message.ref)
        raise
    finally:
        _unwatch(target, channel, name, message.ref)


@contextlib.asynccontextmanager
async def watch(
    name: AgentName, *, system: AgentSystem | None = None
) -> AsyncIterator[AsyncIterator[TurnEvent]]:
    """Subscribe to everything agent ``name`` runs, for the ``async with`` block.

    The subscription is in place when the block starts (so the turns it then starts are
    seen whole) and ends with the block. The iterator yields a ``TurnEvent`` for each event
    of each turn and ends when the agent is stopped; see :func:`genagent_thespian.watch`.

    Example:
        >>> async with aio.watch("coder") as events:  # doctest: +SKIP
        ...     async for turn_event in events:
        ...         print(turn_event.ref, turn_event.event.kind)
    """
    target = _system(system)
    channel = transport_for(target)
    ref = new_ref()
    channel.subscriptions.add(name)
    try:
        await channel.run(calls.subscribe(target, name, ref))
    except BaseException:
        channel.subscriptions.remove(name)
        raise
    steps = channel.run_stream(calls.watch(target, name, ref))

    async def events() -> AsyncIterator[TurnEvent]:
        """The subscription's events only (the plan's result, if any, is not an event)."""
        async for kind, value in steps:
            if kind == "progress":
                yield value

    try:
        yield events()
    finally:
        await steps.aclose()
        _unwatch(target, channel, name, ref)


def _unwatch(target: AgentSystem, channel: AsyncTransport, name: AgentName, ref: str) -> None:
    """Unsubscribe once no stream of this transport follows ``name`` any more.

    Sent without waiting: this runs in ``finally`` of a stream that may be cancelled, where
    awaiting an answer could itself be cancelled and leave the agent sending events.
    """
    if not channel.subscriptions.remove(name):
        return  # another stream or watch of this transport still follows the agent
    address, message = calls.unwatch_message(target, name, ref)
    if address is not None and not channel.stopped:
        channel.send_nowait(address, message)


async def tell(
    name: AgentName,
    prompt: str,
    *,
    timeout: float | None = calls.CONTROL_TIMEOUT,
    system: AgentSystem | None = None,
) -> str:
    """Queue ``prompt`` at agent ``name`` and return its ref (``timeout`` bounds the queueing)."""
    result: str = await _run(system, calls.tell, name, prompt, timeout)
    return result


async def poll(
    name: AgentName,
    ref: str,
    *,
    timeout: float | None = calls.CONTROL_TIMEOUT,
    system: AgentSystem | None = None,
) -> PollResult:
    """Where the tell ``ref`` stands: pending, completed or failed."""
    result: PollResult = await _run(system, calls.poll, name, ref, timeout)
    return result


async def notify(name: AgentName, event: UserTerm, *, system: AgentSystem | None = None) -> None:
    """Deliver ``event`` to agent ``name``'s ``handle_event``."""
    await _run(system, calls.notify, name, event)


async def interrupt(
    name: AgentName, ref: str | None = None, *, system: AgentSystem | None = None
) -> str:
    """End agent ``name``'s running turn (only ``ref``, when given); return its ref."""
    result: str = await _run(system, calls.interrupt, name, ref)
    return result


async def cancel(name: AgentName, ref: str, *, system: AgentSystem | None = None) -> None:
    """Remove the queued tell ``ref`` before it runs."""
    await _run(system, calls.cancel, name, ref)


async def halt(name: AgentName, *, system: AgentSystem | None = None) -> None:
    """Halt agent ``name`` after its current turn."""
    await _run(system, calls.halt, name)


async def resume(name: AgentName, *, system: AgentSystem | None = None) -> None:
    """Unhalt agent ``name`` and let it drain its queue."""
    await _run(system, calls.resume, name)


async def status(
    name: AgentName,
    *,
    timeout: float | None = calls.CONTROL_TIMEOUT,
    system: AgentSystem | None = None,
) -> AgentStatus:
    """A snapshot of agent ``name`` (``AskTimeout`` after ``timeout`` seconds)."""
    result: AgentStatus = await _run(system, calls.status, name, timeout)
    return result


async def backend_session(name: AgentName, *, system: AgentSystem | None = None) -> Session:
    """Agent ``name``'s current backend session (data)."""
    return await _run(system, calls.backend_session, name)
