"""The backend seam: how an LLM provider plugs into an agent.

A backend translates one provider (a CLI program, an HTTP API, a script) into turns of
normalized :class:`~genagent_thespian.Event` values. The contract is small and split by
where things live:

* **A session is data.** ``start_session`` returns any picklable value (typically a frozen
  dataclass holding ids, options and history). The *agent* keeps it between turns, can
  persist it, and passes it back to every call. A session never holds a live resource.
* **Live resources belong to the worker.** A backend instance lives in the agent's turn
  worker (a process of its own, or a thread of the agent's process for backends with
  :attr:`Backend.thread_turns`) and may keep live resources there across turns (a
  long-lived CLI process, an HTTP client), keyed by the session. :meth:`Backend.close`
  releases them when the worker retires; a worker that dies takes them with it, which is
  why every child process must be started in its own process group and reported through
  :meth:`TurnContext.track_process_group` so the agent can end it even then.
* **Every turn ends with exactly one terminal event.** :meth:`Backend.prompt` yields events
  and must finish with ``result`` or ``error``; a stream that ends without one is reported
  as ``BackendError(kind="no_terminal_event")``. Raising ``BackendError`` from ``prompt``
  is equivalent to yielding an ``error`` event.
* **The backend ends its own stream (the turn-ending contract).** The worker reports the
  turn's outcome to the agent as soon as the terminal event is yielded (the caller's reply
  is not delayed), then keeps iterating the generator until it returns by itself; events
  yielded after the terminal one are ignored. So the code after the last ``yield`` always
  runs, in order, and is where a backend decides what to keep for the next turn (a live
  CLI process, a pooled client) and what to end (a per-turn process it lets exit). The
  worker does not start the next turn's :meth:`~Backend.prompt` until that generator has
  returned (bounded; a worker whose stream never ends exits and is replaced), so a new
  provider process never starts beside the previous one of the same session. The worker
  calls ``close()`` on the generator only when the turn did not end normally (the thread
  is being torn down, or the backend yielded something that is not an ``Event``); a
  backend's ``finally`` that runs on ``GeneratorExit`` must therefore treat it as a crash
  and end what it holds.
* **A turn's watchdog starts when the worker begins the backend call**, after the previous
  stream has finished and process groups a crashed worker left behind are gone, so time
  spent waiting for them is not charged to the turn.
* **A lost session is said, never papered over.** When the provider cannot resume a
  session it should have (claude's "No conversation found", codex's "no rollout found"),
  the turn ends with ``BackendError(kind="session_lost")``; the agent's ``on_session_lost``
  policy then fails every later turn or calls :meth:`Backend.renew_session`. A backend
  must not start a blank session on its own, except for a session that never completed a
  turn and that the provider never stored (nothing is lost then).
* **Cancellation is cooperative, then forced.** When the turn is interrupted or hits its
  watchdog, :attr:`TurnContext.cancelled` is set and the backend should stop its provider
  (SIGINT, then SIGTERM, then SIGKILL to the process group after a grace period) and end
  with ``error`` of kind ``cancelled``. If it does not, the worker is killed and the
  tracked process groups are ended by the agent.

* **Prewarming is optional and silent.** An agent started with ``prewarm=True`` calls
  :meth:`Backend.warm` in its worker ahead of its first turn (once its node's session
  governor gave it a free slot): a backend that keeps a live process starts it there,
  exactly as its next :meth:`~Backend.prompt` would, so that turn reuses it instead of
  paying the start-up. ``warm`` runs in the worker's turn thread, so a turn that arrives
  meanwhile waits for it (never beside it); it must be bounded and watch
  ``ctx.cancelled`` (set when the worker retires or the agent stops). A ``warm`` that
  fails is logged and forgotten: the first turn starts the session as without prewarm.

Call order for one agent::

    start_session(options)                      agent process, at start
    [resume_session(session)]                   agent process, after a supervised restart
    [renew_session(session)]                    agent process, after session_lost ("fresh")
    [warm(session, ctx) -> session]             worker process, turn thread, ahead of any
                                                turn (prewarm=True; see above)
    prompt(session, text, ctx) -> events        worker process, daemon thread, once per turn,
                                                consumed to its end (see above)
    update_session(session, event) -> session   worker process, for session_started and result
    terminate_session(session)                  worker process if alive, else agent; on stop
    close()                                     worker process, when the worker retires

Backends are named in ``start_agent(..., backend=...)`` by class, instance-free, or by the
short names of :data:`BUILTIN_BACKENDS`, loaded lazily so that a missing extra only matters
to the agents that use it.
"""

from __future__ import annotations

import abc
import importlib
import threading
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import ClassVar

from .errors import InvalidOption
from .turn import Event
from .types import AgentName, Options, Session

