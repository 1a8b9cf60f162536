"""The public actor protocol: every message an agent, the supervisor or the registry accepts.

The client API in :mod:`genagent_thespian` is a thin layer over these messages, so plain
Thespian code can do everything it does::

    import genagent_thespian as g
    from thespian.actors import ActorSystem
    from genagent_thespian.messages import Prompt

    g.use_node_secret()  # the node's authenticated frames
    asys = ActorSystem("multiprocTCPBase", g.client_capabilities())
    reply = asys.ask(agent_address, Prompt("What does foo.py do?"), 60)
    # reply is a Response, or a Failure whose .error is a GenAgentError

Every request gets exactly one reply: a reused ref gets ``Failure(DuplicateRequest)`` (or,
for its own caller, nothing extra: the original answer is its answer), a message an actor
does not accept gets ``Failure(UnexpectedMessage)``.

Messages are frozen, slotted dataclasses that pickle (the multiprocess bases pickle every
message). Commands are named as imperatives (``Prompt``, ``Notify``), replies as facts
(``Accepted``, ``Failure``). Class names are unique across the package because Thespian's
``ActorTypeDispatcher`` dispatches on the class name alone.

Three classes double as callback directives, so a callback returns the same value a client
would send: ``Prompt(text)`` from ``handle_response`` self-chains a turn, ``Halt()`` halts
the agent, and ``Skip()`` from ``pre_turn`` drops a prompt.
"""

from __future__ import annotations

import enum
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field, fields

from ._core.classref import by_name, resolve
from ._core.errors import GenAgentError
from ._core.turn import Event, Response
from ._core.types import ActorAddress, AgentName, ClassSpec, OptionValue, Sender, UserTerm

__all__ = [
    "Accepted",
    "AgentDown",
    "AgentEntry",
    "AgentList",
    "AgentSpec",
    "AgentStarted",
    "AgentStatus",
    "Cancel",
    "DeliveryFailed",
    "Failure",
    "Halt",
    "Interrupt",
    "ListAgents",
    "Located",
    "Notify",
    "Poll",
    "PollResult",
    "PollState",
    "Prompt",
    "Resume",
    "Skip",
    "StartAgent",
    "Status",
    "StopAgent",
    "Stopped",
    "Tell",
    "TellCompleted",
    "TurnEvent",
    "Watch",
    "WatchAgent",
    "WhereIs",
    "new_ref",
]


def new_ref() -> str:
    """Return a fresh request ref (a 32-character hex string, unique across processes)."""
    return uuid.uuid4().hex


# --------------------------------------------------------------------------- commands


@dataclass(frozen=True, slots=True)
class Prompt:
    """Run a turn and answer with its ``Response`` or a ``Failure`` (``ask``).

    As a callback return value it is a self-chain directive: the agent runs ``text`` next,
    ahead of anything in its mailbox. With ``delay`` (seconds) it runs after that pause
    instead, without blocking the agent (a back-off); returned from ``handle_error`` for an
    ask or tell, the retry keeps the caller's ref, so the caller gets the final outcome.
    ``delay`` is ignored when a client sends ``Prompt`` as a request.
    """

    text: str
    ref: str = field(default_factory=new_ref)
    delay: float = 0.0


@dataclass(frozen=True, slots=True)
class Tell:
    """Queue a turn and answer at once with ``Accepted(ref)``; read the outcome with ``Poll``.

    The ref is the tell's identity: a tell resent under the same ref (after a restart, or a
    lost acknowledgement) is acknowledged again and never run twice. The outcome is kept
    in the agent's bounded result cache (``max_tell_results``), oldest evicted first.
    """

    text: str
    ref: str = field(default_factory=new_ref)
    completion: bool = False  # also send TellCompleted to the sender when it finishes


@dataclass(frozen=True, slots=True)
class Poll:
    """Ask for the outcome of a ``Tell``; answered with ``PollResult``.

    Never waits for a running turn. A ref the agent does not know (never told, an ask's,
    or evicted from the cache) is answered as failed with ``RequestNotFound``, not left
    unanswered.
    """

    ref: str


@dataclass(frozen=True, slots=True)
class Notify:
    """Deliver ``event`` to ``handle_event``; answered with ``Accepted`` or a ``Failure``.

    While a turn runs, the event is buffered and handled after the turn, against the state
    the turn's callbacks left.
    """

    event: UserTerm
    sender: Sender = None  # name of the notifying agent, when it is one (for the comms graph)


@dataclass(frozen=True, slots=True)
class Interrupt:
    """End the current turn (``ref=None``) or only the turn with this ref; answered ``Accepted``.

    With a ``ref`` that is not the current turn the answer is ``Failure(RequestNotFound)``,
    so a late interrupt can never end the next turn by mistake.
    """

    ref: str | None = None


