"""The client calls as plans: one implementation under the sync and the asyncio API.

A *plan* is a generator that yields :class:`Exchange` requests ("send this, wait for the
reply that matches") and receives each reply back; it returns the call's result or raises
its typed error. It does no I/O itself, so the same plan runs under two drivers:
:func:`run` (a thread's own Thespian endpoint, the sync API in ``client``) and the asyncio
transport of :mod:`genagent_thespian.aio` (one thread for every task). Everything a call
decides (which message, which reply counts, what a restart means for it, which error to
raise) is written once, here.

An exchange may also name ``progress`` messages (a turn's streamed ``TurnEvent``): drivers
hand those to the caller as they arrive (:func:`run_stream`) while the exchange waits for
its final reply.

How a plan and a driver take turns, for ``ask(name, prompt)`` with the address unknown::

    plan (this module)                          driver (run / AsyncTransport)
      yield Exchange(registry, WhereIs(name)) ->  send, wait for Located
      <- Located(address, incarnation)  <-------
      yield Exchange(address, Prompt(ref),     ->  send, wait for Response/Failure(ref);
                     on_idle=check_alive)          each silent slice: run check_alive
      <- Response                       <-------
      return response (or raise the Failure's error)

Keeping the decisions out of the drivers is what lets the sync and the asyncio API agree
on every edge: which restart loses a request, which reply belongs to which call, when a
sleeping agent is woken.
"""

from __future__ import annotations

import pickle
import time
from collections.abc import Callable, Generator, Hashable
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeVar

from .._actors.directory import NoServices, Services, WhereAreServices
from .._actors.governor import SessionsStatus
from .._core import validate
from .._core.errors import (
    AgentNotFound,
    AgentStopped,
    AskTimeout,
    InvalidEvent,
    InvalidOption,
)
from .._core.governor import GovernorStatus
from .._core.protocol import _BackendSession, _GovernorAt, _SessionReply, _WhereIsGovernor
from .._core.turn import Response
from .._core.types import ActorAddress, AgentName, Sender, Session, UserTerm, WireMessage
from ..messages import (
    Accepted,
    AgentList,
    AgentSpec,
    AgentStarted,
    AgentStatus,
    Cancel,
    Failure,
    Halt,
    Interrupt,
    ListAgents,
    Located,
    Notify,
    Poll,
    PollResult,
    Prompt,
    Resume,
    StartAgent,
    Status,
    StopAgent,
    Stopped,
    Tell,
    TurnEvent,
    Watch,
    WhereIs,
)

if TYPE_CHECKING:
    from .system import AgentSystem

__all__ = [
    "CONTROL_TIMEOUT",
    "START_TIMEOUT",
    "STOP_TIMEOUT",
    "Exchange",
    "Plan",
    "ask",
    "backend_session",
    "cancel",
    "check_prompt",
    "halt",
    "interrupt",
    "list_agents",
    "notify",
    "poll",
    "resume",
    "run",
    "run_stream",
    "services_moved",
    "start_agent",
    "status",
    "stop",
    "stream",
    "subscribe",
    "tell",
    "unwatch_message",
    "watch",
    "watch_ref",
    "whereis",
]

T = TypeVar("T")

#: Seconds for calls the agent answers at once (status, poll...).
CONTROL_TIMEOUT = 30.0
#: Seconds ``start_agent`` waits by default (sync and asyncio API alike) for the agent's
#: ``init_agent``, its backend session and ``pre_run``.
START_TIMEOUT = 120.0
#: Seconds ``stop`` waits by default for the agent's processes to end and its name to be free.
STOP_TIMEOUT = 60.0
#: Seconds a name look-up waits for the registry before asking the node's directory where
#: the services are now (after a leader failover they moved; ``_nodes/leadership.py``).
LOOKUP_SLICE = 3.0
#: Seconds the node's own directory has to answer that question.
_DIRECTORY_SLICE = 2.0


