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

import contextlib
import dataclasses
import threading
from collections.abc import Callable, Iterator

from .._actors.governor import session_capabilities
from .._core.behaviour import GenAgent
from .._core.errors import SystemNotRunning
from .._core.governor import GovernorStatus
from .._core.turn import Event, Response
from .._core.types import (
    AgentName,
    Capabilities,
    ClassSpec,
    Options,
    OptionValue,
    Sender,
    Session,
    UserTerm,
)
from .._core.validate import SPEC_DEFAULTS, build_spec
from ..messages import AgentSpec, AgentStatus, PollResult, Prompt, TurnEvent, new_ref
from . import calls
from .system import AgentSystem

__all__ = [
    "ask",
    "attach_system",
    "backend_session",
    "build_spec",
    "build_start_spec",
    "cancel",
    "current_system",
    "halt",
    "interrupt",
    "list_agents",
    "notify",
    "poll",
    "resume",
    "sessions",
    "shutdown_system",
    "start_agent",
    "start_system",
    "status",
    "stop",
    "stream",
    "stream_prompt",
    "tell",
    "watch",
    "whereis",
]


_default_lock = threading.Lock()
_default: AgentSystem | None = None


# =============================================================================== systems


def start_system(
    *,
    base: str = "multiprocTCPBase",
    admin_port: int | None = None,
    capabilities: Capabilities | None = None,
    log_config: dict[str, object] | None = None,
    store_path: str | None = None,
    node_name: str = "default",
    home: str | None = None,
    make_default: bool = True,
    max_live_sessions: int | str | None = "auto",
    session_idle_timeout: float | None = None,
    **security: OptionValue,
) -> AgentSystem:
    """Start an actor system, boot the framework in it and (by default) make it current.

    The system belongs to the calling script: it shuts down when the script ends, however
    it ends (``with start_system() as system:`` ends it earlier). Its durable agents live in
    the node's home (``$XDG_STATE_HOME/genagent-thespian/<node_name>/``), so the next run
    of the script resumes them; one running system per home.

    ``max_live_sessions`` caps the live provider sessions of this node (an agent's turn
    worker with the CLI it keeps between turns): when the cap is reached, the least recently
    used idle session is retired (resumed on that agent's next turn) and a turn that needs
    a session waits in a fair queue, failing with ``SessionUnavailable`` after its watchdog.
    The default, ``"auto"``, sizes it from the host's total memory (256 MiB a session: 94
    on a 24 GiB host); ``0`` or ``None`` turns it off. Only backends that keep a live
    process between turns are governed (``Backend.live_session``; not the HTTP backends).
    ``session_idle_timeout`` retires sessions idle that long even without demand.

    Example:
        >>> system = start_system(base="simpleSystemBase")
        >>> system.shutdown()
    """
    capabilities = session_capabilities(capabilities, max_live_sessions, session_idle_timeout)
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
    """Shut down ``system`` (default: the current one) and forget it as current.

    An attached system is only detached from (its node keeps running); a system this
    process started is stopped with all its agents (see ``AgentSystem.shutdown``).
    """
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
    """Make ``system`` the process's default (the latest started or attached wins)."""
    global _default
    with _default_lock:
        _default = system


def _system(system: AgentSystem | None) -> AgentSystem:
    """The system a call uses: the one given, else the default (``SystemNotRunning`` if none)."""
    return system if system is not None else current_system()


# =============================================================================== agents


def build_start_spec(
    impl: ClassSpec, name: AgentName, backend: ClassSpec, target: AgentSystem, kwargs: Options
) -> AgentSpec:
    """The spec for ``start_agent(impl, name=, backend=, **kwargs)`` on ``target``.

    ``kwargs`` mixes the framework's settings (the ``AgentSpec`` fields, ``placement``)
    and the implementation's options, as :func:`start_agent`'s signature does.
    """
    settings_names = {f.name for f in dataclasses.fields(AgentSpec)} - {
        "name",
        "impl",
        "backend",
        "options",
    }
    settings = {k: v for k, v in kwargs.items() if k in settings_names}
    options = {k: v for k, v in kwargs.items() if k not in settings_names}
    return build_spec(
        impl,
        name=name,
        backend=backend,
        options=options,
        require_importable=target.base != "simpleSystemBase",
        **settings,
    )