@dataclass(frozen=True, slots=True)
class Cancel:
    """Remove a queued ``Tell`` before it runs; answered ``Accepted`` or ``Failure``.

    The cancelled tell's outcome becomes ``TurnCancelled``. A running tell is refused
    (interrupt it instead), as is an ask or an unknown ref: ``Failure(RequestNotFound)``
    whose message says which.
    """

    ref: str


@dataclass(frozen=True, slots=True)
class Halt:
    """Freeze the mailbox once the current turn ends (also a callback directive).

    Sent to an agent it is answered ``Accepted(None)`` at once, even mid-turn; the running
    turn is never cut short (``Interrupt`` does that). New prompts still queue while halted.
    Returned from a callback it halts after the current decision (``post_run`` runs once).
    """


@dataclass(frozen=True, slots=True)
class Skip:
    """``pre_turn`` directive: drop this prompt without running it."""


@dataclass(frozen=True, slots=True)
class Resume:
    """Unfreeze a halted agent (or cancel a pending halt) and drain its queue.

    Answered ``Accepted(None)``; resuming an agent that is not halted changes nothing.
    """


@dataclass(frozen=True, slots=True)
class Status:
    """Ask for an ``AgentStatus`` snapshot. Answered within milliseconds, even mid-turn.

    A status request never counts as use: polling a fleet's status keeps no agent from
    hibernating, and a hibernated agent's status comes from the registry without waking it.
    """


@dataclass(frozen=True, slots=True)
class Watch:
    """Subscribe the sender to this agent's ``TurnEvent`` stream (``active=False`` stops).

    Answered ``Accepted(ref)``. A subscriber whose endpoint disappears (its process was
    killed) is dropped by the agent when an event cannot be delivered to it.
    """

    active: bool = True
    ref: str | None = None  # echoed in the Accepted answer


@dataclass(frozen=True, slots=True)
class AgentSpec:
    """Everything needed to start (and restart) one agent. Validated by ``start_agent``.

    Attributes:
        name: Any hashable, picklable term.
        impl: The ``GenAgent`` subclass (importable by module, not ``__main__``).
        backend: A ``Backend`` subclass or a short name (``"claude"``).
        options: Keyword options for ``init_agent``.
        watchdog: Per-turn deadline in seconds, or ``None`` for none.
        max_tell_results: Bound of the tell-result cache (count).
        max_queued: Bound of the mailbox (count).
        max_queued_bytes: Bound of the mailbox (UTF-8 bytes of queued prompts).
        worker_idle_timeout: Seconds an idle worker is kept before it is retired.
        restart: ``"temporary"``, ``"transient"`` or ``"permanent"``.
        backoff_initial, backoff_factor, backoff_max, jitter: The restart back-off (see
            ``docs/supervision.md``).
        durable: Whether the agent persists its state to the store.
        on_session_lost: What follows a turn that failed with ``BackendError(kind=
            "session_lost")``: ``"fail"`` (every later turn fails the same way) or
            ``"fresh"`` (the next turn starts a new provider session).
        secret_resolver: For durable agents, a module-level function
            ``(agent_name, option_name) -> value or None`` that supplies a secret the store
            does not hold when the agent resumes (see ``docs/security.md``).
        hibernate_after: Idle seconds after which a durable agent hibernates (its process
            ends, its name stays registered, any call wakes it from its record); ``0`` never.
            ``None`` takes the default: ``DEFAULT_HIBERNATE_AFTER`` for durable agents, off
            for plain ones (``start_agent`` resolves it).
        prewarm: Start the backend's live session (a CLI process) when the agent starts,
            restarts or wakes, ahead of its first turn, if its node's session governor has
            a free slot (see ``docs/supervision.md``).
        turn_worker: Where turns run: ``"process"`` (a worker process per agent),
            ``"thread"`` (a thread of the agent's own process), or ``"auto"``: a thread for
            backends with ``Backend.thread_turns`` (the CLIs), else a process (see
            ``docs/backends.md``).
    """

    # Names and option values are the user's own picklable terms. ``impl`` is a GenAgent
    # subclass, but naming the type here would make this module import the core behaviour,
    # which imports these messages (tests/test_imports.py forbids the cycle); ``backend`` is
    # a Backend subclass, a short name, or None in SPEC_DEFAULTS (``ClassSpec``).
    name: AgentName
    impl: ClassSpec
    backend: ClassSpec
    options: tuple[tuple[str, OptionValue], ...] = ()
    watchdog: float | None = 600.0
    max_tell_results: int = 100
    max_queued: int = 1000
    max_queued_bytes: int = 1 << 20
    worker_idle_timeout: float = 60.0
    restart: str = "temporary"
    max_restarts: int = 3
    restart_window: float = 5.0
    durable: bool = False
    placement: tuple[tuple[str, object], ...] = ()
    on_session_lost: str = "fail"
    secret_resolver: Callable[[AgentName, str], object] | None = (
        None  # (agent name, option) -> secret
    )
    hibernate_after: float | None = None
    backoff_initial: float = 0.05
    backoff_factor: float = 2.0
    backoff_max: float = 5.0
    jitter: float = 0.0
    prewarm: bool = False
    turn_worker: str = "auto"

    @property
    def options_dict(self) -> dict[str, OptionValue]:
        """The ``init_agent`` options as a dict."""
        return dict(self.options)

    def __reduce__(self) -> tuple[object, ...]:
        # The classes travel by name and are imported where the spec is unpickled, so a
        # node that cannot import one answers with why (``_core/classref.py``) instead of
        # Thespian dropping the whole message.
        values = {f.name: getattr(self, f.name) for f in fields(self)}
        values["impl"], values["backend"] = by_name(self.impl), by_name(self.backend)
        return (_spec_from_pickle, (values,))


