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

import dataclasses
import math
import pickle
import threading
import time
from collections.abc import Mapping
from typing import Any

from .._core.backend import resolve_backend
from .._core.behaviour import GenAgent
from .._core.errors import (
    AgentNotFound,
    AgentStopped,
    AskTimeout,
    InvalidEvent,
    InvalidOption,
    InvalidPrompt,
    SystemNotRunning,
)
from .._core.protocol import _BackendSession, _SessionReply
from .._core.turn import Response
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
    WhereIs,
)
from .system import AgentSystem

__all__ = [
    "ask",
    "attach_system",
    "backend_session",
    "build_spec",
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

_RESTART_TYPES = ("temporary", "transient", "permanent")
_SESSION_LOST_POLICIES = ("fail", "fresh")
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
    make_default: bool = True,
    **security: Any,
) -> AgentSystem:
    """Start an actor system, boot the framework in it and (by default) make it current.

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


def _set_default(system: AgentSystem) -> None:
    global _default
    with _default_lock:
        _default = system


def _system(system: AgentSystem | None) -> AgentSystem:
    return system if system is not None else current_system()


# =============================================================================== agents


def build_spec(
    impl: Any,
    *,
    name: Any,
    backend: Any,
    options: Mapping[str, Any] | None = None,
    require_importable: bool = True,
    **settings: Any,
) -> AgentSpec:
    """Validate ``start_agent``'s arguments and return the ``AgentSpec``.

    ``settings`` are the framework's own options (``watchdog``, ``max_queued``, ``restart``...);
    those not given take ``AgentSpec``'s defaults, the one place they are defined.

    Raises:
        InvalidOption: with the offending argument named in the message.
    """
    defaults = {f.name: f.default for f in dataclasses.fields(AgentSpec)}
    unknown_settings = set(settings) - set(defaults) - {"placement"}
    if unknown_settings:
        raise InvalidOption(f"unknown setting(s) {sorted(unknown_settings)}", agent=name)
    merged = {**defaults, **{k: v for k, v in settings.items() if k != "placement"}}
    watchdog = merged["watchdog"]
    max_tell_results, max_queued = merged["max_tell_results"], merged["max_queued"]
    max_queued_bytes, max_restarts = merged["max_queued_bytes"], merged["max_restarts"]
    worker_idle_timeout, restart = merged["worker_idle_timeout"], merged["restart"]
    restart_window, durable = merged["restart_window"], merged["durable"]
    on_session_lost = merged["on_session_lost"]
    placement = settings.get("placement")
    if not (isinstance(impl, type) and issubclass(impl, GenAgent)):
        raise InvalidOption(f"impl must be a GenAgent subclass, got {impl!r:.80}", agent=name)
    if require_importable and impl.__module__ == "__main__":
        raise InvalidOption(
            f"{impl.__qualname__} is defined in __main__; agent classes must live in an "
            "importable module so actor processes can load them",
            agent=name,
        )
    _check_picklable(impl, "impl", name)
    try:
        hash(name)
    except TypeError:
        raise InvalidOption(f"name must be hashable, got {type(name).__name__}") from None
    if name is None:
        raise InvalidOption("name is required")
    _check_picklable(name, "name", name)
    resolve_backend(backend)
    if watchdog is not None:
        _check_positive("watchdog", watchdog, name)
    for field_name, value in (
        ("max_tell_results", max_tell_results),
        ("max_queued", max_queued),
        ("max_queued_bytes", max_queued_bytes),
        ("max_restarts", max_restarts),
    ):
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise InvalidOption(f"{field_name} must be an int >= 0, got {value!r}", agent=name)
    if (
        isinstance(worker_idle_timeout, bool)
        or not isinstance(worker_idle_timeout, int | float)
        or worker_idle_timeout < 0
    ):
        raise InvalidOption(
            f"worker_idle_timeout must be >= 0 seconds, got {worker_idle_timeout!r}", agent=name
        )
    _check_positive("restart_window", restart_window, name)
    if restart not in _RESTART_TYPES:
        raise InvalidOption(f"restart must be one of {_RESTART_TYPES}, got {restart!r}", agent=name)
    if on_session_lost not in _SESSION_LOST_POLICIES:
        raise InvalidOption(
            f"on_session_lost must be one of {_SESSION_LOST_POLICIES}, got {on_session_lost!r}",
            agent=name,
        )
    options = dict(options or {})
    accepted = getattr(impl, "accepted_options", None)
    if accepted is not None:
        unknown = set(options) - set(accepted)
        if unknown:
            raise InvalidOption(
                f"unknown option(s) {sorted(unknown)} for {impl.__qualname__}; "
                f"accepted: {sorted(accepted)}",
                agent=name,
            )
    _check_picklable(options, "options", name)
    placement_items = tuple(sorted((placement or {}).items()))
    return AgentSpec(
        name=name,
        impl=impl,
        backend=backend,
        options=tuple(options.items()),
        watchdog=float(watchdog) if watchdog is not None else None,
        max_tell_results=max_tell_results,
        max_queued=max_queued,
        max_queued_bytes=max_queued_bytes,
        worker_idle_timeout=float(worker_idle_timeout),
        restart=restart,
        max_restarts=max_restarts,
        restart_window=float(restart_window),
        durable=bool(durable),
        placement=placement_items,
        on_session_lost=on_session_lost,
    )


def start_agent(
    impl: type[GenAgent],
    *,
    name: Any,
    backend: Any,
    watchdog: float | None = 600.0,
    max_tell_results: int = 100,
    max_queued: int = 1000,
    max_queued_bytes: int = 1 << 20,
    worker_idle_timeout: float = 60.0,
    restart: str = "temporary",
    max_restarts: int = 3,
    restart_window: float = 5.0,
    durable: bool = False,
    placement: Mapping[str, Any] | None = None,
    on_session_lost: str = "fail",
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
        durable: Persist the agent's state so a restart resumes it.
        placement: Capabilities a node must have to run the agent (multi-host).
        on_session_lost: When the provider cannot resume the agent's session (the turn
            fails once with ``BackendError(kind="session_lost")``): ``"fail"`` (default)
            makes every later turn fail the same way, and ``status`` say so, until the
            agent is stopped and started again; ``"fresh"`` starts a new provider session
            for the next turn (``handle_error`` sees the failure; ``session.lost`` is
            emitted). Never a blank session the user did not ask for.
        timeout: Seconds to wait for ``init_agent``/``start_session``/``pre_run``.
        system: The system to use (default: the current one).
        **options: Passed to ``init_agent``.

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
        durable=durable,
        placement=placement,
        on_session_lost=on_session_lost,
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
    )
    if isinstance(reply, Failure):
        raise reply.error
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
    )
    target.remember(name, None)
    if isinstance(reply, Failure):
        raise reply.error


def whereis(name: Any, *, system: AgentSystem | None = None) -> Any:
    """Return the address of agent ``name``, or ``None`` if no live agent has it."""
    return _locate(name, _system(system)).address


def list_agents(*, system: AgentSystem | None = None) -> list[Any]:
    """Return the names of every registered agent."""
    target = _system(system)
    reply = target.exchange(
        target.registry, ListAgents(), lambda m: isinstance(m, AgentList), timeout=_CONTROL_TIMEOUT
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
    _check_prompt(prompt, name)
    target = _system(system)
    message = Prompt(prompt)
    reply = _call_agent(target, name, message, timeout=timeout, ref=message.ref)
    if isinstance(reply, Failure):
        raise reply.error
    return reply


def tell(name: Any, prompt: str, *, system: AgentSystem | None = None) -> str:
    """Queue ``prompt`` at agent ``name`` and return its ref for :func:`poll`.

    Raises:
        InvalidPrompt, AgentNotFound, AgentOverloaded.
    """
    _check_prompt(prompt, name)
    target = _system(system)
    message = Tell(prompt)
    reply = _call_agent(
        target, name, message, timeout=_CONTROL_TIMEOUT, ref=message.ref, kinds=(Accepted,)
    )
    if isinstance(reply, Failure):
        raise reply.error
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
    if isinstance(reply, Failure):
        raise reply.error
    return reply


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
    if isinstance(reply, Failure):
        raise reply.error


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
    return _call_agent(
        _system(system),
        name,
        Status(),
        timeout=_CONTROL_TIMEOUT,
        kinds=(AgentStatus,),
        idempotent=True,
    )


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
    return reply.session


def _control(
    name: Any, message: Any, system: AgentSystem | None, *, ref: str | None = None
) -> Accepted:
    reply = _call_agent(
        _system(system), name, message, timeout=_CONTROL_TIMEOUT, kinds=(Accepted,), ref=ref
    )
    if isinstance(reply, Failure):
        raise reply.error
    return reply


# =============================================================================== plumbing


def _call_agent(
    system: AgentSystem,
    name: Any,
    message: Any,
    *,
    timeout: float | None,
    ref: str | None = None,
    kinds: tuple[type, ...] = (Response,),
    idempotent: bool = False,
) -> Any:
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
        located = _locate(name, system, timeout=left(), ref=ref)
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
    return system.exchange(address, message, matches, timeout=remaining, on_idle=check_alive)


def _locate(
    name: Any, system: AgentSystem, *, timeout: float = _CONTROL_TIMEOUT, ref: str | None = None
) -> Located:
    """Ask the registry where ``name`` is, within ``timeout`` seconds.

    A registry that does not answer a slice of the time may be a dead leader's: the node's
    directory is asked again for the services (a standby may have taken over) and the
    look-up goes on with the new registry.
    """
    deadline = time.monotonic() + timeout
    while True:
        left = deadline - time.monotonic()
        try:
            reply: Located = system.exchange(
                system.registry,
                WhereIs(name),
                lambda m: isinstance(m, Located) and m.name == name,
                timeout=max(0.0, min(left, _LOOKUP_SLICE)),
            )
            break
        except AskTimeout:
            if time.monotonic() >= deadline:
                raise AskTimeout(
                    f"the registry did not answer the name look-up within {timeout:.1f}s "
                    "(is the convention leader reachable?)",
                    agent=name,
                    ref=ref,
                ) from None
            system.refresh_services(timeout=min(2.0, deadline - time.monotonic()))
    system.remember(name, reply.address, reply.incarnation)
    return reply


def _check_prompt(prompt: Any, name: Any) -> None:
    if not isinstance(prompt, str) or not prompt:
        raise InvalidPrompt(
            f"a prompt must be a non-empty str, got {type(prompt).__name__}", agent=name
        )


def _check_positive(field_name: str, value: Any, name: Any) -> None:
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not math.isfinite(value)
        or value <= 0
    ):
        raise InvalidOption(
            f"{field_name} must be a positive number of seconds, got {value!r}", agent=name
        )


def _check_picklable(value: Any, field_name: str, name: Any) -> None:
    try:
        pickle.dumps(value)
    except Exception as exc:
        raise InvalidOption(
            f"{field_name} cannot be pickled ({type(exc).__name__}); actor messages must pickle",
            agent=name if field_name != "name" else None,
        ) from None