__all__ = ["BUILTIN_BACKENDS", "Backend", "TurnContext", "WorkerExit", "resolve_backend"]

#: Short names accepted for ``backend=``, mapped to ``module:Class``.
BUILTIN_BACKENDS: dict[str, str] = {
    "scripted": "genagent_thespian.testing._scripted:ScriptedBackend",
    "claude": "genagent_thespian.backends.claude:ClaudeBackend",
    "codex": "genagent_thespian.backends.codex:CodexBackend",
    "anthropic": "genagent_thespian.backends.anthropic:AnthropicBackend",
    "openai": "genagent_thespian.backends.openai:OpenAIBackend",
}

_INSTALL_HINTS = {
    "anthropic": "pip install 'genagent-thespian[anthropic]'",
    "openai": "pip install 'genagent-thespian[openai]'",
}


class TurnContext:
    """What a backend may know and do during one turn (passed to :meth:`Backend.prompt`).

    Attributes:
        agent: The agent's name.
        ref: The request ref of the turn.
        cancelled: Set when the turn must stop (interrupt, watchdog, stop). Backends poll it
            or wait on it; CLI backends end their process group when it is set.
        isolated: True when the turn runs in a worker process of its own (multiprocess
            bases); False when it shares the caller's process (simpleSystemBase).
    """

    def __init__(
        self,
        *,
        agent: AgentName,
        ref: str,
        on_process_group: Callable[[int, bool], None] | None = None,
        isolated: bool = False,
    ) -> None:
        """Create the context of one turn; keyword-only, as backends and tests build it by hand.

        ``on_process_group`` is how a backend reports the process groups it starts, so the agent can
        record them (a durable agent ends them after a crash) and kill them on cancellation.
        ``isolated`` says whether the turn has a worker process of its own (multiprocess bases).
        """
        self.agent = agent
        self.ref = ref
        self.isolated = isolated
        self.cancelled = threading.Event()
        self._on_process_group = on_process_group

    def track_process_group(self, pgid: int) -> None:
        """Report a child process group this turn started, so it can never be orphaned.

        The agent records it and ends the group (SIGKILL) if the worker dies or is killed
        before the backend could clean up itself.
        """
        if self._on_process_group is not None:
            self._on_process_group(pgid, True)

    def untrack_process_group(self, pgid: int) -> None:
        """Report that a tracked process group has ended (the backend reaped it)."""
        if self._on_process_group is not None:
            self._on_process_group(pgid, False)