def start_agent(
    impl: type[GenAgent],
    *,
    name: AgentName,
    backend: ClassSpec,
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
    placement: Options | None = None,
    on_session_lost: str = SPEC_DEFAULTS.on_session_lost,
    secret_resolver: Callable[[AgentName, str], object] | None = None,
    hibernate_after: float | None = SPEC_DEFAULTS.hibernate_after,
    prewarm: bool = SPEC_DEFAULTS.prewarm,
    turn_worker: str = SPEC_DEFAULTS.turn_worker,
    timeout: float | None = calls.START_TIMEOUT,
    system: AgentSystem | None = None,
    **options: OptionValue,
) -> AgentName:
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
        hibernate_after: Idle seconds after which a durable agent hibernates: its record
            is written, its processes end, and its name stays registered; any call wakes
            it transparently (``status`` and ``list_agents`` do not). ``None`` (default):
            ``DEFAULT_HIBERNATE_AFTER`` (300 s) for durable agents, never for plain ones;
            ``0``: never. Needs ``durable=True``.
        prewarm: Start the backend's live session when the agent starts, restarts or
            wakes from hibernation, ahead of its first turn, so that turn pays no CLI
            start-up (claude in stream mode, codex in app-server mode; other backends
            only get their worker process started). It takes a free slot of the node's
            ``max_live_sessions`` only: never one a turn waits for, never by retiring a
            session; with none free it is skipped (``session.prewarm`` telemetry,
            ``outcome="no_slot"``) and the first turn asks as usual. The prewarmed
            session is then an ordinary idle one: retired after ``worker_idle_timeout``
            (or the node's ``session_idle_timeout``) without a turn, or to make room.
        turn_worker: Where the backend's turns run. ``"process"``: a worker process per
            agent, which the agent can kill whatever the backend does. ``"thread"``: a
            thread of the agent's own process; one process and two messages fewer per
            turn, meant for backends whose slow part is a program that can be killed.
            ``"auto"`` (default): a thread for the CLI backends (``claude``, ``codex``:
            ``Backend.thread_turns``), a process for the others (``docs/backends.md``).
            Threads need ``multiprocTCPBase``; elsewhere the worker stays an actor.
        timeout: Seconds to wait for ``init_agent``/``start_session``/``pre_run``
            (default 120).
        system: The system to use (default: the current one).
        **options: Passed to ``init_agent``. A class that sets ``accepted_options`` gets only
            those; otherwise a name close to one of the framework's options (a typo such as
            ``watchdg``) is refused with a "did you mean" hint.

    Returns:
        The agent's name.

    Raises:
        InvalidOption: An option is unknown or invalid.
        AgentAlreadyExists: Another agent has that name.
        AgentStartFailed: ``init_agent`` or the backend's session failed.
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
        hibernate_after=hibernate_after,
        prewarm=prewarm,
        turn_worker=turn_worker,
        require_importable=target.base != "simpleSystemBase",
    )
    return calls.run(target, calls.start_agent(target, spec, timeout))


def stop(
    name: AgentName,
    *,
    timeout: float | None = calls.STOP_TIMEOUT,
    system: AgentSystem | None = None,
) -> None:
    """Stop agent ``name`` for good: pending callers get ``AgentStopped``; its processes end.

    ``timeout`` bounds the wait for its processes to end (default 60 seconds).

    Raises:
        AgentNotFound: no agent has that name.
    """
    target = _system(system)
    calls.run(target, calls.stop(target, name, timeout))


def whereis(name: AgentName, *, system: AgentSystem | None = None) -> Sender:
    """Return the address of agent ``name``, or ``None`` if no live agent has it.

    A hibernated agent has no process, hence no address (``status`` says ``hibernated``;
    any call wakes it)."""
    target = _system(system)
    return calls.run(target, calls.whereis(target, name))


def list_agents(
    *, timeout: float | None = calls.CONTROL_TIMEOUT, system: AgentSystem | None = None
) -> list[AgentName]:
    """Return the names of every registered agent.

    Raises:
        AskTimeout: The registry did not answer within ``timeout`` seconds.
    """
    target = _system(system)
    return calls.run(target, calls.list_agents(target, timeout))


def sessions(*, system: AgentSystem | None = None) -> GovernorStatus | None:
    """Return the session governor's figures, or ``None`` when live sessions are not capped.

    The cap (``max_live_sessions``), the sessions live now, how many are in a turn or being
    retired, the turns waiting for one (``queued``) and how long the oldest has waited.
    ``genagent top`` shows them in its header.
    """
    target = _system(system)
    return calls.run(target, calls.sessions(target))


