"""Internal messages between the framework's own actors (not part of the public protocol).

Names start with an underscore so they never collide with public message names, which
matters because Thespian's ``ActorTypeDispatcher`` dispatches on the class name alone.

Who sends what to whom, and what answers it::

    supervisor -> agent      _InitAgent        -> _AgentBorn, then _AgentReady | _AgentInitFailed
                             _ShutdownAgent    -> Stopped (after the worker's _SessionEnded)
                             _Adopted          (no answer; a new leader's services)
    agent -> supervisor      _AgentProcesses, _Hibernating       (no answer)
    agent -> worker          _StartTurn        -> _TurnOutput ... _TurnOutput(done=True)
                             _CancelTurn       (the turn's done output answers)
                             _EndSession       -> _SessionEnded
    supervisor -> registry   _Register, _Restarting, _Unregister, _Hibernated  (``then``)
    registry -> supervisor   _Wake             (the agent's _Register answers its waiters)
    registry -> agent        _WatcherGone
    agent <-> governor       _SessionWanted    -> _SessionGranted | _SessionDenied
                             _SessionInUse (a warm session's turn, or a retire refused)
    client -> supervisor     _WhereIsGovernor  -> _GovernorAt (then SessionsStatus to it)
                             _SessionIdle, _SessionGone; governor -> agent _SessionRetire
    agent <-> hub            _TelemetryJoin    -> _TelemetryInterest(-> _InterestAck if seq)
                             _TelemetryBatch; subscriber -> hub _TelemetrySubscribe -> Accepted
    anyone -> agent          _BackendSession   -> _SessionReply

Every message here pickles (the multiproc bases pickle every send) and holds no live
resource: sessions are data, backends travel as classes, addresses as Thespian's own.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from ..messages import AgentSpec, AgentStatus
from .errors import GenAgentError
from .turn import Event
from .types import ActorAddress, AgentName, ClassSpec, Metadata, Sender, Session

#: The Thespian capability naming a convention node: set by ``_nodes/convention.py`` on
#: each node it starts, read by agents (to report their node) and by the node watcher.
NODE_CAPABILITY = "GenAgent Node"

__all__ = [
    "NODE_CAPABILITY",
    "AddressBook",
    "_Adopted",
    "_AgentBorn",
    "_AgentInitFailed",
    "_AgentProcesses",
    "_AgentReady",
    "_BackendSession",
    "_CancelTurn",
    "_EndSession",
    "_GovernorAt",
    "_Hibernated",
    "_Hibernating",
    "_InitAgent",
    "_PrewarmAnswer",
    "_PrewarmWanted",
    "_Register",
    "_ReportUse",
    "_Restarting",
    "_SessionDenied",
    "_SessionEnded",
    "_SessionGone",
    "_SessionGranted",
    "_SessionIdle",
    "_SessionInUse",
    "_SessionReply",
    "_SessionRetire",
    "_SessionWanted",
    "_SessionWarmed",
    "_ShutdownAgent",
    "_StartTurn",
    "_StreamTurn",
    "_TelemetryBatch",
    "_TelemetryInterest",
    "_TelemetryInterestAck",
    "_TelemetryJoin",
    "_TelemetryLeave",
    "_TelemetrySubscribe",
    "_TurnOutput",
    "_Unregister",
    "_Wake",
    "_WarmSession",
    "_WatcherGone",
    "_WhereIsGovernor",
]


class AddressBook:
    """A set of Thespian addresses, compared with ``==`` only.

    Addresses are unhashable (``ActorAddress.__hash__ = None``), and an address returned by
    ``createActor`` inside an actor is provisional: its ``str()`` changes once the child is
    up, while equality keeps working. Sets here are small (watchers, subscribers).
    """

    def __init__(self) -> None:
        self._addresses: list[ActorAddress] = []

    def add(self, address: ActorAddress) -> None:
        """Add ``address`` (idempotent)."""
        if address not in self._addresses:
            self._addresses.append(address)

    def discard(self, address: ActorAddress) -> None:
        """Remove ``address`` if present."""
        self._addresses = [a for a in self._addresses if a != address]

    def clear(self) -> None:
        """Remove every address."""
        self._addresses.clear()

    def __iter__(self) -> Iterator[ActorAddress]:
        """Iterate over a copy, so a subscriber can be dropped while the list is walked."""
        return iter(list(self._addresses))

    def __len__(self) -> int:
        """How many addresses are kept."""
        return len(self._addresses)

    def __contains__(self, address: object) -> bool:
        """Whether an address equal to ``address`` is kept (by ``==``, never by hash)."""
        return address in self._addresses


# ----------------------------------------------------------------- agent <-> worker


@dataclass(frozen=True, slots=True)
class _StartTurn:
    """Agent -> worker: run one turn of ``backend`` with ``session``.

    The session and the backend class travel with every turn because the agent owns them:
    a worker may be new (the last one crashed or was retired), and it must start from the
    session as the agent last saw it, never from a copy of its own.
    """

    turn_id: int
    ref: str
    prompt: str
    session: Session
    backend: ClassSpec  # the Backend subclass (pickled by reference)
    agent: AgentName
    wait_gone: tuple[int, ...] = ()  # process groups killed earlier that must be gone first
    #: Someone watches the turn as it runs (a ``Watch`` subscriber, a ``turn.event``
    #: telemetry handler, ``handle_stream_event``): send its events as they come. Otherwise
    #: they travel with the turn's end, one message instead of two or more.
    stream: bool = True

    def __repr__(self) -> str:  # Thespian formats every message it sends: keep it cheap
        return f"_StartTurn(turn_id={self.turn_id}, ref={self.ref})"


@dataclass(frozen=True, slots=True)
class _WorkerHello:
    """Agent -> worker, sent with the creation of a worker made ahead of any turn: answer
    with your pid (a ``_TurnOutput`` of turn ``0``, nothing else in it).

    A woken agent creates its worker while it opens its record; learning the worker's pid
    then, the agent records the process while its caller's request is on its way, instead
    of between the turn's first output and its answer.
    """


@dataclass(frozen=True, slots=True)
class _CancelTurn:
    """Agent -> worker: stop turn ``turn_id`` (set its TurnContext.cancelled).

    No answer of its own: the turn's ``_TurnOutput(done=True)`` says it ended. The agent
    gives it ``CANCEL_GRACE`` seconds before it kills the worker instead.
    """

    turn_id: int


@dataclass(frozen=True, slots=True)
class _StreamTurn:
    """Agent -> worker: someone started watching turn ``turn_id`` while it runs (it was
    started with ``stream=False``): send what it produced so far now, and its events as
    they come from now on. Ignored when that turn is no longer running."""

    turn_id: int


@dataclass(frozen=True, slots=True)
class _TurnOutput:
    """Worker -> agent: what turn ``turn_id`` produced since the last output.

    ``ready`` says the worker has started the backend call after a wait (the previous
    turn's stream has finished, killed process groups are gone) or on a new worker: the
    turn's watchdog starts then. ``waiting`` says such a wait begins on a worker the agent
    thought free (its watchdog stops until ``ready``). A turn that needs neither starts at
    once and its watchdog runs from the start message: no message for it.
    ``done`` marks the end of the turn; then ``error`` is ``None`` for success (the
    ``result`` event is among ``events``) or the failure. ``session`` is set when the
    backend updated it (``session_changed``).
    """

    turn_id: int
    events: tuple[Event, ...] = ()
    session_changed: bool = False
    session: Session = None
    done: bool = False
    error: GenAgentError | None = None
    duration_ms: float = 0.0
    process_groups: tuple[tuple[int, bool], ...] = ()  # (pgid, alive)
    pid: int = 0
    ready: bool = False
    waiting: bool = False

    def __repr__(self) -> str:  # Thespian formats every message it sends: keep it cheap
        return f"_TurnOutput(turn_id={self.turn_id}, events={len(self.events)}, done={self.done})"


@dataclass(frozen=True, slots=True)
class _EndSession:
    """Agent -> worker: call ``terminate_session`` and ``close`` (the agent is stopping)."""

    session: Session
    backend: ClassSpec


@dataclass(frozen=True, slots=True)
class _SessionEnded:
    """Worker -> agent: the session is terminated and live resources are released."""


# ----------------------------------------------------------------- supervisor <-> agent


@dataclass(frozen=True, slots=True)
class _InitAgent:
    """Supervisor -> new agent: who you are and where the shared services are."""

    spec: AgentSpec
    registry: ActorAddress
    telemetry: ActorAddress
    supervisor: ActorAddress
    node: str
    incarnation: int = 0
    instance_id: str = ""  # marks this incarnation's processes (GENAGENT_AGENT_ID)
    store_path: str | None = None  # the durable store (SQLite file) of this system
    # This boot of the system: asks recorded under another one came from callers that were
    # gone with the previous system, so a restored agent does not run them.
    run: str = ""
    #: ``send_after`` timers a hibernated incarnation left: ``(timer_id, due, message)``,
    #: ``due`` in wall-clock seconds (``time.time()``), re-armed for what remains.
    timers: tuple[tuple[str, float, object], ...] = ()
    governor: Sender = None  # the node's session governor (``max_live_sessions``), if any
    wakes: int = 0  # incarnations that were wake-ups from hibernation, not restarts
    #: Woken for a waiting caller: start the turn worker first, so its process comes up
    #: while the record loads (the caller's request almost always needs it).
    warm_worker: bool = False


@dataclass(frozen=True, slots=True)
class _AgentReady:
    """Agent -> supervisor: init_agent and start_session succeeded (``node``: where it runs).

    ``governor``: the session governor of its node that counts its live session (``None``:
    not governed), told ``_SessionGone`` should the agent die."""

    name: AgentName
    pid: int
    node: str = ""
    governor: Sender = None


@dataclass(frozen=True, slots=True)
class _Adopted:
    """New leader's supervisor -> a running agent: use these services from now on.

    Sent after a leader failover to agents that outlived their supervisor (see
    ``_actors/keeper.py``): they keep their process and incarnation.
    """

    registry: ActorAddress
    telemetry: ActorAddress
    supervisor: ActorAddress
    governor: Sender = None  # the new leader's session governor, if it caps sessions


@dataclass(frozen=True, slots=True)
class _AgentInitFailed:
    """Agent -> supervisor: the agent cannot start (the error says why)."""

    name: AgentName
    error: GenAgentError


@dataclass(frozen=True, slots=True)
class _AgentBorn:
    """Agent -> supervisor, first thing: the pid of the new incarnation's process.

    With its start time it names this incarnation for good, so an exit notice can be told
    apart from a late one of an earlier incarnation that had the same address.
    """

    pid: int
    node: str = ""
    name: AgentName = None  # the agent's name: the supervisor finds it without a scan


@dataclass(frozen=True, slots=True)
class _AgentProcesses:
    """Agent -> supervisor: the processes to end if this agent dies without cleaning up.

    A parent killed with SIGKILL leaves its children running (Thespian does not reap
    them), so the supervisor keeps this list and ends them when the agent's exit is
    abnormal: its worker process and the backends' process groups.
    """

    worker_pid: int
    process_groups: tuple[int, ...] = ()


@dataclass(frozen=True, slots=True)
class _ShutdownAgent:
    """Supervisor -> agent: answer everything pending, end the session, then report back.

    ``keep_record``: a system shutdown keeps a durable agent's record at its last boundary
    (a rerun on the same store resumes it); ``stop()`` deletes it.
    """

    reason: str
    keep_record: bool = False


@dataclass(frozen=True, slots=True)
class _BackendSession:
    """Ask an agent for its current backend session (tests and tools read the history).

    Answered even by a hibernating agent: the session is data the record holds, and a
    read must not wake an agent.
    """


@dataclass(frozen=True, slots=True)
class _SessionReply:
    """Answer to ``_BackendSession``."""

    session: Session


# ----------------------------------------------------------------- registry


@dataclass(frozen=True, slots=True)
class _Register:
    """Supervisor -> registry: ``name`` now lives at ``address``.

    ``then`` holds ``(address, message)`` replies the registry sends once the entry is in,
    so a caller told "started" can never look the name up before it is registered.
    """

    name: AgentName
    address: ActorAddress
    node: str = ""
    then: tuple[tuple[ActorAddress, object], ...] = ()
    durable: bool = False
    incarnation: int = 0
    seq: int = 0  # the supervisor's update order (see _Unregister)


@dataclass(frozen=True, slots=True)
class _SessionWanted:
    """Agent -> governor: turn ``turn_id`` needs a live session; wait at most ``timeout`` s."""

    name: AgentName
    turn_id: int
    timeout: float


@dataclass(frozen=True, slots=True)
class _SessionGranted:
    """Governor -> agent: run the turn (its session is live, or it may start one);
    ``report``: tell the governor when each turn begins and ends (see ``_ReportUse``)."""

    name: AgentName
    report: bool = False


@dataclass(frozen=True, slots=True)
class _SessionDenied:
    """Governor -> agent: no session freed up within the timeout (after ``waited`` s)."""

    name: AgentName
    waited: float


@dataclass(frozen=True, slots=True)
class _SessionRetire:
    """Governor -> agent: end your idle session (retire the worker); answer ``_SessionGone``."""

    name: AgentName


@dataclass(frozen=True, slots=True)
class _SessionInUse:
    """Agent -> governor: a turn runs on my live session (no answer).

    Sent instead of ``_SessionWanted`` when the session is already live, so a turn on a
    warm session does not wait for the governor; and in answer to a ``_SessionRetire``
    that arrived while a turn ran (the session stays). ``_SessionIdle`` follows when the
    turn ends. Only while the governor wants use reports (``_ReportUse``); otherwise
    once in a while (``USE_HEARTBEAT``), so a governor that is new learns of the session."""

    name: AgentName


@dataclass(frozen=True, slots=True)
class _SessionIdle:
    """Agent -> governor: the turn ended (``idle_for`` seconds ago); the session stays live,
    idle. Only while the governor wants use reports (``_ReportUse``)."""

    name: AgentName
    idle_for: float = 0.0


@dataclass(frozen=True, slots=True)
class _ReportUse:
    """Governor -> agent: report your session's use (``on``: say at once whether a turn
    runs on it, ``_SessionInUse`` or ``_SessionIdle``, then at each turn's start and end),
    or stop reporting it (not ``on``).

    The governor needs to know which sessions are busy only while a turn waits, when it
    retires the least recently used idle one for it (and with an idle timeout); otherwise
    the two notices per turn would be a third of an agent's CPU per claude turn."""

    name: AgentName
    on: bool


@dataclass(frozen=True, slots=True)
class _SessionGone:
    """Agent or supervisor -> governor: the session ended (worker retired or crashed).

    ``withdraw``: the agent is gone (stopped, exited, hibernated): drop its queued request.
    """

    name: AgentName
    withdraw: bool = False


@dataclass(frozen=True, slots=True)
class _PrewarmWanted:
    """Agent -> governor: may I start my session now, ahead of any turn (``prewarm=True``)?

    Answered ``_PrewarmAnswer``. Only a free slot is given: a prewarm never waits in the
    queue and never makes the governor retire a session."""

    name: AgentName


@dataclass(frozen=True, slots=True)
class _PrewarmAnswer:
    """Governor -> agent: ``granted``: start the session (it counts as live and idle);
    ``report``: as in ``_SessionGranted``."""

    name: AgentName
    granted: bool
    report: bool = False


@dataclass(frozen=True, slots=True)
class _WarmSession:
    """Agent -> worker: start ``backend``'s live session for ``session`` without a turn.

    The worker calls ``Backend.warm`` in its turn thread; a turn that arrives meanwhile
    waits for it and then runs on what it started. Answered ``_SessionWarmed(done=True)``.
    """

    session: Session
    backend: ClassSpec  # the Backend subclass (pickled by reference)
    agent: AgentName

    def __repr__(self) -> str:  # Thespian formats every message it sends: keep it cheap
        return f"_WarmSession(agent={self.agent!r})"


@dataclass(frozen=True, slots=True)
class _SessionWarmed:
    """Worker -> agent: facts of a prewarm (and process groups reported outside a turn).

    ``process_groups`` are what ``Backend.warm`` started (``(pgid, alive)``, as in
    ``_TurnOutput``), so the agent can end them should the worker die; ``session`` is set
    when ``warm`` changed it (``session_changed``); ``done`` once ``warm`` returned, with
    ``error`` naming what it raised (a failed prewarm costs nobody anything: the first
    turn starts the session as usual)."""

    done: bool = False
    session_changed: bool = False
    session: Session = None
    error: str | None = None
    duration_ms: float = 0.0
    process_groups: tuple[tuple[int, bool], ...] = ()
    pid: int = 0

    def __repr__(self) -> str:  # Thespian formats every message it sends: keep it cheap
        return f"_SessionWarmed(done={self.done})"


@dataclass(frozen=True, slots=True)
class _WhereIsGovernor:
    """Client -> supervisor: which actor governs this node's live sessions?"""


@dataclass(frozen=True, slots=True)
class _GovernorAt:
    """Supervisor -> client: the governor's address, or ``None`` when nothing is capped."""

    address: ActorAddress


@dataclass(frozen=True, slots=True)
class _Hibernating:
    """Agent -> supervisor: I have saved my record and am ending my process to hibernate.

    ``status`` is what ``status`` answers while it sleeps; ``timers`` are its pending
    ``send_after`` timers (see ``_InitAgent.timers``); ``wake_at`` is the wall-clock time of
    its earliest timer or delayed prompt, when the supervisor wakes it (``None``: never).
    """

    name: AgentName
    status: AgentStatus
    timers: tuple[tuple[str, float, object], ...] = ()
    wake_at: float | None = None


@dataclass(frozen=True, slots=True)
class _Hibernated:
    """Supervisor -> registry: ``name`` (last at ``address``) sleeps; wake it on demand.

    ``WhereIs(wait=True)`` for it sends ``_Wake`` to ``supervisor`` and answers once it is
    registered again; ``WhereIs`` without ``wait`` answers ``status`` without waking it.
    """

    name: AgentName
    address: ActorAddress
    status: AgentStatus
    supervisor: ActorAddress
    seq: int = 0  # the supervisor's update order (see _Unregister)


@dataclass(frozen=True, slots=True)
class _Wake:
    """Registry -> supervisor: a caller waits for hibernated agent ``name``; start it."""

    name: AgentName


@dataclass(frozen=True, slots=True)
class _Restarting:
    """Supervisor -> registry: ``name`` is being restarted; callers should keep waiting."""

    name: AgentName
    durable: bool = False
    seq: int = 0  # the supervisor's update order (see _Unregister)


@dataclass(frozen=True, slots=True)
class _Unregister:
    """Supervisor -> registry: ``name`` (at ``address``) is gone; then send ``then``.

    ``seq`` numbers the supervisor's updates: Thespian may deliver two of them out of order,
    and a ``_Restarting`` overtaken by the give-up's ``_Unregister`` must not leave the name
    "restarting" for ever. The registry applies an update only if it is newer.
    """

    name: AgentName
    address: ActorAddress
    then: tuple[tuple[ActorAddress, object], ...] = ()
    seq: int = 0


# ----------------------------------------------------------------- telemetry


@dataclass(frozen=True, slots=True)
class _TelemetryBatch:
    """Agent -> hub -> subscribers: telemetry events ``(name, measurements, metadata)``."""

    events: tuple[tuple[str, dict[str, float], Metadata], ...]


@dataclass(frozen=True, slots=True)
class _TelemetryJoin:
    """Agent -> hub: I emit telemetry; tell me which event names anyone wants."""

    active: bool = True


@dataclass(frozen=True, slots=True)
class _TelemetryInterest:
    """Hub -> agents: the event names someone subscribes to (``None`` = all).

    A non-zero ``seq`` asks for a ``_TelemetryInterestAck``: the hub acknowledges a new
    subscription only once every agent sends what it wants (no event is lost to the race).
    """

    names: frozenset[str] | None
    seq: int = 0


@dataclass(frozen=True, slots=True)
class _TelemetryInterestAck:
    """Agent -> hub: interest update ``seq`` is in effect."""

    seq: int


@dataclass(frozen=True, slots=True)
class _TelemetryLeave:
    """Supervisor -> hub: the agent at ``address`` is gone; stop waiting on it."""

    address: ActorAddress


@dataclass(frozen=True, slots=True)
class _TelemetrySubscribe:
    """Subscriber -> hub: send me these event names (``None`` = all; ``active=False`` stops)."""

    names: frozenset[str] | None
    active: bool = True
    token: str = ""


@dataclass(frozen=True, slots=True)
class _WatcherGone:
    """Registry -> agent: a ``TurnEvent`` to this subscriber was undeliverable; drop it."""

    address: ActorAddress