class Backend(abc.ABC):
    """Base class of every backend. Subclass it and implement the two abstract methods.

    A backend class is instantiated with no arguments in each process that needs it (the
    agent's process for ``start_session``, the worker's for turns); per-agent
    configuration arrives as the ``options`` of :meth:`start_session` and lives in the
    session.

    The session is ``Session`` (``Any``) in these signatures: each backend defines its own
    picklable session class, and the agent only stores, pickles and hands it back. A subclass
    annotates its own session class in its overrides: ``Session`` is ``Any`` because narrowing
    an ``object`` parameter would break substitutability.
    """

    #: Short name used in logs, telemetry and errors.
    name: ClassVar[str] = "backend"
    #: Whether a session keeps a heavy live resource (a CLI process) in the turn worker
    #: between turns: such sessions count against the node's ``max_live_sessions``, and
    #: each turn asks the node's session governor first. ``False`` for backends that hold
    #: nothing heavy between turns (the HTTP API backends): their turns skip the governor.
    live_session: ClassVar[bool] = True
    #: Whether the agent runs this backend's turns in a thread of its own process when
    #: started with ``turn_worker="auto"`` (the default), instead of a worker process: for
    #: backends whose slow part is a child program, in a process group the agent can kill,
    #: so that no Python code of a turn can block beyond the agent's reach (the CLIs). An
    #: HTTP backend's turn blocks in Python code: it keeps the worker process the agent can
    #: kill (``_actors/turn_thread.py``).
    thread_turns: ClassVar[bool] = False

    @abc.abstractmethod
    def start_session(self, options: Options) -> Session:
        """Validate ``options`` and return a new picklable session.

        Raise :class:`~genagent_thespian.InvalidOption` for unknown or bad option keys and
        :class:`~genagent_thespian.BackendError` when the provider cannot be used at all
        (missing binary, no credentials). Must not start live resources: it runs in the
        agent's process, which must stay light.
        """

    @abc.abstractmethod
    def prompt(self, session: Session, prompt: str, ctx: TurnContext) -> Iterator[Event]:
        """Run one turn and yield its events, ending with exactly one terminal event.

        Runs in a daemon thread of the worker process; it may block on I/O. It must watch
        ``ctx.cancelled`` and stop promptly when it is set.
        """

    def warm(self, session: Session, ctx: TurnContext) -> Session:
        """Start ``session``'s live resources now, ahead of any turn; return the session.

        Called in the worker for an agent started with ``prewarm=True`` (see the module
        docstring), before its first turn. A backend that keeps a live process between
        turns starts the very process its next :meth:`prompt` would use (and tracks its
        process group with ``ctx``, as a turn does), so the first turn pays no start-up.
        It must not send anything the provider would record as a turn, and it must leave
        the session exactly as resumable as before: a warmed process that is retired
        before any turn costs the conversation nothing. Return ``session`` itself when
        nothing changed; a new value is relayed to the agent and persisted. Raising is
        allowed (it is logged; the first turn then starts the session as usual).

        The default starts nothing and returns ``session``: right for backends without a
        live process (HTTP APIs, CLIs run once per turn). The worker process itself is up
        either way, so even then the first turn skips the worker's start.
        """
        return session

    def update_session(self, session: Session, event: Event) -> Session:
        """Return the session updated by a ``session_started`` or ``result`` event.

        Called in the worker for every ``session_started`` event (so a session id learned
        early survives an interrupt) and for the terminal ``result``. The default returns
        ``session`` unchanged. A change must be a new object (sessions are immutable values):
        the worker relays the session to the agent only when the result is not ``session``
        itself and differs from it (``!=``), so an unchanged re-announcement costs nothing.
        """
        return session

    def resume_session(self, session: Session) -> Session:
        """Return ``session`` made ready to continue after the agent was restarted.

        Called in the restarted agent's process with the last persisted session; the next
        turn must continue the same provider conversation (for example ``--resume <id>``).
        The default returns the session unchanged, which suits stateless HTTP backends that
        keep their history in the session.
        """
        return session

    def renew_session(self, session: Session) -> Session:
        """Return a new provider session with ``session``'s options (``on_session_lost="fresh"``).

        Called in the agent's process after a turn failed with
        ``BackendError(kind="session_lost")``: the provider has no record of the
        conversation, and the agent's policy asked for a fresh one. The default returns
        ``session`` unchanged, which suits backends that never lose a session (the HTTP
        backends keep the whole history in it).
        """
        return session

    def session_files(self, session: Session) -> Mapping[str, Path]:
        """The provider's files of ``session`` on this host, by a name relative to its folder.

        A CLI that keeps the conversation on disk (claude's transcript, codex's rollout)
        returns those files; a durable agent saves them to its store after each turn, so a
        restart on another host can restore them before resuming. The default (HTTP
        backends keep the whole history in the session) returns none.
        """
        return {}

    def session_file_path(self, session: Session, name: str) -> Path | None:
        """Where the file ``name`` (see :meth:`session_files`) of ``session`` belongs here.

        ``None`` refuses the name (the default, and any name that would leave the
        provider's folder).
        """
        return None

    def terminate_session(self, session: Session) -> None:
        """End the session for good (the agent is stopping). Idempotent; must not raise."""

    def close(self) -> None:
        """Release this process's live resources (the worker is retiring). Idempotent."""


def resolve_backend(spec: object) -> type[Backend]:
    """Return the backend class for ``spec``: a Backend subclass, a short name or ``module:Class``.

    Raises:
        InvalidOption: ``spec`` names no backend, or its optional dependency is missing
            (the message says what to install).
    """
    if isinstance(spec, type) and issubclass(spec, Backend):
        return spec
    if isinstance(spec, Backend):
        raise InvalidOption(
            f"backend must be a Backend class or name, not an instance of {type(spec).__name__}"
        )
    if not isinstance(spec, str) or not spec:
        raise InvalidOption(f"backend must be a Backend class or a name, got {spec!r}")
    target = BUILTIN_BACKENDS.get(spec, spec)
    if ":" not in target:
        known = ", ".join(sorted(BUILTIN_BACKENDS))
        raise InvalidOption(f"unknown backend {spec!r}; known names: {known}, or 'module:Class'")
    module_name, _, attr = target.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        hint = _INSTALL_HINTS.get(spec)
        extra = f"; install it with: {hint}" if hint else ""
        raise InvalidOption(f"backend {spec!r} could not be imported: {exc}{extra}") from exc
    cls = getattr(module, attr, None)
    if not (isinstance(cls, type) and issubclass(cls, Backend)):
        raise InvalidOption(f"{target!r} is not a genagent_thespian.Backend subclass")
    return cls


class WorkerExit(BaseException):
    """Raised by a backend to make its worker process exit (``Exit`` script items).

    The worker turns it into a real ``os._exit(code)`` on the multiprocess bases and into a
    crashed turn on ``simpleSystemBase``, where the worker shares the test's process.
    """

    def __init__(self, code: int) -> None:
        super().__init__(code)
        self.code = code