# =============================================================================== turns


def ask(
    name: AgentName, prompt: str, timeout: float | None = None, *, system: AgentSystem | None = None
) -> Response:
    """Run ``prompt`` as a turn of agent ``name`` and return its ``Response``.

    Blocks until the turn ends; the agent's watchdog bounds it. With ``timeout`` the call
    gives up first with ``AskTimeout``, and the request keeps running or queued.

    Raises:
        InvalidPrompt: The prompt is not a non-empty str.
        AgentNotFound: No agent has that name.
        AgentOverloaded: The agent's mailbox is full.
        AskTimeout: ``timeout`` passed first.
        TurnFailed: The turn failed: a subclass says how (``BackendError``,
            ``TurnTimeout``, ``TurnInterrupted``...).
    """
    target = _system(system)
    calls.check_prompt(prompt, name)
    return calls.run(target, calls.ask(target, name, Prompt(prompt), timeout))


def stream(
    name: AgentName, prompt: str, timeout: float | None = None, *, system: AgentSystem | None = None
) -> Iterator[Event | Response]:
    """Run ``prompt`` as a turn of agent ``name``, yielding its events as they happen.

    Yields each normalized :class:`Event` of the turn (text deltas, tool use and results,
    usage...) as the backend produces it, then, last, the turn's :class:`Response`; a
    failed turn raises its typed error instead (the same errors as :func:`ask`, which this
    is with a window on the turn). Leaving the loop early stops the subscription, not the
    turn (:func:`interrupt` does that).

    Example:
        >>> for item in stream("coder", "Fix the test"):  # doctest: +SKIP
        ...     if isinstance(item, Event) and item.kind == EventKind.TEXT_DELTA:
        ...         print(item.data["text"], end="")
    """
    target = _system(system)
    calls.check_prompt(prompt, name)
    return stream_prompt(target, name, Prompt(prompt), timeout)


def stream_prompt(
    target: AgentSystem, name: AgentName, message: Prompt, timeout: float | None
) -> Iterator[Event | Response]:
    """:func:`stream` for a ``Prompt`` the caller made (and whose ref it knows already).

    The CLI makes its own ``Prompt`` so that Ctrl-C can name the turn to interrupt. The
    subscription is undone however the iteration ends (exhausted, closed, or broken by
    an error), so an abandoned stream leaves the agent no dead subscriber to feed.
    """
    target.subscriptions().add(name)
    steps = calls.run_stream(target, calls.stream(target, name, message, timeout))
    try:
        while True:
            try:
                turn_event = next(steps)
            except StopIteration as stop:
                yield stop.value
                return
            yield turn_event.event
    finally:
        steps.close()
        _unwatch(target, name, message.ref)


def watch(name: AgentName, *, system: AgentSystem | None = None) -> Iterator[TurnEvent]:
    """Follow whatever agent ``name`` runs: yield a ``TurnEvent`` for each event of each turn.

    ``TurnEvent.ref`` tells the turns apart (an ``ask``, a ``tell``, a self-chained prompt).
    The subscription follows the agent through restarts and ends when the agent is stopped;
    leaving the loop ends it too. Iterate it on the thread that called ``watch``: the events
    arrive at that thread's endpoint.

    Raises:
        AgentNotFound: no agent has that name.
    """
    target = _system(system)
    ref = new_ref()
    target.subscriptions().add(name)
    try:
        calls.run(target, calls.subscribe(target, name, ref))
    except BaseException:
        target.subscriptions().remove(name)
        raise
    return _watch(target, name, ref)


def _watch(target: AgentSystem, name: AgentName, ref: str) -> Iterator[TurnEvent]:
    """The events of a subscription already made; ends the subscription when closed.

    A generator of its own so that the subscription is made when :func:`watch` is called
    (not at the first ``next``), and undone in ``finally`` however the iteration ends.
    """
    steps = calls.run_stream(target, calls.watch(target, name, ref))
    try:
        yield from steps
    finally:
        steps.close()
        _unwatch(target, name, ref)