def _spec_from_pickle(values: dict[str, ClassSpec]) -> AgentSpec:
    return AgentSpec(
        **{**values, "impl": resolve(values["impl"]), "backend": resolve(values["backend"])}
    )


@dataclass(frozen=True, slots=True)
class StartAgent:
    """Ask the supervisor to start an agent; answered ``AgentStarted`` or ``Failure``.

    ``AgentStarted`` comes only once ``init_agent`` succeeded and the name is registered.
    A failure is ``AgentAlreadyExists``, ``AgentStartFailed``, or the typed error the
    agent's start raised (``InvalidOption``...); a failed first start is not restarted.
    """

    spec: AgentSpec


@dataclass(frozen=True, slots=True)
class StopAgent:
    """Ask the supervisor to stop an agent for good; answered ``Stopped`` or ``Failure``.

    Every caller of the agent is answered first (``AgentStopped``), its session is ended,
    a durable agent's record is deleted, and ``Stopped`` follows once its process is gone
    and its name is free. An unknown name is ``Failure(AgentNotFound)``.
    """

    name: AgentName
    reason: str = "stop"


@dataclass(frozen=True, slots=True)
class WhereIs:
    """Ask the registry for an agent's address; answered ``Located``.

    With ``wait``, a name whose agent is restarting is answered once the restart ends: with
    the new address, or with none when the supervisor gave up or the agent was stopped. A
    hibernated agent is woken by such a look-up and answered the same way once it runs.
    """

    name: AgentName
    wait: bool = False


@dataclass(frozen=True, slots=True)
class ListAgents:
    """Ask the registry for every registered agent; answered ``AgentList``.

    Agents between incarnations are listed as ``restarting`` and sleeping ones as
    ``hibernated``; stopped ones are not listed.
    """


# --------------------------------------------------------------------------- replies


@dataclass(frozen=True, slots=True)
class Failure:
    """The request failed; ``error`` says why, with the agent's name and the ref.

    ``ref`` is the failed request's (``None`` for a request that has none); a caller that
    matches replies by ref never takes another call's failure for its own.
    """

    error: GenAgentError
    ref: str | None = None


@dataclass(frozen=True, slots=True)
class Accepted:
    """The request was taken (a ``Tell`` is queued or running under ``ref``).

    ``ref`` is ``None`` for requests that carry none (``Halt``, ``Resume``, ``Notify``):
    such answers cannot be told apart, so a caller has one of them in flight at a time.
    """

    ref: str | None = None


class PollState(enum.StrEnum):
    """Where a told request stands."""

    PENDING = "pending"  # queued or running
    COMPLETED = "completed"  # finished with a Response
    FAILED = "failed"  # finished with an error


@dataclass(frozen=True, slots=True)
class PollResult:
    """Answer to ``Poll``: pending, completed with ``response``, or failed with ``error``."""

    ref: str
    state: PollState
    response: Response | None = None
    error: GenAgentError | None = None

    @property
    def done(self) -> bool:
        """Whether the request has finished either way."""
        return self.state is not PollState.PENDING


