"""The client API: start agents and talk to them by name, from any thread.

Every function takes an optional ``system=``; without it the process's default system is
used (the one :func:`start_system` or :func:`attach_system` made current). Each call is one
or two messages of the public protocol in :mod:`genagent_thespian.messages`, so anything
here can also be done with raw Thespian ``ask``.

Errors are typed (see :mod:`genagent_thespian._core.errors`); every ``ask`` and ``tell`` gets
exactly one answer: a ``Response``, an error, or ``AskTimeout`` when the *caller's* own
timeout runs out first (the request itself then keeps running).
"""

from __future__ import annotations

import pickle
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from .._core.behaviour import GenAgent
from .._core.errors import (
    AgentNotFound,
    AgentStopped,
    AskTimeout,
    InvalidEvent,
    InvalidOption,
    SystemNotRunning,
)
from .._core.protocol import _BackendSession, _SessionReply
from .._core.turn import Response
from .._core.validate import SPEC_DEFAULTS, build_spec, check_prompt
from ..messages import (
    Accepted,
    AgentList,
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
    WhereIs,
)
from .system import AgentSystem

__all__ = [
    "ask",
    "attach_system",
    "backend_session",
    "cancel",
    "current_system",
    "halt",
    "interrupt",
    "list_agents",
    "notify",
    "poll",
    "resume",
    "shutdown_system",
    "start_agent",
    "start_system",
    "status",
    "stop",
    "tell",
    "whereis",
]

_Reply = TypeVar("_Reply")

_CONTROL_TIMEOUT = 30.0  # seconds for calls the agent answers at once (status, poll...)
#: Seconds a name look-up waits for the registry before asking the node where the services are
#: now (after a leader failover they moved; see ``AgentSystem.refresh_services``).
_LOOKUP_SLICE = 3.0

_default_lock = threading.Lock()
_default: AgentSystem | None = None


# =============================================================================== systems


def start_system(
    *,
    base: str = "multiprocTCPBase",
    admin_port: int | None = None,
    capabilities: dict[str, Any] | None = None,
    log_config: dict[str, Any] | None = None,
    store_path: str | None = None,
    node_name: str = "default",
    home: str | None = None,
    make_default: bool = True,
    **security: Any,
) -> AgentSystem:
    """Start an actor system, boot the framework in it and (by default) make it current.

    The system belongs to the calling script: it shuts down when the script ends, however
    it ends (``with start_system() as system:`` ends it earlier). Its durable agents live in
    the node's home (``$XDG_STATE_HOME/genagent-thespian/<node_name>/``), so the next run
    of the script resumes them; one running system per home.

    Example:
        >>> system = start_system(base="simpleSystemBase")
        >>> system.shutdown()
    """
    system = AgentSystem.start(
        base=base,
        admin_port=admin_port,
        capabilities=capabilities,
        log_config=log_config,
        store_path=store_path,
        node_name=node_name,
        home=home,
        **security,
    )
    if make_default:
        _set_default(system)
    return system


def attach_system(admin_port: int, *, make_default: bool = True) -> AgentSystem:
    """Attach to a running system on this host's ``admin_port`` (e.g. a ``genagent`` node)."""
    system = AgentSystem.attach(admin_port)
    if make_default:
        _set_default(system)
    return system


def shutdown_system(system: AgentSystem | None = None) -> None:
    """Shut down ``system`` (default: the current one) and forget it as current."""
    global _default
    target = system or _default
    if target is None:
        return
    target.shutdown()
    with _default_lock:
        if _default is target:
            _default = None


def current_system() -> AgentSystem:
    """Return the current system, or raise ``SystemNotRunning``."""
    system = _default
    if system is None or system.closed:
        raise SystemNotRunning("no agent system is running; call start_system() or attach_system()")
    return system


def default_system() -> AgentSystem | None:
    """The process's default system, or ``None`` (unlike :func:`current_system`, no error)."""
    return _default


def _set_default(system: AgentSystem) -> None:
    global _default
    with _default_lock:
        _default = system


def _system(system: AgentSystem | None) -> AgentSystem:
    return system if system is not None else current_system()


# =============================================================================== agents