@dataclass(slots=True)
class Exchange:
    """One request of a plan: send ``message`` to ``address``, wait for a reply that matches.

    Attributes:
        address: The actor to send to.
        message: The request (sent again, after ``before``, to a new address from ``on_idle``).
        matches: Whether a reply is this exchange's answer.
        timeout: Seconds before ``AskTimeout``; ``None`` waits as long as ``on_idle`` allows.
        key: The ``ref`` every answer carries, when there is one (the asyncio transport
            routes replies by it).
        exclusive: The answer cannot be told apart from another call's by content
            (``Accepted(None)`` from halt, resume, notify): a driver that shares one
            endpoint between calls must run such exchanges one at a time.
        on_idle: Called every couple of seconds without an answer; returns a plan whose
            result is ``None`` (keep waiting) or a new address to send ``message`` to; the
            plan may raise to give up (the agent is gone).
        before: Messages sent (without waiting) ahead of ``message``, on every (re)send.
        progress: Intermediate messages to hand to the caller while waiting (a stream).
        shared: Exchanges with the same ``shared`` key ask the same question (where is
            agent X?): a driver running many calls at once may send one and give its answer
            to all (a thousand waiting asks check their agent's liveness together).
    """

    address: ActorAddress
    message: object
    matches: Callable[[object], bool]
    timeout: float | None
    key: str | None = None
    exclusive: bool = False
    on_idle: Callable[[], Plan[Sender]] | None = None
    before: tuple[object, ...] = ()
    progress: Callable[[object], bool] | None = None
    shared: Hashable = None


Plan = Generator[Exchange, WireMessage, T]


# =============================================================================== drivers


def run(system: AgentSystem, plan: Plan[T]) -> T:
    """Run ``plan`` to its result on the calling thread's endpoint of ``system``."""
    steps = run_stream(system, plan)
    while True:
        try:
            next(steps)  # progress messages have no consumer here
        except StopIteration as stop:
            value: T = stop.value
            return value


def run_stream(system: AgentSystem, plan: Plan[T]) -> Generator[WireMessage, None, T]:
    """Run ``plan`` on the calling thread, yielding its exchanges' progress messages.

    The driver's whole protocol: each ``Exchange`` the plan yields is carried out and its
    answer sent back into the plan (``plan.send``); an exchange that fails (a timeout, a
    ``PoisonMessage``, ``SystemNotRunning``) is raised *into* the plan (``plan.throw``), so
    the plan decides whether that ends the call, and with which error. The plan is closed
    however the run ends, so its ``finally`` clauses run on this thread.
    """
    try:
        step = next(plan)
        while True:
            try:
                reply = yield from system.exchange_stream(
                    step.address,
                    step.message,
                    step.matches,
                    timeout=step.timeout,
                    on_idle=_sync_idle(system, step.on_idle),
                    before=step.before,
                    progress=step.progress,
                )
            except Exception as exc:
                step = plan.throw(exc)
                continue
            step = plan.send(reply)
    except StopIteration as stop:
        value: T = stop.value
        return value
    finally:
        plan.close()


def _sync_idle(
    system: AgentSystem, factory: Callable[[], Plan[Sender]] | None
) -> Callable[[], Sender] | None:
    """Turn an ``on_idle`` plan factory into the plain callable the sync driver calls.

    The liveness check is itself a plan (it asks the registry); the sync driver runs it to
    its end, nested, from the waiting thread.
    """
    if factory is None:
        return None
    return lambda: run(system, factory())


# =============================================================================== agents


def start_agent(system: AgentSystem, spec: AgentSpec, timeout: float | None) -> Plan[AgentName]:
    """Start the agent of ``spec`` under the supervisor; return its name.

    ``StartAgent`` carries no ref, so the answer is matched by the agent's name: an
    ``AgentStarted`` for it, or a ref-less ``Failure`` naming it. While it waits, the call
    follows the services to a new leader (a failover during a start) and sends the start
    again there.
    """
    name = spec.name
    reply = yield Exchange(
        system.supervisor,
        StartAgent(spec),
        lambda m: (
            (isinstance(m, AgentStarted) and m.name == name)
            or (isinstance(m, Failure) and m.ref is None and m.error.agent == name)
        ),
        timeout,
        on_idle=_follow_services(system, "supervisor"),
    )
    started: AgentStarted = _unwrap(reply)
    system.remember(name, started.address)  # incarnation unknown: the first call looks it up
    return name


def stop(system: AgentSystem, name: AgentName, timeout: float | None) -> Plan[None]:
    """Stop agent ``name`` for good.

    Returns once the agent's process is gone and its name is free: starting the same name
    right after works. The cached address is forgotten whatever the answer.
    """
    reply = yield Exchange(
        system.supervisor,
        StopAgent(name),
        lambda m: (
            (isinstance(m, Stopped) and m.name == name)
            or (isinstance(m, Failure) and m.ref is None and m.error.agent == name)
        ),
        timeout,
        on_idle=_follow_services(system, "supervisor"),
    )
    system.remember(name, None)
    _unwrap(reply)