@dataclass(frozen=True, slots=True)
class AgentStatus:
    """A snapshot of one agent, answered to ``Status``.

    Attributes:
        state: ``"idle"`` or ``"processing"`` (halted is a flag, not a state).
        current_ref: Ref of the running turn, if any.
        current_origin: ``"ask"``, ``"tell"``, ``"event"`` or ``"self_chain"``.
        current_elapsed: Seconds the running turn has taken so far.
        queued: Prompts in the mailbox (not the self-chain slot, not notifications).
        session_lost: Set when the provider lost the agent's session and the policy is
            ``on_session_lost="fail"``: every turn fails with ``kind="session_lost"`` until
            the agent is stopped and started again.
        retries: Provider retries the backend reported (``retry`` events), all turns.
        last_error: The last failed turn's error as ``"Type: message"``, or ``None``.
    """

    name: AgentName
    state: str
    halted: bool
    halt_pending: bool
    queued: int
    queued_bytes: int
    pending_notifications: int
    self_chain_pending: bool
    current_ref: str | None
    current_origin: str | None
    current_elapsed: float | None
    watchdog: float | None
    turns: int
    failures: int
    input_tokens: int
    output_tokens: int
    cost_usd: float | None
    restarts: int
    node: str
    pid: int
    backend: str
    impl: str
    durable: bool
    agent_state: UserTerm = None  # what the implementation's agent_state() publishes
    session_lost: str | None = None  # why turns fail until the user acts (on_session_lost="fail")
    watchers: int = 0  # Watch subscribers (streams, CLI asks, the console)
    retries: int = 0  # provider retries reported by the backend, over the agent's life
    last_error: str | None = None  # the last failed turn's error, "Type: message"
    hibernated: bool = False  # answered from the registry: no process until a call wakes it
    waiting_for_session: bool = False  # its turn waits for a live session (max_live_sessions)


@dataclass(frozen=True, slots=True)
class AgentStarted:
    """The supervisor started the agent ``name`` at ``address``.

    Sent once the name is registered, so the name can be used as soon as this arrives.
    Callers should still talk by name: the address changes with every restart.
    """

    name: AgentName
    address: ActorAddress


@dataclass(frozen=True, slots=True)
class Stopped:
    """The agent ``name`` is stopped and deregistered.

    ``name`` is ``None`` in the answer to a stop of every agent (the system's shutdown).
    """

    name: AgentName


@dataclass(frozen=True, slots=True)
class Located:
    """Answer to ``WhereIs``: the address, or ``None`` when no live agent has the name.

    ``restarting`` is true while the supervisor restarts the agent (callers keep waiting);
    ``durable`` says whether its queued requests survive a restart; ``stopped`` says that an
    agent had the name and was stopped (or given up on) and none has taken it since.
    """

    name: AgentName
    address: Sender = None
    restarting: bool = False
    durable: bool = False
    incarnation: int = 0  # a restart is visible even when the new process reuses the port
    stopped: bool = False
    hibernated: bool = False  # no process: ``WhereIs(wait=True)`` wakes it
    status: AgentStatus | None = None  # a hibernated agent's status, as it was when it slept


@dataclass(frozen=True, slots=True)
class AgentEntry:
    """One row of ``AgentList``."""

    name: AgentName
    address: ActorAddress
    node: str = ""
    durable: bool = False
    restarting: bool = False
    incarnation: int = 0
    hibernated: bool = False


@dataclass(frozen=True, slots=True)
class AgentList:
    """Answer to ``ListAgents``."""

    agents: tuple[AgentEntry, ...] = ()


@dataclass(frozen=True, slots=True)
class TellCompleted:
    """The final outcome of a ``Tell`` sent with ``completion=True`` (to its sender).

    Agents receive it in ``handle_info`` for the tells they made with ``self.tell``.
    """

    agent: AgentName
    ref: str
    response: Response | None = None
    error: GenAgentError | None = None

    @property
    def ok(self) -> bool:
        """Whether the tell completed with a response."""
        return self.error is None


@dataclass(frozen=True, slots=True)
class DeliveryFailed:
    """Sent to ``handle_info`` when ``self.notify``/``self.tell`` could not reach ``target``."""

    target: ActorAddress
    message: object
    error: GenAgentError


@dataclass(frozen=True, slots=True)
class AgentDown:
    """Sent to ``handle_info`` of agents that ``watch_agent(name)`` when ``name`` exits.

    ``reason`` is the stop's reason (``"stop"``...), ``"crashed"`` when the supervisor gave
    up on it or it could not start, or ``"not_found"`` at once for an unknown name. A
    watch fires once; a restart is not an exit.
    """

    name: AgentName
    reason: str


@dataclass(frozen=True, slots=True)
class WatchAgent:
    """Ask the supervisor to send ``AgentDown`` to the sender when agent ``name`` exits."""

    name: AgentName


@dataclass(frozen=True, slots=True)
class TurnEvent:
    """A streamed event of the running turn, sent to ``Watch`` subscribers as it arrives.

    ``seq`` counts the turn's events from 1, so a subscriber can tell that it missed one
    (Thespian does not promise order across connections).
    """

    agent: AgentName
    ref: str
    seq: int
    event: Event