def start_agent(
    impl: type[GenAgent],
    *,
    name: Any,
    backend: Any,
    watchdog: float | None = SPEC_DEFAULTS.watchdog,
    max_tell_results: int = SPEC_DEFAULTS.max_tell_results,
    max_queued: int = SPEC_DEFAULTS.max_queued,
    max_queued_bytes: int = SPEC_DEFAULTS.max_queued_bytes,
    worker_idle_timeout: float = SPEC_DEFAULTS.worker_idle_timeout,
    restart: str = SPEC_DEFAULTS.restart,
    max_restarts: int = SPEC_DEFAULTS.max_restarts,
    restart_window: float = SPEC_DEFAULTS.restart_window,
    durable: bool = SPEC_DEFAULTS.durable,
    backoff_initial: float = SPEC_DEFAULTS.backoff_initial,
    backoff_factor: float = SPEC_DEFAULTS.backoff_factor,
    backoff_max: float = SPEC_DEFAULTS.backoff_max,
    jitter: float = SPEC_DEFAULTS.jitter,
    placement: Mapping[str, Any] | None = None,
    on_session_lost: str = SPEC_DEFAULTS.on_session_lost,
    secret_resolver: Any = None,
    timeout: float | None = 120.0,
    system: AgentSystem | None = None,
    **options: Any,
) -> Any:
    """Start an agent under the supervisor and register it under ``name``.

    Args:
        impl: The ``GenAgent`` subclass (in an importable module).
        name: Any hashable, picklable term; callers use it for every later call.
        backend: A ``Backend`` subclass or a short name (``"scripted"``, ``"claude"``...).
        watchdog: Per-turn deadline in seconds (default 600), or ``None`` for none.
        max_tell_results: How many tell outcomes stay pollable (oldest evicted first).
        max_queued: Mailbox bound (count); beyond it requests get ``AgentOverloaded``.
        max_queued_bytes: Mailbox bound (UTF-8 bytes of queued prompts).
        worker_idle_timeout: Seconds before an idle agent's worker process is retired.
        restart: ``"temporary"`` (default), ``"transient"`` or ``"permanent"``.
        max_restarts: Restart intensity: at most this many restarts ...
        restart_window: ... within this many seconds, then the supervisor gives up.
        backoff_initial: Seconds before the first restart in a window (>= 0).
        backoff_factor: Growth of the delay per further restart in the window (>= 1).
        backoff_max: Upper bound of every delay in seconds (>= ``backoff_initial``).
        jitter: Relative spread of each delay, 0.0 (none) to 1.0.
        durable: Persist the agent's state so a restart resumes it.
        placement: Capabilities a node must have to run the agent (multi-host).
        on_session_lost: When the provider cannot resume the agent's session (the turn
            fails once with ``BackendError(kind="session_lost")``): ``"fail"`` (default)
            makes every later turn fail the same way, and ``status`` say so, until the
            agent is stopped and started again; ``"fresh"`` starts a new provider session
            for the next turn (``handle_error`` sees the failure; ``session.lost`` is
            emitted). Never a blank session the user did not ask for.
        secret_resolver: A durable agent never stores options (or session fields) named
            like secrets (``api_key``, ``*_token``, ``*_secret``...). When it resumes, each
            comes from the options given now, else from ``secret_resolver(name,
            option_name)`` (a module-level function), else ``None`` (the HTTP backends then
            read their environment variable).
        timeout: Seconds to wait for ``init_agent``/``start_session``/``pre_run``.
        system: The system to use (default: the current one).
        **options: Passed to ``init_agent``. A class that sets ``accepted_options`` gets only
            those; otherwise a name close to one of the framework's options (a typo such as
            ``watchdg``) is refused with a "did you mean" hint.

    Returns:
        The agent's name.

    Raises:
        InvalidOption, AgentAlreadyExists, AgentStartFailed.
    """
    target = _system(system)
    spec = build_spec(
        impl,
        name=name,
        backend=backend,
        options=options,
        watchdog=watchdog,
        max_tell_results=max_tell_results,
        max_queued=max_queued,
        max_queued_bytes=max_queued_bytes,
        worker_idle_timeout=worker_idle_timeout,
        restart=restart,
        max_restarts=max_restarts,
        restart_window=restart_window,
        backoff_initial=backoff_initial,
        backoff_factor=backoff_factor,
        backoff_max=backoff_max,
        jitter=jitter,
        durable=durable,
        placement=placement,
        on_session_lost=on_session_lost,
        secret_resolver=secret_resolver,
        require_importable=target.base != "simpleSystemBase",
    )
    reply = target.exchange(
        target.supervisor,
        StartAgent(spec),
        lambda m: (
            (isinstance(m, AgentStarted) and m.name == name)
            or (isinstance(m, Failure) and m.error.agent == name)
        ),
        timeout=timeout,
        on_idle=_follow_services(target, "supervisor"),
    )
    _unwrap(reply)
    target.remember(name, reply.address)  # incarnation unknown: the first call looks it up
    return name