def whereis(system: AgentSystem, name: AgentName) -> Plan[Sender]:
    """The address of agent ``name``, or ``None``."""
    located = yield from _locate(system, name)
    return located.address


def list_agents(
    system: AgentSystem, timeout: float | None = CONTROL_TIMEOUT
) -> Plan[list[AgentName]]:
    """The names of every registered agent."""
    reply = yield Exchange(
        system.registry,
        ListAgents(),
        lambda m: isinstance(m, AgentList),
        timeout,
        on_idle=_follow_services(system, "registry"),
    )
    return [entry.name for entry in reply.agents]


def sessions(system: AgentSystem) -> Plan[GovernorStatus | None]:
    """The session governor's figures; ``None`` when the system caps no live sessions.

    Two exchanges: the supervisor names its governor, which then answers for itself (the
    supervisor never waits on another actor)."""
    where = yield Exchange(
        system.supervisor,
        _WhereIsGovernor(),
        lambda m: isinstance(m, _GovernorAt),
        CONTROL_TIMEOUT,
        on_idle=_follow_services(system, "supervisor"),
        exclusive=True,
    )
    if where.address is None:
        return None
    figures: GovernorStatus = yield Exchange(
        where.address,
        SessionsStatus(),
        lambda m: isinstance(m, GovernorStatus),
        CONTROL_TIMEOUT,
        exclusive=True,
    )
    return figures


# =============================================================================== turns


def ask(
    system: AgentSystem, name: AgentName, message: Prompt, timeout: float | None
) -> Plan[Response]:
    """Run ``message`` as a turn and return its ``Response``."""
    check_prompt(message.text, name)
    reply = yield from _call_agent(system, name, message, timeout=timeout, ref=message.ref)
    answer: Response = _unwrap(reply)
    return answer


def stream(
    system: AgentSystem, name: AgentName, message: Prompt, timeout: float | None
) -> Plan[Response]:
    """Like :func:`ask`, with the turn's ``TurnEvent``\\ s as progress messages.

    The caller subscribes with ``Watch`` in the same breath as the prompt (sent first, so
    the agent has the subscriber before the turn starts), and must send :func:`unwatch`
    when it stops listening.
    """
    check_prompt(message.text, name)
    ref = message.ref
    reply = yield from _call_agent(
        system,
        name,
        message,
        timeout=timeout,
        ref=ref,
        before=(Watch(True, ref=watch_ref(ref)),),
        progress=lambda m: isinstance(m, TurnEvent) and m.ref == ref,
    )
    answer: Response = _unwrap(reply)
    return answer


def subscribe(system: AgentSystem, name: AgentName, ref: str) -> Plan[None]:
    """Subscribe to agent ``name``'s ``TurnEvent``\\ s (subscription ``ref``), then return.

    Separate from :func:`watch` so a watcher is subscribed before its caller goes on to
    start the turns it wants to see.
    """
    subscription = Watch(True, ref=watch_ref(ref))
    reply = yield from _call_agent(
        system, name, subscription, timeout=CONTROL_TIMEOUT, ref=subscription.ref, kinds=(Accepted,)
    )
    _unwrap(reply)


def watch(system: AgentSystem, name: AgentName, ref: str) -> Plan[None]:
    """Follow every turn of agent ``name`` (progress messages) until the agent is gone.

    Runs after :func:`subscribe`. Follows the agent through restarts (subscribing again at
    its new address); returns when it is stopped.
    """
    try:
        yield from _call_agent(
            system,
            name,
            Watch(True, ref=watch_ref(ref)),  # idempotent: also re-subscribes after a restart
            timeout=None,
            follow_restarts=True,
            progress=lambda m: isinstance(m, TurnEvent) and m.agent == name,
            answer=lambda m: False,
        )
    except (AgentStopped, AgentNotFound):
        return  # stopped (or stopped before the first event was awaited)


def unwatch_message(system: AgentSystem, name: AgentName, ref: str) -> tuple[Sender, Watch]:
    """The ``(address, Watch(False))`` that ends subscription ``ref``, sent without waiting.

    Its ``Accepted`` echo carries the subscription's ref, so it can never be taken for
    another call's answer.
    """
    return system.cached_address(name), Watch(False, ref=watch_ref(ref))


def watch_ref(ref: str) -> str:
    """The ref of the ``Watch`` subscription that serves the stream of request ``ref``."""
    return f"watch:{ref}"