def _unwatch(target: AgentSystem, name: AgentName, ref: str) -> None:
    """Unsubscribe from ``name`` once no stream of this thread follows it any more.

    The endpoint is shared by the thread's streams, and the agent knows it by address only:
    unsubscribing while another stream still follows the agent would end that one too. A
    failure is ignored: an agent or system that is gone has nothing left to unsubscribe.
    """
    if target.closed:
        return  # the system is gone, and every subscription with it
    if not target.subscriptions().remove(name):
        return  # another stream of this thread still follows the agent
    address, message = calls.unwatch_message(target, name, ref)
    if address is None:
        return
    with contextlib.suppress(Exception):  # the agent or the system is gone: nothing to end
        target.send(address, message)


def tell(
    name: AgentName,
    prompt: str,
    *,
    timeout: float | None = calls.CONTROL_TIMEOUT,
    system: AgentSystem | None = None,
) -> str:
    """Queue ``prompt`` at agent ``name`` and return its ref for :func:`poll`.

    ``timeout`` bounds the queueing (name look-up included), not the turn.

    Raises:
        InvalidPrompt: The prompt is not a non-empty str.
        AgentNotFound: No agent has that name.
        AgentOverloaded: The agent's mailbox is full.
        AskTimeout: The prompt was not accepted within ``timeout`` seconds (it may still
            run: poll its ref, which the exception carries, to find out).
    """
    target = _system(system)
    return calls.run(target, calls.tell(target, name, prompt, timeout))


def poll(
    name: AgentName,
    ref: str,
    *,
    timeout: float | None = calls.CONTROL_TIMEOUT,
    system: AgentSystem | None = None,
) -> PollResult:
    """Return where the tell ``ref`` stands: pending, completed or failed.

    A completed result carries ``.response``; a failed one carries ``.error``.

    An unknown or evicted ref is ``failed`` with ``RequestNotFound``.

    Raises:
        AskTimeout: No answer within ``timeout`` seconds (the ref is unchanged: poll again).
    """
    target = _system(system)
    return calls.run(target, calls.poll(target, name, ref, timeout))


def notify(name: AgentName, event: UserTerm, *, system: AgentSystem | None = None) -> None:
    """Deliver ``event`` to agent ``name``'s ``handle_event`` (buffered while a turn runs).

    Raises:
        InvalidEvent: The event does not pickle.
        AgentNotFound: No agent has that name.
        AgentOverloaded: The agent's mailbox is full.
        CallbackError: The agent was idle and ``handle_event`` failed.
    """
    target = _system(system)
    calls.run(target, calls.notify(target, name, event))


def interrupt(name: AgentName, ref: str | None = None, *, system: AgentSystem | None = None) -> str:
    """End agent ``name``'s running turn (only if it is ``ref``, when given).

    Returns:
        The ref of the interrupted turn.

    Raises:
        RequestNotFound: no turn is running, or a different one is.
    """
    target = _system(system)
    return calls.run(target, calls.interrupt(target, name, ref))


def cancel(name: AgentName, ref: str, *, system: AgentSystem | None = None) -> None:
    """Remove the queued tell ``ref`` before it runs; its poll then fails with ``TurnCancelled``.

    Raises:
        RequestNotFound: the ref is running, finished or unknown.
    """
    target = _system(system)
    calls.run(target, calls.cancel(target, name, ref))


def halt(name: AgentName, *, system: AgentSystem | None = None) -> None:
    """Halt agent ``name`` (after its current turn): queued work waits for :func:`resume`."""
    target = _system(system)
    calls.run(target, calls.halt(target, name))


def resume(name: AgentName, *, system: AgentSystem | None = None) -> None:
    """Unhalt agent ``name`` (or cancel a pending halt) and let it drain its queue."""
    target = _system(system)
    calls.run(target, calls.resume(target, name))


def status(
    name: AgentName,
    *,
    timeout: float | None = calls.CONTROL_TIMEOUT,
    system: AgentSystem | None = None,
) -> AgentStatus:
    """Return a snapshot of agent ``name`` (answered at once, even mid-turn).

    Raises:
        AskTimeout: No answer within ``timeout`` seconds (name look-up included).
    """
    target = _system(system)
    return calls.run(target, calls.status(target, name, timeout))


def backend_session(name: AgentName, *, system: AgentSystem | None = None) -> Session:
    """Return agent ``name``'s current backend session (data; tests read scripted history)."""
    target = _system(system)
    return calls.run(target, calls.backend_session(target, name))