def stop(name: Any, *, timeout: float | None = 60.0, system: AgentSystem | None = None) -> None:
    """Stop agent ``name`` for good: pending callers get ``AgentStopped``; its processes end.

    Raises:
        AgentNotFound: no agent has that name.
    """
    target = _system(system)
    reply = target.exchange(
        target.supervisor,
        StopAgent(name),
        lambda m: (
            (isinstance(m, Stopped) and m.name == name)
            or (isinstance(m, Failure) and m.error.agent == name)
        ),
        timeout=timeout,
        on_idle=_follow_services(target, "supervisor"),
    )
    target.remember(name, None)
    _unwrap(reply)


def whereis(name: Any, *, system: AgentSystem | None = None) -> Any:
    """Return the address of agent ``name``, or ``None`` if no live agent has it."""
    return _locate(name, _system(system)).address


def list_agents(*, system: AgentSystem | None = None) -> list[Any]:
    """Return the names of every registered agent."""
    target = _system(system)
    reply = target.exchange(
        target.registry,
        ListAgents(),
        lambda m: isinstance(m, AgentList),
        timeout=_CONTROL_TIMEOUT,
        on_idle=_follow_services(target, "registry"),
    )
    return [entry.name for entry in reply.agents]


# =============================================================================== turns


def ask(
    name: Any, prompt: str, timeout: float | None = None, *, system: AgentSystem | None = None
) -> Response:
    """Run ``prompt`` as a turn of agent ``name`` and return its ``Response``.

    Blocks until the turn ends; the agent's watchdog bounds it. With ``timeout`` the call
    gives up first with ``AskTimeout``, and the request keeps running or queued.

    Raises:
        InvalidPrompt, AgentNotFound, AgentOverloaded, AskTimeout, or the turn's
        ``TurnFailed`` subclass (``BackendError``, ``TurnTimeout``, ``TurnInterrupted``...).
    """
    check_prompt(prompt, agent=name)
    target = _system(system)
    message = Prompt(prompt)
    reply = _call_agent(target, name, message, timeout=timeout, ref=message.ref, kinds=(Response,))
    return _unwrap(reply)


def tell(name: Any, prompt: str, *, system: AgentSystem | None = None) -> str:
    """Queue ``prompt`` at agent ``name`` and return its ref for :func:`poll`.

    Raises:
        InvalidPrompt, AgentNotFound, AgentOverloaded.
    """
    check_prompt(prompt, agent=name)
    target = _system(system)
    message = Tell(prompt)
    reply = _call_agent(
        target, name, message, timeout=_CONTROL_TIMEOUT, ref=message.ref, kinds=(Accepted,)
    )
    _unwrap(reply)
    return message.ref


def poll(name: Any, ref: str, *, system: AgentSystem | None = None) -> PollResult:
    """Return where the tell ``ref`` stands: pending, completed or failed.

    A completed result carries ``.response``; a failed one carries ``.error``.

    An unknown or evicted ref is ``failed`` with ``RequestNotFound``.
    """
    if not isinstance(ref, str):
        raise InvalidOption(f"ref must be a str, got {type(ref).__name__}", agent=name)
    target = _system(system)
    reply = _call_agent(
        target,
        name,
        Poll(ref),
        timeout=_CONTROL_TIMEOUT,
        ref=ref,
        kinds=(PollResult,),
        idempotent=True,
    )
    return _unwrap(reply)