def tell(
    system: AgentSystem, name: AgentName, prompt: str, timeout: float | None = CONTROL_TIMEOUT
) -> Plan[str]:
    """Queue ``prompt`` and return its ref."""
    check_prompt(prompt, name)
    message = Tell(prompt)
    reply = yield from _call_agent(
        system, name, message, timeout=timeout, ref=message.ref, kinds=(Accepted,)
    )
    _unwrap(reply)
    return message.ref


def poll(
    system: AgentSystem, name: AgentName, ref: str, timeout: float | None = CONTROL_TIMEOUT
) -> Plan[PollResult]:
    """Where the tell ``ref`` stands.

    Idempotent, so it follows the agent across a restart; the agent answers from its
    result cache without waiting for a running turn.
    """
    if not isinstance(ref, str):
        raise InvalidOption(f"ref must be a str, got {type(ref).__name__}", agent=name)
    reply = yield from _call_agent(
        system,
        name,
        Poll(ref),
        timeout=timeout,
        ref=ref,
        kinds=(PollResult,),
        idempotent=True,
    )
    answer: PollResult = _unwrap(reply)
    return answer


def notify(system: AgentSystem, name: AgentName, event: UserTerm) -> Plan[None]:
    """Deliver ``event`` to the agent's ``handle_event``."""
    if system.base != "simpleSystemBase":
        try:
            pickle.dumps(event)
        except Exception as exc:
            raise InvalidEvent(
                f"the event cannot be pickled for delivery: {type(exc).__name__}", agent=name
            ) from None
    reply = yield from _call_agent(
        system, name, Notify(event), timeout=CONTROL_TIMEOUT, kinds=(Accepted,)
    )
    _unwrap(reply)


def interrupt(system: AgentSystem, name: AgentName, ref: str | None) -> Plan[str]:
    """End the running turn (only ``ref``, when given); return the interrupted ref."""
    reply = yield from _control(system, name, Interrupt(ref), ref=ref)
    return reply.ref or ""


def cancel(system: AgentSystem, name: AgentName, ref: str) -> Plan[None]:
    """Remove the queued tell ``ref``."""
    yield from _control(system, name, Cancel(ref), ref=ref)


def halt(system: AgentSystem, name: AgentName) -> Plan[None]:
    """Halt the agent after its current turn."""
    yield from _control(system, name, Halt())


def resume(system: AgentSystem, name: AgentName) -> Plan[None]:
    """Unhalt the agent."""
    yield from _control(system, name, Resume())


def status(
    system: AgentSystem, name: AgentName, timeout: float | None = CONTROL_TIMEOUT
) -> Plan[AgentStatus]:
    """A snapshot of the agent; a hibernated one is answered by the registry, not woken.

    The name is always looked up first (without waiting): a cached address may belong to
    a process that has since gone to sleep, and asking it would wake the agent. ``timeout``
    bounds both steps together.
    """
    deadline = None if timeout is None else time.monotonic() + timeout
    located = yield from _locate(system, name, timeout=timeout)
    if located.hibernated and not located.restarting and located.status is not None:
        return located.status
    try:
        reply = yield from _call_agent(
            system,
            name,
            Status(),
            timeout=None if deadline is None else max(0.0, deadline - time.monotonic()),
            kinds=(AgentStatus,),
            idempotent=True,
            wake=False,
            answer=lambda m: (
                (isinstance(m, AgentStatus) and m.name == name)
                or (isinstance(m, Failure) and m.ref is None and m.error.agent == name)
            ),
        )
    except _Asleep as asleep:
        if asleep.status is None:  # a registry of an older version keeps no snapshot
            raise AgentNotFound("the agent is hibernated", agent=name) from None
        return asleep.status  # it went to sleep as this status was sent
    answer: AgentStatus = _unwrap(reply)
    return answer


def backend_session(system: AgentSystem, name: AgentName) -> Plan[Session]:
    """The agent's current backend session."""
    reply = yield from _call_agent(
        system,
        name,
        _BackendSession(),
        timeout=CONTROL_TIMEOUT,
        kinds=(_SessionReply,),
        idempotent=True,
    )
    session_reply: _SessionReply = _unwrap(reply)
    return session_reply.session