def notify(name: Any, event: Any, *, system: AgentSystem | None = None) -> None:
    """Deliver ``event`` to agent ``name``'s ``handle_event`` (buffered while a turn runs).

    Raises:
        InvalidEvent (unpicklable), AgentNotFound, AgentOverloaded, CallbackError (the
        agent was idle and ``handle_event`` failed).
    """
    target = _system(system)
    if target.base != "simpleSystemBase":
        try:
            pickle.dumps(event)
        except Exception as exc:
            raise InvalidEvent(
                f"the event cannot be pickled for delivery: {type(exc).__name__}", agent=name
            ) from None
    reply = _call_agent(target, name, Notify(event), timeout=_CONTROL_TIMEOUT, kinds=(Accepted,))
    _unwrap(reply)


def interrupt(name: Any, ref: str | None = None, *, system: AgentSystem | None = None) -> str:
    """End agent ``name``'s running turn (only if it is ``ref``, when given).

    Returns:
        The ref of the interrupted turn.

    Raises:
        RequestNotFound: no turn is running, or a different one is.
    """
    reply = _control(name, Interrupt(ref), system, ref=ref)
    return reply.ref or ""


def cancel(name: Any, ref: str, *, system: AgentSystem | None = None) -> None:
    """Remove the queued tell ``ref`` before it runs; its poll then fails with ``TurnCancelled``.

    Raises:
        RequestNotFound: the ref is running, finished or unknown.
    """
    _control(name, Cancel(ref), system, ref=ref)


def halt(name: Any, *, system: AgentSystem | None = None) -> None:
    """Halt agent ``name`` (after its current turn): queued work waits for :func:`resume`."""
    _control(name, Halt(), system)


def resume(name: Any, *, system: AgentSystem | None = None) -> None:
    """Unhalt agent ``name`` (or cancel a pending halt) and let it drain its queue."""
    _control(name, Resume(), system)


def status(name: Any, *, system: AgentSystem | None = None) -> AgentStatus:
    """Return a snapshot of agent ``name`` (answered at once, even mid-turn)."""
    reply = _call_agent(
        _system(system),
        name,
        Status(),
        timeout=_CONTROL_TIMEOUT,
        kinds=(AgentStatus,),
        idempotent=True,
    )
    return _unwrap(reply)


def backend_session(name: Any, *, system: AgentSystem | None = None) -> Any:
    """Return agent ``name``'s current backend session (data; tests read scripted history)."""
    reply = _call_agent(
        _system(system),
        name,
        _BackendSession(),
        timeout=_CONTROL_TIMEOUT,
        kinds=(_SessionReply,),
        idempotent=True,
    )
    return _unwrap(reply).session


def _control(
    name: Any, message: Any, system: AgentSystem | None, *, ref: str | None = None
) -> Accepted:
    reply = _call_agent(
        _system(system), name, message, timeout=_CONTROL_TIMEOUT, kinds=(Accepted,), ref=ref
    )
    return _unwrap(reply)


# =============================================================================== plumbing


def _call_agent(
    system: AgentSystem,
    name: Any,
    message: Any,
    *,
    timeout: float | None,
    kinds: tuple[type[_Reply], ...],
    ref: str | None = None,
    idempotent: bool = False,
) -> _Reply | Failure:
    """Send ``message`` to agent ``name`` and wait for its answer, watching that it lives.

    If the agent was restarted meanwhile, an ``idempotent`` request (status, poll) or any
    request to a durable agent is sent again to the new process; anything else was lost
    with the old one and fails with ``AgentStopped``.

    ``timeout`` bounds the whole call, the name look-ups included (a registry that does not
    answer, such as a lost convention leader's, cannot stretch it).
    """
    deadline = None if timeout is None else time.monotonic() + timeout

    def left() -> float:
        if deadline is None:
            return _CONTROL_TIMEOUT
        return min(_CONTROL_TIMEOUT, max(0.0, deadline - time.monotonic()))

    address = system.cached_address(name)
    incarnation = system.cached_incarnation(name)
    if address is None or incarnation is None:
        # While the agent restarts, the registry answers once it is back (or gone for good).
        remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
        located = _locate(name, system, wait=True, timeout=remaining, ref=ref)
        if located.address is None and located.stopped:
            raise AgentStopped("the agent was stopped", agent=name, ref=ref)
        if located.address is None:
            raise AgentNotFound("no agent has that name", agent=name, ref=ref)
        address, incarnation = located.address, located.incarnation

    def matches(reply: Any) -> bool:
        if not isinstance(reply, (*kinds, Failure)):
            return False
        return ref is None or getattr(reply, "ref", None) == ref

    current = {"address": address, "incarnation": incarnation}

    def check_alive() -> Any:
        if deadline is not None and time.monotonic() >= deadline:
            return None  # the exchange itself answers AskTimeout
        located = _locate(name, system, timeout=left(), ref=ref)
        if located.address is None:
            if located.restarting:
                return None  # the supervisor is bringing it back: keep waiting
            raise AgentStopped(
                "the agent is gone; this request was not answered", agent=name, ref=ref
            )
        if (located.address, located.incarnation) == (current["address"], current["incarnation"]):
            return None
        if not (located.durable or idempotent):
            raise AgentStopped(
                "the agent was restarted and this request was lost with its old process",
                agent=name,
                ref=ref,
            )
        # A durable agent came back: it holds the request if it got it, and drops the
        # same ref sent again; if it never got it, this delivers it.
        current["address"], current["incarnation"] = located.address, located.incarnation
        return located.address

    remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
    reply: _Reply | Failure = system.exchange(
        address, message, matches, timeout=remaining, on_idle=check_alive
    )
    return reply


def _follow_services(system: AgentSystem, service: str) -> Callable[[], Any]:
    """An ``on_idle`` for a call to one of the convention's services (``"supervisor"``...).

    While the call waits, the node's directory is asked whether the services moved (a leader
    failover, ``_nodes/leadership.py``); if they did, the call is sent again to the new
    service. The old one is a dead or deposed leader's, so the request runs at most once.
    """

    def on_idle() -> Any:
        if system.refresh_services(timeout=1.0):
            return getattr(system, service)
        return None

    return on_idle


def _locate(
    name: Any,
    system: AgentSystem,
    *,
    wait: bool = False,
    timeout: float | None = _CONTROL_TIMEOUT,
    ref: str | None = None,
) -> Located:
    """Ask the registry where ``name`` runs; with ``wait``, a restarting agent's answer waits
    until it is back (or gone for good), bounded by ``timeout``.

    A registry silent for a slice of the time may be a dead leader's: the node's directory is
    asked again for the services (a standby may have taken over, see
    ``_nodes/leadership.py``) and the look-up goes on with the registry it names.
    """
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        left = None if deadline is None else max(0.0, deadline - time.monotonic())
        try:
            reply: Located = system.exchange(
                system.registry,
                WhereIs(name, wait=wait),
                lambda m: isinstance(m, Located) and m.name == name,
                timeout=_LOOKUP_SLICE if left is None else min(left, _LOOKUP_SLICE),
            )
            break
        except AskTimeout:
            if deadline is not None and time.monotonic() >= deadline:
                if wait:  # the agent did not come back in time: the caller's own timeout
                    raise AskTimeout(
                        f"agent {name!r} was not back within {timeout:.1f}s", agent=name, ref=ref
                    ) from None
                raise AskTimeout(
                    f"the registry did not answer the name look-up within {timeout:.1f}s "
                    "(is the convention leader reachable?)",
                    agent=name,
                    ref=ref,
                ) from None
            refresh = 2.0 if deadline is None else min(2.0, deadline - time.monotonic())
            system.refresh_services(timeout=refresh)
    system.remember(name, reply.address, reply.incarnation)
    return reply


def _unwrap(reply: _Reply | Failure) -> _Reply:
    """Return a successful reply; raise the typed error a ``Failure`` reply carries.

    The one place where the protocol's failure replies become exceptions for callers.
    """
    if isinstance(reply, Failure):
        raise reply.error
    return reply