def _control(
    system: AgentSystem, name: AgentName, message: object, *, ref: str | None = None
) -> Plan[Accepted]:
    """Send a control message (halt, resume, interrupt...) answered ``Accepted`` or ``Failure``.

    Bounded by ``CONTROL_TIMEOUT``: the agent answers these at once even mid-turn, so a
    silence that long means it is gone, not busy.
    """
    reply = yield from _call_agent(
        system, name, message, timeout=CONTROL_TIMEOUT, kinds=(Accepted,), ref=ref
    )
    answer: Accepted = _unwrap(reply)
    return answer


# =============================================================================== plumbing


def _unwrap(reply: WireMessage) -> WireMessage:
    """Return a call's reply, or raise the typed error a ``Failure`` carries.

    Every call ends here, so the sync and the asyncio API raise the same error the agent,
    the supervisor or the registry decided on, with its context (agent, ref) intact.
    """
    if isinstance(reply, Failure):
        raise reply.error
    return reply


def _call_agent(
    system: AgentSystem,
    name: AgentName,
    message: object,
    *,
    timeout: float | None,
    ref: str | None = None,
    kinds: tuple[type, ...] = (Response,),
    idempotent: bool = False,
    follow_restarts: bool = False,
    before: tuple[object, ...] = (),
    progress: Callable[[object], bool] | None = None,
    answer: Callable[[object], bool] | None = None,
    wake: bool = True,
) -> Plan[WireMessage]:
    """Send ``message`` to agent ``name`` and wait for its answer, watching that it lives.

    If the agent was restarted meanwhile, an ``idempotent`` request (status, poll) or any
    request to a durable agent is sent again to the new process (``follow_restarts``: any
    agent, for subscriptions); anything else was lost with the old one and fails with
    ``AgentStopped``. ``answer``, when given, decides alone which reply is the answer
    (instead of ``kinds`` and ``ref``). An agent that hibernated meanwhile is woken and
    sent the request again, unless ``wake`` is false: then ``_Asleep`` is raised.
    """
    deadline = None if timeout is None else time.monotonic() + timeout

    def remaining() -> float | None:
        """Seconds left of the call's own timeout (``None``: no limit)."""
        return None if deadline is None else max(0.0, deadline - time.monotonic())

    def left() -> float:
        """A look-up's timeout: the control timeout, or less when the call's own runs out."""
        rest = remaining()
        return CONTROL_TIMEOUT if rest is None else min(CONTROL_TIMEOUT, rest)

    address = system.cached_address(name)
    incarnation = system.cached_incarnation(name)
    if address is None or incarnation is None:
        # While the agent restarts, the registry answers once it is back (or gone for good).
        located = yield from _locate(system, name, wait=True, timeout=remaining(), ref=ref)
        if located.address is None and located.stopped:
            raise AgentStopped("the agent was stopped", agent=name, ref=ref)
        if located.address is None:
            raise AgentNotFound("no agent has that name", agent=name, ref=ref)
        address, incarnation = located.address, located.incarnation

    def matches(reply: object) -> bool:
        """Whether ``reply`` is this call's answer, by ``answer`` or by its kind and ref."""
        if answer is not None:
            return answer(reply)
        if isinstance(reply, Failure):
            if ref is not None:
                return reply.ref == ref
            # No ref: a failure of another call (an abandoned ask's) carries its own ref.
            return reply.ref is None and reply.error.agent == name
        if not isinstance(reply, kinds):
            return False
        return ref is None or getattr(reply, "ref", None) == ref

    current = {"address": address, "incarnation": incarnation}

    def check_alive() -> Plan[Sender]:
        """The exchange's ``on_idle``: where to resend, or ``None`` to keep waiting, or raise.

        Asked at every silent slice: a registry lookup says whether the agent still runs at the
        same address and incarnation. A new incarnation gets the request again only if that
        cannot run it twice (``durable``, ``idempotent``, ``follow_restarts``); otherwise the
        request died with the old process and the caller hears ``AgentStopped`` now rather than
        at its own timeout.
        """
        if deadline is not None and time.monotonic() >= deadline:
            return None  # the exchange itself answers AskTimeout
        try:
            located = yield from _locate(system, name, timeout=left(), ref=ref)
        except AskTimeout:
            # The registry did not answer this check in time (a node overloaded by CLI
            # start-ups was measured to hold it past 30 s): the call still has time, so
            # it goes on waiting and checks again at its next idle spell.
            return None
        if located.address is None and located.hibernated and not located.restarting and not wake:
            raise _Asleep(located.status)
        if located.address is None and located.hibernated:
            # It went to sleep after this request was sent to it (or while it waited):
            # wake it, and send the request to the new incarnation below.
            located = yield from _locate(system, name, wait=True, timeout=left(), ref=ref)
        if located.address is None:
            if located.restarting:
                return None  # the supervisor is bringing it back: keep waiting
            raise AgentStopped(
                "the agent is gone; this request was not answered", agent=name, ref=ref
            )
        if (located.address, located.incarnation) == (current["address"], current["incarnation"]):
            return None
        if not (located.durable or idempotent or follow_restarts):
            raise AgentStopped(
                "the agent was restarted and this request was lost with its old process",
                agent=name,
                ref=ref,
            )
        # A durable agent came back: it holds the request if it got it, and drops the
        # same ref sent again; if it never got it, this delivers it.
        current["address"], current["incarnation"] = located.address, located.incarnation
        return located.address

    try:
        return (
            yield Exchange(
                address,
                message,
                matches,
                remaining(),
                key=ref,
                exclusive=ref is None and Accepted in kinds,
                on_idle=check_alive,
                before=before,
                progress=progress,
            )
        )
    except AskTimeout:
        still = "the turn keeps running" if isinstance(message, Prompt) else "it may still apply"
        within = "in time" if timeout is None else f"within {timeout:g}s"
        raise AskTimeout(f"no answer {within} ({still})", agent=name, ref=ref) from None


class _Asleep(Exception):
    """The agent hibernated while a request that must not wake it waited (``status``)."""

    def __init__(self, status: AgentStatus | None) -> None:
        super().__init__("the agent is hibernated")
        self.status = status


def _locate(
    system: AgentSystem,
    name: AgentName,
    *,
    wait: bool = False,
    timeout: float | None = CONTROL_TIMEOUT,
    ref: str | None = None,
) -> Plan[Located]:
    """Ask the registry where ``name`` runs; with ``wait``, a restarting agent's answer waits
    until it is back (or gone for good), bounded by ``timeout``.

    ``timeout`` also bounds a registry that does not answer (a lost convention leader's).
    A registry silent for :data:`LOOKUP_SLICE` may be a dead leader's: the node's directory
    is asked where the services are now, and the look-up goes on with the registry it names.
    """
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        left = None if deadline is None else max(0.0, deadline - time.monotonic())
        try:
            reply: Located = yield Exchange(
                system.registry,
                WhereIs(name, wait=wait),
                lambda m: isinstance(m, Located) and m.name == name,
                LOOKUP_SLICE if left is None else min(left, LOOKUP_SLICE),
                shared=("whereis", name, wait),
            )
            break
        except AskTimeout:
            if deadline is not None and time.monotonic() >= deadline:
                if wait:  # the agent did not come back in time: the caller's own timeout
                    raise AskTimeout(
                        f"agent {name!r} was not back within {timeout:.1f}s", agent=name, ref=ref
                    ) from None
                raise AskTimeout(
                    f"the registry did not answer the name look-up within {timeout or 0:.1f}s "
                    "(is the convention leader reachable?)",
                    agent=name,
                    ref=ref,
                ) from None
            yield from services_moved(system)
    system.remember(name, reply.address, reply.incarnation)
    return reply


def services_moved(system: AgentSystem) -> Plan[bool]:
    """Ask this node's directory where the services are; use them; return whether they moved.

    Marked ``shared``: when a thousand waiting calls notice silence at once, the asyncio
    driver asks the directory once. A directory that does not answer in time means the
    services did not move, as far as this node knows.
    """
    if system.base == "simpleSystemBase":
        return False
    try:
        services = yield Exchange(
            system.directory,
            WhereAreServices(),
            lambda m: isinstance(m, Services | NoServices),
            _DIRECTORY_SLICE,
            shared=("services",),
        )
    except AskTimeout:
        return False
    return system.adopt_services(services)


def _follow_services(system: AgentSystem, service: str) -> Callable[[], Plan[Sender]]:
    """An ``on_idle`` for a call to one of the convention's services (``"supervisor"``...).

    While the call waits, the node's directory is asked whether the services moved (a leader
    failover); if they did, the call is sent again to the new service. The old one is a dead
    or deposed leader's, so the request runs at most once.
    """

    def on_idle() -> Plan[Sender]:
        moved = yield from services_moved(system)
        return getattr(system, service) if moved else None

    return on_idle


def check_prompt(prompt: object, name: AgentName) -> None:
    """Raise ``InvalidPrompt`` unless ``prompt`` is a non-empty ``str`` (``_core/validate``)."""
    validate.check_prompt(prompt, agent=name)
