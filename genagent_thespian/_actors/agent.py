"""``AgentActor``: the thin actor shell around one agent's :class:`AgentMachine`.

The shell translates Thespian messages into calls on the pure machine and carries out the
effects it returns: replies, turns started and cancelled at the worker, watchdog timers,
telemetry. It never blocks, so status, poll, notify and interrupt are answered within
milliseconds while a long turn runs in the worker.

It also owns the one resource the machine cannot see, the turn worker (see
:class:`_WorkerSlot`): created on the first turn, reused while healthy, replaced when it
dies, killed when a cancelled turn does not end within the grace period, retired when idle
so an idle agent costs one process. Process groups that backends report are ended here
when their worker dies, so no CLI process outlives its agent. For the CLI backends
(``turn_worker="auto"``) the worker is hosted in this process instead of a child process
(``turn_thread.py``): the same messages, through a local mailbox.

One ``ask``, as messages (names from ``messages`` and ``_core/protocol``)::

    caller                  AgentActor                          TurnWorker (child)
      | Prompt(ref) ------> machine.ask -> StartTurn
      |                     [governor: _SessionWanted -> _SessionGranted, or
      |                      _SessionInUse when the session is already live]
      |                     _StartTurn -------------------------> thread: backend.prompt()
      |                               <------------------------- _TurnOutput(pid, ready)
      | <-- TurnEvent ----- (to Watch subscribers) <------------ _TurnOutput(events)
      | <-- Response ------ machine.turn_succeeded <------------ _TurnOutput(done)
      |                     next queued prompt -> StartTurn ...   (stream ends, worker kept)

Around that path: the supervisor sends ``_InitAgent`` once (answered ``_AgentBorn`` at
once, then ``_AgentReady`` or ``_AgentInitFailed``) and ``_ShutdownAgent`` to stop
(answered ``Stopped`` after the worker's ``_SessionEnded``); it learns the worker's pid and
process groups (``_AgentProcesses``) so that it can end them should this process die. The
telemetry hub gets ``_TelemetryJoin`` and at most one ``_TelemetryBatch`` per handled
message, and says which names it wants (``_TelemetryInterest``). A tell to another agent
goes through the registry (``WhereIs`` -> ``Located``) and must be acknowledged
(``Accepted``) within ``TELL_ACK_SECONDS``, or it is resent by name.

Timers: Thespian's ``wakeupAfter`` cannot be cancelled, so every timer of this actor is one
of the ``_Deadline`` types below, kept in :class:`Deadlines` under its key; the actor holds
one wakeup for the earliest, and a deadline that outlived its subject does nothing.

Failures, in short: a worker that dies fails its turn with ``TurnCrashed`` and the agent
lives on (only the death of the agent's own process is the supervisor's to restart); a
cancelled turn that does not end within ``CANCEL_GRACE`` seconds gets its worker killed; a
durable incarnation whose write the store refuses (``StaleIncarnation``) stands down and
answers nobody, because the newer incarnation holds every request it accepted.
"""

from __future__ import annotations

import dataclasses
import os
import pickle
import time
import uuid
import zlib
from collections import OrderedDict, deque
from collections.abc import Hashable, Iterable
from dataclasses import dataclass, field, fields
from typing import cast

import psutil
from thespian.actors import (
    Actor,
    ActorExitRequest,
    ChildActorExited,
    PoisonMessage,
    ThespianWatch,
    WakeupMessage,
    WatchMessage,
)

from .._core.backend import Backend, resolve_backend
from .._core.behaviour import GenAgent
from .._core.deadlines import Deadlines
from .._core.errors import (
    AgentNotFound,
    AgentStartFailed,
    BackendError,
    GenAgentError,
    InvalidPrompt,
    MessageTooLarge,
    SessionUnavailable,
    TurnCrashed,
)
from .._core.log import get_logger
from .._core.machine import (
    AgentMachine,
    ArmDelayed,
    ArmWatchdog,
    CancelTurn,
    Effect,
    Emit,
    MachineLimits,
    Reply,
    StartTurn,
)
from .._core.protocol import (
    NODE_CAPABILITY,
    AddressBook,
    _Adopted,
    _AgentBorn,
    _AgentInitFailed,
    _AgentProcesses,
    _AgentReady,
    _BackendSession,
    _CancelTurn,
    _EndSession,
    _Hibernating,
    _InitAgent,
    _PrewarmAnswer,
    _PrewarmWanted,
    _ReportUse,
    _SessionDenied,
    _SessionEnded,
    _SessionGone,
    _SessionGranted,
    _SessionIdle,
    _SessionInUse,
    _SessionReply,
    _SessionRetire,
    _SessionWanted,
    _SessionWarmed,
    _ShutdownAgent,
    _StartTurn,
    _StreamTurn,
    _TelemetryBatch,
    _TelemetryInterest,
    _TelemetryInterestAck,
    _TelemetryJoin,
    _TurnOutput,
    _WarmSession,
    _WatcherGone,
    _WorkerHello,
)
from .._core.turn import Event
from .._core.types import (
    ActorAddress,
    AgentName,
    Capabilities,
    ClassSpec,
    MessageHandler,
    Metadata,
    OptionValue,
    Sender,
    Session,
    Unchecked,
    UserTerm,
)
from .._core.validate import DEFAULT_WATCHDOG, build_spec, check_prompt, check_request_ref
from .._durable.record import AgentRecord, Restored, lease_seconds
from .._durable.redaction import lookup_for
from .._durable.redaction import restore as restore_secrets
from .._durable.store import StaleIncarnation
from .._os.heap import share_inherited_heap
from .._os.processes import (
    AGENT_MARKER,
    children_die_with_this_process,
    kill_process,
    kill_process_group,
    owner_alive,
    owner_identity,
)
from ..messages import (
    Accepted,
    AgentSpec,
    AgentStarted,
    AgentStatus,
    Cancel,
    DeliveryFailed,
    Failure,
    Halt,
    Interrupt,
    Located,
    Notify,
    Poll,
    PollResult,
    PollState,
    Prompt,
    Resume,
    StartAgent,
    Status,
    StopAgent,
    Stopped,
    Tell,
    TellCompleted,
    TurnEvent,
    Watch,
    WatchAgent,
    WhereIs,
)
from . import hibernation
from .directory import DIRECTORY_NAME, LocalAgent, LocalAgentGone, ServiceDirectory
from .governor import GOVERNOR_NAME, SessionGovernorActor, node_sessions
from .turn_thread import HostedAddress, HostedWorker
from .unexpected import answer_unexpected
from .worker import TurnWorker

__all__ = ["AgentActor"]

_log = get_logger("genagent_thespian.agent")

#: Seconds a cancelled turn has to end before its worker is killed.
CANCEL_GRACE = 5.0
#: Seconds a stopping agent waits for its worker to terminate the session.
END_SESSION_GRACE = 10.0
#: Seconds a new turn worker has to report that it runs.
WORKER_START_GRACE = 30.0
#: Seconds between two checks that a busy turn worker's process still runs (a worker whose
#: exit Thespian never reported would otherwise hold its turn until the watchdog).
WORKER_ALIVE_CHECK = 5.0
#: Seconds between two unasked ``_SessionInUse`` notices of a busy live session (while the
#: governor wants no use reports): how soon a governor that is new counts the session.
USE_HEARTBEAT = 5.0
#: Seconds an agent answers a tell from another agent in (it acknowledges at once); past
#: that, the sender looks the name up again and resends (its cached address may belong to
#: a process that hibernated or restarted since), up to ``TELL_ATTEMPTS`` times in all.
TELL_ACK_SECONDS = 2.0
TELL_ATTEMPTS = 3
#: How many recent answers' callers an agent remembers, to tell one whose answer was too
#: large for the transport (``_on_undeliverable``).
_RECENT_REPLIES = 256

_TICK = "genagent-deadline"


# The agent's deadlines, one type each. Each names the key it is kept under in
# ``Deadlines``: arming a key again replaces the pending deadline of that key.


@dataclass(frozen=True, slots=True)
class _Watchdog:
    """The running turn's deadline; one per agent (the next turn's replaces it)."""

    turn_id: int

    @property
    def key(self) -> Hashable:
        """One key for all turns: at most one turn runs, so arming replaces the last."""
        return _Watchdog


@dataclass(frozen=True, slots=True)
class _DelayedDue:
    """A self-chained prompt or retry that waits on a timer (``ArmDelayed``)."""

    ref: str

    @property
    def key(self) -> Hashable:
        """One per ref: each delayed prompt waits on its own timer."""
        return (_DelayedDue, self.ref)


@dataclass(frozen=True, slots=True)
class _CancelGrace:
    """A cancelled turn's worker had ``CANCEL_GRACE`` seconds to end it."""

    generation: int
    turn_id: int

    @property
    def key(self) -> Hashable:
        """The deadline itself: a grace for one worker generation and turn never merges."""
        return self


@dataclass(frozen=True, slots=True)
class _WorkerIdle:
    """The worker has been idle ``worker_idle_timeout`` seconds: retire it."""

    generation: int
    used: float

    @property
    def key(self) -> Hashable:
        """One key: each turn's end pushes the single retirement deadline back."""
        return _WorkerIdle


@dataclass(frozen=True, slots=True)
class _UserTimer:
    """A ``GenAgent.send_after`` timer: deliver ``message`` to ``handle_info``."""

    timer_id: str
    message: object

    @property
    def key(self) -> Hashable:
        """One per timer id, the handle ``cancel_timer`` is given."""
        return (_UserTimer, self.timer_id)


@dataclass(frozen=True, slots=True)
class _EndSessionGrace:
    """A stopping agent's worker had ``END_SESSION_GRACE`` seconds to end the session."""

    @property
    def key(self) -> Hashable:
        """One key: a stop is carried out once."""
        return _EndSessionGrace


@dataclass(frozen=True, slots=True)
class _WorkerStartGrace:
    """A new worker had ``WORKER_START_GRACE`` seconds to report that it runs."""

    generation: int

    @property
    def key(self) -> Hashable:
        """The deadline itself: one per worker generation."""
        return self


@dataclass(frozen=True, slots=True)
class _WorkerAliveCheck:
    """Check that the busy worker of ``generation`` still runs (every ``WORKER_ALIVE_CHECK``)."""

    generation: int

    @property
    def key(self) -> Hashable:
        """One check pending at a time, for the current worker."""
        return _WorkerAliveCheck


@dataclass(frozen=True, slots=True)
class _LeaseRenewal:
    """A durable agent renews its lease a third of the way through it (``_renew_lease``)."""

    @property
    def key(self) -> Hashable:
        """One key: each renewal arms the next one."""
        return _LeaseRenewal


@dataclass(frozen=True, slots=True)
class _TellAckDue:
    """A tell this agent sent had ``TELL_ACK_SECONDS`` to be acknowledged (``Accepted``)."""

    ref: str
    attempt: int

    @property
    def key(self) -> Hashable:
        """One per tell ref, whatever the attempt: a resend replaces the last wait."""
        return (_TellAckDue, self.ref)


@dataclass(frozen=True, slots=True)
class _SlotRetireGrace:
    """A worker retired for the governor had ``CANCEL_GRACE`` seconds to exit."""

    generation: int

    @property
    def key(self) -> Hashable:
        """One key: the agent retires at most one worker for the governor at a time."""
        return _SlotRetireGrace


@dataclass(frozen=True, slots=True)
class _HibernateDue:
    """The agent has been idle ``hibernate_after`` seconds since activity ``stamp``."""

    stamp: int

    @property
    def key(self) -> Hashable:
        """One key: each use of the agent pushes the single nap deadline back."""
        return _HibernateDue


_Deadline = (
    _Watchdog
    | _DelayedDue
    | _CancelGrace
    | _WorkerIdle
    | _UserTimer
    | _EndSessionGrace
    | _WorkerStartGrace
    | _WorkerAliveCheck
    | _LeaseRenewal
    | _HibernateDue
    | _SlotRetireGrace
    | _TellAckDue
)

#: Messages that are no sign of use, so they do not keep an agent from hibernating: the
#: framework's own, and reads (a dashboard polling ``status`` must not keep a fleet awake).
_QUIET = (
    WakeupMessage,
    _TelemetryInterest,
    ActorExitRequest,
    ChildActorExited,
    _WatcherGone,
    Status,
    Poll,
    _BackendSession,
    _PrewarmAnswer,
    _SessionWarmed,
)

#: ``start_agent`` keywords that configure the framework rather than ``init_agent``.
_SPEC_SETTINGS = frozenset(f.name for f in fields(AgentSpec)) - {
    "name",
    "impl",
    "backend",
    "options",
}


@dataclass
class _WorkerSlot:
    """The agent's view of its turn worker.

    Attributes:
        generation: Counts the workers this agent made; a deadline armed for one worker
            names its generation and does nothing once that worker was replaced.
        turn_id: The turn the worker runs; ``cancelling``: a cancelled turn it has not
            ended yet (a new turn waits for it, so two provider calls never overlap).
        process_groups: What the worker's backend started, killed if the worker dies.
        last_used: When its last turn ended, for idle retirement.
    """

    address: Sender = None
    pid: int = 0
    turn_id: int | None = None  # the turn it runs
    cancelling: int | None = None  # a cancelled turn it has not finished yet
    awaiting_ready: bool = False  # the running turn's watchdog waits for the worker's ready
    watched: bool = False  # the running turn's events stream as they come (see _StartTurn)
    process_groups: set[int] = field(default_factory=set)
    last_used: float = field(default_factory=time.monotonic)
    generation: int = 0
    warming: bool = False  # started ahead of any turn (a wake-up); not on the start clock yet
    identity: tuple[int, float] | None = None  # (pid, start time) once it reported its pid


class AgentActor(Actor):
    """One agent: its machine, its worker, its timers. Started by the supervisor.

    A thin shell: every decision about prompts, turns, notifications and results is the pure
    :class:`AgentMachine`'s (tested without actors); this class turns Thespian messages into
    calls on it and its effects back into sends, worker commands and timers. It owns what the
    machine cannot see: the worker process, deadlines, the durable record, telemetry batches
    and agent-to-agent addresses.

    No handler blocks: Thespian delivers nothing to an actor that is inside
    ``receiveMessage``, so ``status``, ``poll``, ``notify`` and ``interrupt`` are answered
    within milliseconds only because the backend call runs in the worker, not here.
    """

    def __init__(self, capabilities: Capabilities | None = None) -> None:
        """An empty shell: everything it needs arrives in ``_InitAgent``.

        Thespian creates actors without constructor arguments (only the system's capabilities
        are passed), so the spec, the services' addresses and the incarnation come in the first
        message. The capabilities say whether the actor runs in a process of its own
        (``_isolated``: processes may be killed and marked) and on which convention node.
        """
        super().__init__()
        caps = capabilities or {}
        self._caps = caps
        self._isolated = caps.get("Thespian ActorSystem Name") != "simpleSystem"
        if self._isolated:
            share_inherited_heap()  # before anything here can start a full collection
        self._host_node = str(caps.get(NODE_CAPABILITY) or "")  # set on convention nodes
        # A convention node caps its own live sessions (see _node_governor).
        self._node_capped = bool(self._host_node) and node_sessions(caps) is not None
        self._local_governor: Sender = None  # that node's governor, once looked up
        self._recent_replies: OrderedDict[str, ActorAddress] = OrderedDict()  # ref -> its caller
        self.machine: AgentMachine | None = None
        self.spec: AgentSpec | None = None
        self.backend_cls: type[Backend] | None = None
        self.session: Session = None
        self.worker = _WorkerSlot()
        # turn_worker="thread": workers hosted in this process (the current one and any
        # still ending), and the local mailbox between them and this agent (turn_thread.py).
        self._threaded_turns = False
        self._hosted: list[HostedWorker] = []
        self._local: deque[tuple[object, ActorAddress, HostedWorker | None]] = deque()
        self._held_start: StartTurn | None = None
        # A turn's watchdog starts when its worker begins the backend call, not while the
        # turn waits behind a cancelling worker or a previous turn's clean-up: armed when the
        # start goes to a running worker that has nothing to wait for, else at its ``ready``
        # (see ``_arm_watchdog_if_started``).
        self._pending_watchdog: ArmWatchdog | None = None
        self._armed_watchdog: ArmWatchdog | None = None
        self._dying_groups: set[int] = set()  # killed process groups a new turn waits out
        # on_session_lost="fail": the provider lost the session; turns fail until restart.
        self._session_lost: BackendError | None = None
        self._failing_turns: list[int] = []
        self._telemetry: Sender = None
        # Until the hub says what is wanted, send everything: the hub filters per subscriber,
        # and an agent's first events must not be lost to the race with its answer.
        self._telemetry_names: frozenset[str] | None = None
        self._telemetry_out: list[tuple[str, dict[str, float], Metadata]] = []
        self._registry: Sender = None
        self._supervisor: Sender = None
        self._node = ""
        self._incarnation = 0
        self._instance_id = ""
        self._watchers = AddressBook()
        self._event_seq = 0
        self._deadlines: Deadlines[_Deadline] = Deadlines()
        self._outbox: dict[AgentName, list[tuple[str, object]]] = {}  # name -> [(kind, message)]
        self._addresses: dict[AgentName, ActorAddress] = {}
        self._outgoing_tells: dict[str, AgentName] = {}  # ref -> target name
        self._unacked_tells: dict[str, Tell] = {}  # ref -> a tell sent, not yet acknowledged
        self._stopping: tuple[str, Sender] | None = None  # (reason, reply_to)
        self._record: AgentRecord | None = None  # durable agents only
        # A newer incarnation owns the record (fenced): this one runs and answers nothing.
        self._fenced = False
        self._saves = 0  # durable saves so far: a turn's end saves a new session only once
        self._lease_renewed = 0.0  # monotonic time of the last renewal that began and held
        self._saved_files: dict[str, int] = {}  # provider session file -> CRC last stored
        self._hibernate_after = 0.0  # idle seconds before hibernating (0: never)
        self._activity = 0  # counts uses; a hibernation deadline is for one count
        self._hibernating = False  # handed over to the supervisor; ending its process
        self._sleep_status: AgentStatus | None = None  # what status says once hibernating
        self._governor: Sender = None  # the node's session governor (max_live_sessions), if any
        self._session_live = False  # the governor counts a live session (worker) of ours
        # The governor wants each turn's start and end (while a turn waits for a session;
        # see _ReportUse), and when we last said a turn runs (unasked: once per
        # USE_HEARTBEAT at most).
        self._report_use = False
        self._use_reported_at = float("-inf")
        self._awaiting_session: StartTurn | None = None  # a turn waiting for its grant
        self._retired_for_slot: Sender = None  # a worker retired for the governor, not yet gone
        self._wakes = 0  # incarnations that woke from hibernation (not counted as restarts)
        self._prewarm_pending = False  # asked the governor for a slot to prewarm (prewarm=True)

    @staticmethod
    def actorSystemCapabilityCheck(
        capabilities: Capabilities, requirements: Capabilities | None = None
    ) -> bool:
        """Accept a system whose capabilities equal every placement key (none: any system)."""
        return all(capabilities.get(key) == value for key, value in (requirements or {}).items())

    # ================================================================== dispatch

    def receiveMessage(self, message: object, sender: ActorAddress) -> ThespianWatch | None:
        """Handle one message, then what the local mailbox holds. Never raises: a bug here
        must not re-run a turn.

        With hosted workers (``turn_worker="thread"``) the agent and its worker exchange
        messages through ``_local`` (see ``turn_thread.py``), handled here in order before
        returning, and every return watches the hosted workers' pipes."""
        try:
            if isinstance(message, WatchMessage):
                self._on_watch_ready(message)
            else:
                self._handle(message, sender)
            while self._local:
                local, local_sender, worker = self._local.popleft()
                if worker is None:
                    self._handle(local, local_sender)
                else:
                    worker.receiveMessage(local, local_sender)  # never raises
        finally:
            self._flush_telemetry()
        return self._watch_hosted()

    def _handle(self, message: object, sender: ActorAddress) -> None:
        """``_dispatch`` one message, logging (never raising) what it raised."""
        try:
            self._dispatch(message, sender)
        except Exception:
            name = self.spec.name if self.spec else "?"
            _log.exception("agent %r failed handling %s", name, type(message).__name__)

    def send(self, targetAddr: ActorAddress, msg: object) -> None:  # noqa: N803 (Thespian's)
        """Send ``msg``; to a hosted worker through the local mailbox, not Thespian."""
        if isinstance(targetAddr, HostedAddress):
            if not targetAddr.worker.ended:
                self._local.append((msg, self.myAddress, targetAddr.worker))
            return
        super().send(targetAddr, msg)

    def _from_hosted(self, message: object, sender: ActorAddress) -> None:
        """A hosted worker's message to this agent: handled before ``receiveMessage`` returns."""
        self._local.append((message, sender, None))

    def _on_watch_ready(self, message: WatchMessage) -> None:
        """A hosted worker's thread wrote to its pipe: let that worker relay its output."""
        for worker in list(self._hosted):
            if not worker.ended and worker.fd in message.ready:
                worker.receiveMessage(message, self.myAddress)

    def _watch_hosted(self) -> ThespianWatch | None:
        """The watch on every live hosted worker's pipe (Thespian keeps only the last one)."""
        self._hosted = [worker for worker in self._hosted if not worker.ended]
        if not self._hosted:
            return None
        return ThespianWatch([worker.fd for worker in self._hosted])

    def _new_worker(self) -> ActorAddress:
        """Create a turn worker: a child actor process, or one hosted here (``"thread"``)."""
        if not self._threaded_turns:
            return self.createActor(TurnWorker)
        worker = HostedWorker(self._from_hosted, self._caps)
        self._hosted.append(worker)
        return worker.address

    def _retire_hosted_now(self) -> None:
        """This process is ending: retire its hosted workers in place, as a worker process
        would on its parent's exit (bounded by the worker's join grace)."""
        hosted, self._hosted = self._hosted, []
        for worker in hosted:
            if not worker.ended:
                worker.retire_now()

    def _dispatch(self, message: object, sender: ActorAddress) -> None:
        """Route ``message`` by its type through ``_HANDLERS``.

        Before ``_InitAgent`` there is no machine: a request gets ``AgentNotFound`` instead of
        silence, so a caller racing the start is still answered, and Thespian's own exit and
        wakeup notices are dropped. A type the table does not know is the user's: it goes to
        ``handle_info`` through the machine, as in ``gen_agent``."""
        if isinstance(message, _InitAgent):
            self._init(message, sender)
            return
        machine = self.machine
        if self._hibernating and isinstance(message, Status | Poll | _BackendSession):
            # Reads sent before the caller saw it sleep: the state is final, answer them.
            _HANDLERS[type(message)](self, message, sender)
            return
        if (self._fenced or self._hibernating) and not isinstance(message, ActorExitRequest):
            # Fenced: the owning incarnation holds every request. Hibernating: the record is
            # written and the process is ending; callers resend to the woken incarnation.
            return
        if machine is None:
            if isinstance(message, ActorExitRequest | ChildActorExited | WakeupMessage):
                return
            error = AgentNotFound("the agent is not initialized")
            self.send(sender, Failure(error, getattr(message, "ref", None)))
            return
        handler = _HANDLERS.get(type(message))
        if handler is not None:
            handler(self, message, sender)
        elif isinstance(message, PoisonMessage):
            self._on_undeliverable(message)
        else:
            if not _handles_info(machine.impl):
                answer_unexpected(self, f"agent {machine.name!r}", message, sender)
            self._run(machine.info(message))
        if not isinstance(message, _QUIET):
            self._note_activity()

    # ================================================================== start

    def _init(self, message: _InitAgent, sender: ActorAddress) -> None:
        """Build the agent from its spec, or resume it from its durable record.

        The user's ``init_agent``, the backend's ``start_session`` and ``pre_run`` run here,
        inside the agent's own process, so whatever they raise is reported to the supervisor
        (``_AgentInitFailed``, typed errors keeping their type) and a first start that failed
        leaves no record behind. On the multiprocess bases the process first arranges for its
        future worker to die with it and marks its environment, so no process it starts can
        outlive the agent."""
        spec = message.spec
        self.spec = spec
        self._threaded_turns = self._turns_in_thread(spec)
        self._registry = message.registry
        self._telemetry = message.telemetry
        self._supervisor = message.supervisor
        self._node = self._host_node or message.node
        self._incarnation = message.incarnation
        self._instance_id = message.instance_id
        self._governor = message.governor
        self._wakes = message.wakes
        self.send(self._supervisor, _AgentBorn(os.getpid(), self._node, spec.name))
        if self._isolated:
            # The worker must die with this process, and the CLIs it runs carry its marker:
            # both are inherited at the fork, so they come before any worker is created.
            children_die_with_this_process()
            if message.instance_id:
                os.environ[AGENT_MARKER] = message.instance_id
        if message.warm_worker:
            self._warm_worker()
        restored: Restored | None = None
        try:
            if spec.durable:
                self._record = AgentRecord.open(message.store_path, spec)
                self._record.run = message.run
                leased_at = time.monotonic()
                restored = self._record.begin(os.getpid())
                self._lease_renewed = leased_at
                self._incarnation = self._record.incarnation or 0
                self._after(_LeaseRenewal(), lease_seconds() / 3)
            impl = spec.impl()
            if not isinstance(impl, GenAgent):
                raise TypeError(f"{spec.impl!r} is not a GenAgent subclass")
            impl._genagent_context = _AgentContext(self, spec.name)
            self.backend_cls = resolve_backend(spec.backend)
            if self.backend_cls.live_session:
                self._governor = self._node_governor(message.governor)
            else:
                self._governor = None  # nothing heavy to cap: no message per turn
            if restored is not None:
                impl.restore_state(restored.impl_state)
                self._restore_session_files(restored.session)
                # The store holds no secret: fill them from the live spec or its resolver.
                lookup = lookup_for(spec.options_dict, spec.secret_resolver, spec.name)
                self.session = self.backend_cls().resume_session(
                    restore_secrets(restored.session, lookup)
                )
            else:
                backend_options = impl.init_agent(spec.options_dict)
                if backend_options is None:
                    backend_options = {}
                self.session = self.backend_cls().start_session(dict(backend_options))
                impl.pre_run()
            limits = MachineLimits.from_spec(spec)
            self.machine = AgentMachine(name=spec.name, impl=impl, limits=limits)
            if restored is None:
                effects = self.machine.start()
            else:
                effects = self.machine.restore(
                    restored.machine,
                    restored.results,
                    callers_gone=restored.run != message.run,
                )
            if restored is None or not self._record_holds(restored.session):
                self._persist()  # (a wake-up from an idle sleep resumes what it wrote)
        except Exception as exc:
            self.machine = None
            if self._record is not None and restored is None and self._incarnation == 0:
                self._record.delete()  # a first start that failed leaves no record behind
            self._init_failed(sender, spec, exc)
            return
        if self._telemetry is not None:
            self.send(self._telemetry, _TelemetryJoin())
        self.send(sender, _AgentReady(spec.name, os.getpid(), self._node, self._governor))
        self._tell_directory(here=True)
        if self._record is not None:
            self._hibernate_after = hibernation.hibernate_seconds(spec)
        now = time.time()
        for timer_id, due, timer_message in message.timers:  # left by a hibernated incarnation
            self._after(_UserTimer(timer_id, timer_message), max(0.0, due - now))
        self._run(effects)
        self._note_activity(hibernation.first_nap(self._hibernate_after))
        self._prewarm()

    def _turns_in_thread(self, spec: AgentSpec) -> bool:
        """Whether this agent hosts its turn worker (``turn_worker``; ``turn_thread.py``).

        Threads need the pipe watch (multiprocTCPBase); elsewhere the worker is an actor. A
        backend that cannot be loaded here gets a worker process: the start reports why."""
        if spec.turn_worker == "process" or not self._isolated:
            return False
        if not self._caps.get("Thespian Watch Supported"):
            return False
        if spec.turn_worker == "thread":
            return True
        try:
            return resolve_backend(spec.backend).thread_turns
        except Exception:
            return False

    def _tell_directory(self, *, here: bool) -> None:
        """On a convention node, list (or unlist) this agent in the node's directory.

        A new leader reads that list after a failover to re-adopt running agents.
        """
        if not self._host_node or self.spec is None:
            return
        directory = self.createActor(ServiceDirectory, globalName=DIRECTORY_NAME)
        if here:
            entry = LocalAgent(
                self.spec,
                self.myAddress,
                os.getpid(),
                self._incarnation,
                self._instance_id,
                self._node,
                self._governor,
            )
            self.send(directory, entry)
        else:
            self.send(directory, LocalAgentGone(self.spec.name, self.myAddress))

    def _on_adopted(self, message: _Adopted, sender: ActorAddress) -> None:
        """A new leader took over: its registry, hub and supervisor are ours from now on.

        Nothing else changes: the machine, the worker and the running turn go on, and the
        agent joins the new hub so its telemetry is not lost with the old leader. The session
        governor of a convention node is that node's and stays; on the new leader's own node
        it is the one the new supervisor made (the same, looked up by name). A turn waiting
        for a session asks again, so no turn waits forever on a governor that is gone; a
        live session is counted by a new governor from its next turn on.
        """
        self._registry = message.registry
        self._supervisor = message.supervisor
        if self.backend_cls is not None and self.backend_cls.live_session:
            self._governor = self._node_governor(message.governor)
        waiting, self._awaiting_session = self._awaiting_session, None
        if waiting is not None:
            self._start_turn(waiting)
        if message.telemetry != self._telemetry:
            self._telemetry = message.telemetry
            if self._telemetry is not None:
                self.send(self._telemetry, _TelemetryJoin())

    def _on_undeliverable(self, poison: PoisonMessage) -> None:
        """The transport refused a message of this agent (over ``max_frame_bytes``).

        Thespian hands the sender back a ``PoisonMessage``; nobody else hears of it. So an
        answer too large to send (a huge reply) becomes a ``Failure(MessageTooLarge)`` to
        the same caller, and a turn whose start cannot reach the worker (its session grew
        too large) fails with ``MessageTooLarge``: every caller gets one answer, instead of
        waiting for its timeout. Anything else is logged."""
        original = poison.poisonMessage
        slot = self.worker
        ref = getattr(original, "ref", None)
        to = self._recent_replies.pop(ref, None) if isinstance(ref, str) else None
        if to is not None and not isinstance(original, Failure):
            # An answer too large for the transport: its caller still gets one, typed.
            error = MessageTooLarge(
                f"the answer ({type(original).__name__}) is larger than the transport's "
                "max_frame_bytes and could not be sent (raise max_frame_bytes, or make "
                "replies smaller)",
                agent=self._m.name,
                ref=ref,
            )
            self.send(to, Failure(error, ref))
            return
        if isinstance(original, _StartTurn) and slot.turn_id == original.turn_id:
            slot.turn_id = None
            slot.awaiting_ready = False
            self._session_idle()  # the session was marked busy for this turn
            error = MessageTooLarge(
                "the turn could not be sent to the agent's worker: it is larger than the "
                "transport's max_frame_bytes (the session or the prompt is too large)"
            )
            self._run(self._m.turn_failed(original.turn_id, error))
            return
        _log.warning("agent %r: undeliverable %s", self._m.name, type(original).__name__)

    def _note_reply(self, to: ActorAddress, message: object) -> None:
        """Remember where the answer to a ref went, for a moment (see ``_on_undeliverable``).

        Bounded: the transport refuses a message when it is sent, so its ``PoisonMessage``
        comes back long before a few hundred later answers."""
        ref = getattr(message, "ref", None)
        if isinstance(ref, str):
            self._recent_replies[ref] = to
            if len(self._recent_replies) > _RECENT_REPLIES:
                self._recent_replies.popitem(last=False)

    def _node_governor(self, offered: Sender) -> Sender:
        """The session governor of the node this agent runs on (``None``: not capped).

        On one host that is the supervisor's (``offered``). On a convention node each node
        caps the sessions that use its own memory: the agent finds its node's governor by
        global name, which Thespian resolves per node (the node started it; were it
        missing, the first agent there would create it, as a child of the node's admin),
        and it configures itself from that node's capabilities."""
        if not self._host_node:
            return offered
        if not self._node_capped:
            return None
        if self._local_governor is None:
            self._local_governor = self.createActor(SessionGovernorActor, globalName=GOVERNOR_NAME)
        return self._local_governor

    def _init_failed(self, sender: ActorAddress, spec: AgentSpec, exc: Exception) -> None:
        """Report a failed start; typed errors (``InvalidOption``...) keep their type.

        Anything else becomes ``AgentStartFailed`` with the original type and message, never
        its traceback (it may hold option values). The supervisor answers the starter.
        """
        _log.error("agent %r failed to start: %s: %s", spec.name, type(exc).__name__, exc)
        if isinstance(exc, GenAgentError):
            error = exc.with_context(agent=spec.name)
        else:
            error = AgentStartFailed(
                f"the agent failed to start: {type(exc).__name__}: {exc}", agent=spec.name
            )
        self.send(sender, _AgentInitFailed(spec.name, error))

    # ================================================================== client requests

    def _on_prompt(self, message: Prompt, sender: ActorAddress) -> None:
        """An ``ask``: the machine queues or starts it; the answer goes to ``sender`` later.

        Nothing is sent here: the ``Response`` or ``Failure`` is a ``Reply`` effect of the
        turn's end, so a long turn never holds this handler."""
        if not self._valid_prompt(message.text, message.ref, sender):
            return
        self._run(self._m.ask(message.ref, message.text, sender))

    def _on_tell(self, message: Tell, sender: ActorAddress) -> None:
        """A ``tell``: answered ``Accepted`` at once, its outcome kept for ``poll``.

        With ``completion`` set, the sender also gets ``TellCompleted`` when it ends (how
        agents tell each other and hear back)."""
        if not self._valid_prompt(message.text, message.ref, sender):
            return
        self._run(self._m.tell(message.ref, message.text, sender, completion=message.completion))

    def _valid_prompt(self, text: object, ref: Unchecked, sender: ActorAddress) -> bool:
        """Check a prompt that may come from raw Thespian code; answer a bad one here.

        The client API checks prompts before sending; a raw ``Prompt`` or ``Tell`` was
        checked by nobody, and a bad one must be refused with a typed ``Failure``, not
        reach the machine (or the provider) as garbage.
        """
        try:
            check_prompt(text, agent=self._m.name, ref=ref if isinstance(ref, str) else None)
            check_request_ref(ref, agent=self._m.name)
        except InvalidPrompt as error:
            self.send(sender, Failure(error, ref))
            return False
        return True

    def _on_poll(self, message: Poll, sender: ActorAddress) -> None:
        """Answer from the machine's bounded result cache, never waiting for a running turn.

        An unknown or evicted ref is a failed result carrying ``RequestNotFound`` rather than
        no answer: every caller gets exactly one reply."""
        result = self._m.poll(message.ref)
        if result is None:
            from .._core.errors import RequestNotFound

            error = RequestNotFound(
                "no tell with that ref (unknown, not a tell, or evicted from the result cache)",
                agent=self._m.name,
                ref=message.ref,
            )
            result = PollResult(message.ref, PollState.FAILED, error=error)
        self.send(sender, result)

    def _on_notify(self, message: Notify, sender: ActorAddress) -> None:
        """Deliver an event to ``handle_event``: now when idle, after the turn is decided if busy.

        Buffering (in the machine) lets the event see the state the running turn leaves, as
        upstream's later fix does; ``sender`` gets ``Accepted`` or the callback's error."""
        self._run(self._m.notify(message.event, sender=message.sender, reply_to=sender))

    def _on_interrupt(self, message: Interrupt, sender: ActorAddress) -> None:
        """Interrupt the running turn (or only the one with ``ref``); the machine decides."""
        self._run(self._m.interrupt(message.ref, sender))

    def _on_cancel(self, message: Cancel, sender: ActorAddress) -> None:
        """Remove a queued tell before it runs; a running or finished one is refused, typed."""
        self._run(self._m.cancel(message.ref, sender))

    def _on_halt(self, message: Halt, sender: ActorAddress) -> None:
        """Halt from outside: finish the running turn, start no queued work until ``resume``."""
        self._run(self._m.halt(sender))

    def _on_resume(self, message: Resume, sender: ActorAddress) -> None:
        """Unhalt (or cancel a pending halt) and let the queue drain again."""
        self._run(self._m.resume(sender))

    def _on_status(self, message: Status, sender: ActorAddress) -> None:
        """Answer at once, even mid-turn: the machine's fields and what only the shell knows.

        Pid, node, restarts and backend live here, not in the pure machine. Answering within
        milliseconds while a ten-minute turn runs is why no handler of this actor may block."""
        self.send(sender, self._sleep_status or self._status())

    def _status(self) -> AgentStatus:
        """This agent's ``AgentStatus`` now."""
        spec = self.spec
        assert spec is not None and self.backend_cls is not None
        machine_fields = self._m.status_fields()
        status = AgentStatus(
            **machine_fields,
            restarts=max(0, self._incarnation - self._wakes),
            node=self._node,
            pid=os.getpid(),
            backend=self.backend_cls.name,
            impl=f"{spec.impl.__module__}.{spec.impl.__qualname__}",
            durable=spec.durable,
            agent_state=self._published_state(),
            session_lost=self._session_lost.message if self._session_lost else None,
            watchers=len(self._watchers),
            waiting_for_session=self._awaiting_session is not None,
        )
        return status

    def _published_state(self) -> UserTerm:
        """The implementation's ``agent_state()``, or ``None`` if it raised or won't pickle.

        Checked here because the status reply is pickled by Thespian: an unpicklable field
        would make the whole reply fail to send, and the caller would get no status at all
        instead of the rest of the agent's.
        """
        try:
            state = self._m.impl.agent_state()
            pickle.dumps(state)
        except Exception as exc:
            _log.warning(
                "agent %r: agent_state() failed or is not picklable: %s",
                self._m.name,
                type(exc).__name__,
            )
            return None
        return state

    def _on_watch(self, message: Watch, sender: ActorAddress) -> None:
        """Subscribe (or unsubscribe) ``sender`` to this agent's ``TurnEvent`` stream.

        The ``genagent ask`` command streams text this way; plain Thespian code can too."""
        if message.active:
            self._watchers.add(sender)
            self._watching_began()
        else:
            self._watchers.discard(sender)
        self.send(sender, Accepted(message.ref))

    def _on_watcher_gone(self, message: _WatcherGone, sender: ActorAddress) -> None:
        """A subscriber's process vanished (the registry saw its mail dead-letter): forget it.

        Without this, every event of every later turn would be sent to a dead address, each
        send costing a connection attempt in this never-blocking actor.
        """
        if message.address in self._watchers:
            self._watchers.discard(message.address)
            _log.info("agent %r: dropped a watcher that disappeared", self._m.name)

    def _on_backend_session(self, message: _BackendSession, sender: ActorAddress) -> None:
        """Hand out the backend session: data (ids, history), never live resources."""
        self.send(sender, _SessionReply(self.session))

    # ================================================================== the worker

    def _on_turn_output(self, message: _TurnOutput, sender: ActorAddress) -> None:
        """Apply what the worker relayed: process facts, a new session, events, the turn's end.

        Output of a worker that was already replaced is ignored: it can arrive after its
        successor started. A session the provider announced is persisted at once, so an agent
        killed a moment later resumes that session instead of starting a second one. The
        watchdog starts when the worker says the backend call began (``ready``), so a turn
        that waited behind a cancelled one keeps its whole deadline. The end of a cancelled
        turn only frees the worker: its caller was answered when it was cancelled."""
        if not self._worker_facts(message, sender):
            return  # a retired worker's late output
        slot = self.worker
        unsaved_since: int | None = None  # the session changed and waits for a save
        if message.session_changed and message.session != self.session:
            self.session = message.session  # also for a cancelled turn: an early id counts
            if message.done:
                # The turn's end saves the record (with its answer) in this same handler,
                # and the session with it: one write, not two.
                unsaved_since = self._saves
            else:
                self._persist_session()
        armed = self._armed_watchdog
        if message.waiting and armed is not None and armed.turn_id == message.turn_id:
            # The worker must first wait for the previous turn's clean-up: not on the clock.
            self._deadlines.cancel(_Watchdog)
            self._armed_watchdog, self._pending_watchdog = None, armed
        pending = self._pending_watchdog
        if message.ready and pending is not None and pending.turn_id == message.turn_id:
            slot.awaiting_ready = False
            self._arm_watchdog(pending)
        machine = self._m
        for event in message.events:
            self._stream(message.turn_id, event)
            self._run(machine.stream_event(message.turn_id, event))
        if not message.done:
            return
        self._turn_ended(message)
        if unsaved_since == self._saves and not self._fenced:
            self._persist_session()  # nothing at the turn's end saved (a cancelled turn's end)

    def _worker_facts(self, message: _TurnOutput | _SessionWarmed, sender: ActorAddress) -> bool:
        """Take the process facts a worker's message carries (its pid, the process groups its
        backend started or ended); ``False`` for a worker that was already replaced.

        The worker is then known to run (its start grace ends), and a change of its processes
        is reported to the supervisor and recorded, so they are ended with it."""
        slot = self.worker
        if sender != slot.address:
            return False
        self._deadlines.cancel(_WorkerStartGrace(slot.generation).key)
        known = (slot.pid, frozenset(slot.process_groups))
        if message.pid and message.pid != slot.pid:
            slot.pid = message.pid
            slot.identity = self._worker_identity(message.pid)
        for pgid, alive in message.process_groups:
            (slot.process_groups.add if alive else slot.process_groups.discard)(pgid)
        if (slot.pid, frozenset(slot.process_groups)) != known:
            self._report_processes()
        return True

    def _turn_ended(self, message: _TurnOutput) -> None:
        """The worker's turn is over: free the worker, store the transcript, end the turn."""
        slot = self.worker
        machine = self._m
        slot.last_used = time.monotonic()
        self._session_idle()
        if slot.cancelling == message.turn_id:
            slot.cancelling = None
            slot.turn_id = None
            self._release_held_start()
            return
        if slot.turn_id == message.turn_id:
            slot.turn_id = None
        # The turn's transcript is stored before its answer goes out: a host lost right
        # after the answer must not take the conversation's last exchange with it.
        self._save_session_files()
        if self._fenced:
            return  # the store refused the save: another incarnation owns the agent now
        if isinstance(message.error, BackendError) and message.error.kind == "session_lost":
            self._on_session_lost(message.error)
        if message.error is None:
            self._run(machine.turn_succeeded(message.turn_id, message.duration_ms))
        else:
            self._run(machine.turn_failed(message.turn_id, message.error))
        self._arm_idle_retirement()

    # ================================================================== session files

    def _save_session_files(self) -> None:
        """Store the provider's session files that changed (a durable CLI agent's transcript).

        Done after each turn and before its answer, so the agent restarted on another host
        can restore them and resume the same conversation there, including the exchange
        whose answer its caller already has.
        """
        record, backend_cls = self._record, self.backend_cls
        if record is None or backend_cls is None:
            return
        changed: dict[str, bytes] = {}
        try:
            for name, path in backend_cls().session_files(self.session).items():
                try:
                    blob = path.read_bytes()
                except OSError:
                    continue
                if self._saved_files.get(name) != zlib.crc32(blob):
                    changed[name] = blob
            if changed:
                record.save_session_files(changed)
        except StaleIncarnation as exc:
            self._stand_down(str(exc))
            return
        except Exception:
            _log.exception("agent %r could not save its session files", self._m.name)
            return
        self._saved_files.update((name, zlib.crc32(blob)) for name, blob in changed.items())

    def _restore_session_files(self, session: Session) -> None:
        """Put saved session files where the provider looks on this host, before resuming.

        A file already here is kept: on the same host it may hold a turn the store has not
        seen yet. A file that cannot be restored leaves the session-lost policy to decide
        at the first turn.
        """
        record, backend_cls = self._record, self.backend_cls
        if record is None or backend_cls is None:
            return
        backend, agent = backend_cls(), self.spec.name if self.spec else None
        for name, blob in record.session_files().items():
            path = backend.session_file_path(session, name)
            if path is None:
                _log.warning("agent %r: session file %r has no place here", agent, name)
                continue
            self._saved_files[name] = zlib.crc32(blob)
            if path.exists():
                continue
            try:
                path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
                partial = path.with_name(f".{path.name}.{os.getpid()}.restoring")
                fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
                with os.fdopen(fd, "wb") as out:
                    out.write(blob)
                os.replace(partial, path)
            except OSError as exc:
                _log.error("agent %r: could not restore session file %r: %s", agent, name, exc)

    def _stream(self, turn_id: int, event: Event) -> None:
        """Forward one event to ``Watch`` subscribers and to telemetry (``turn.event``).

        Events are numbered per turn (``seq``) so a subscriber can tell if it missed one."""
        current_ref = self._m.current_ref
        if current_ref is None:
            return
        self._event_seq += 1
        if self._watchers:
            out = TurnEvent(self._m.name, current_ref, self._event_seq, event)
            for watcher in self._watchers:
                self.send(watcher, out)
        self._telemetry_emit(
            "turn.event",
            {"seq": self._event_seq, "system_time": time.time()},
            {"agent": self._m.name, "ref": current_ref, "event": event},
        )

    def _on_session_lost(self, error: BackendError) -> None:
        """Apply the ``on_session_lost`` policy (see ``start_agent``) after a failed turn."""
        spec = self.spec
        assert spec is not None and self.backend_cls is not None
        lost_id = getattr(self.session, "session_id", None) or getattr(
            self.session, "thread_id", None
        )
        _log.error("agent %r: the provider lost session %s: %s", self._m.name, lost_id, error)
        if spec.on_session_lost == "fresh":
            try:
                self.session = self.backend_cls().renew_session(self.session)
            except Exception as exc:
                _log.exception("agent %r: renew_session raised", self._m.name)
                self._session_lost = BackendError(
                    f"the provider lost the session and a new one could not be made: {exc}",
                    kind="session_lost",
                    backend=self.backend_cls.name,
                )
            self._persist_session()
        else:
            self._session_lost = BackendError(
                f"the provider lost this agent's session ({error.message}); every turn fails "
                "until the agent is stopped and started again (or use on_session_lost='fresh')",
                kind="session_lost",
                retryable=False,
                backend=self.backend_cls.name,
            )
        self._telemetry_emit(
            "session.lost",
            {},
            {"agent": self._m.name, "session_id": lost_id, "policy": spec.on_session_lost},
        )

    def _fail_lost_turn(self, turn_id: int) -> None:
        """Fail a turn at once: the session is lost (iteratively: failing one starts the next)."""
        self._failing_turns.append(turn_id)
        if len(self._failing_turns) > 1:
            return  # an outer call is draining the list
        while self._failing_turns:
            lost = self._session_lost
            assert lost is not None
            error = BackendError(
                lost.message, kind=lost.kind, retryable=False, backend=lost.backend
            )
            self._run(self._m.turn_failed(self._failing_turns[0], error))
            self._failing_turns.pop(0)

    def _start_turn(self, effect: StartTurn) -> None:
        """Carry out ``StartTurn`` on the agent's worker, creating it only when there is none.

        The worker is reused while healthy: spawning one costs 11-18 ms, about ten raw round
        trips, which would dominate the framework's overhead per turn. While a cancelled turn
        is still ending, the new turn is held, so two backend calls of one agent never
        overlap. The process groups killed since the last turn travel with it, so the worker
        waits for them to be gone before a new provider process starts beside them."""
        if self._session_lost is not None:
            self._fail_lost_turn(effect.turn_id)
            return
        slot = self.worker
        if slot.cancelling is not None:
            self._held_start = effect  # wait until the cancelled turn ends or the worker dies
            return
        if self._governor is not None and self._session_warm():
            # The session is live and counted: the turn runs at once. The governor learns
            # that it is busy from a one-way notice when it asked for use reports (a retire
            # that crosses it is refused, see _on_session_retire), so a warm turn costs no
            # round trip, and while no turn waits for a session no message at all.
            self._report_in_use()
        elif self._governor is not None:
            # No live session: the turn asks for one, and waits in the node's fair queue
            # when the cap is reached.
            self._awaiting_session = effect
            wait = self.spec.watchdog if self.spec and self.spec.watchdog else DEFAULT_WATCHDOG
            self.send(self._governor, _SessionWanted(self._m.name, effect.turn_id, wait))
            return
        self._run_on_worker(effect)

    def _session_warm(self) -> bool:
        """The governor granted our session, and its worker is still ours and not retiring."""
        return (
            self._session_live
            and self.worker.address is not None
            and self._retired_for_slot is None
        )

    def _warm_worker(self) -> None:
        """Create the turn worker now, ahead of any turn: this incarnation wakes for a caller.

        Thespian forks the worker's process while this agent opens its record and
        registers, instead of after the caller's request arrives: a wake-up then waits for
        one process creation, not two in a row. The worker goes on the start clock with its
        first turn; one that gets none ends with the agent (hibernation, stop).
        """
        slot = self.worker
        if slot.address is None:
            slot.address = self._new_worker()
            slot.generation += 1
            slot.pid = 0
            slot.warming = True
            self.send(slot.address, _WorkerHello())  # its pid is recorded before the turn

    def _run_on_worker(self, effect: StartTurn) -> None:
        """Send the turn to the worker, creating one if there is none."""
        slot = self.worker
        if slot.address is None:
            slot.address = self._new_worker()
            slot.generation += 1
            slot.pid = 0
            self._after(_WorkerStartGrace(slot.generation), WORKER_START_GRACE)
        elif slot.warming:
            slot.warming = False
            if not slot.pid:
                self._after(_WorkerStartGrace(slot.generation), WORKER_START_GRACE)
        slot.turn_id = effect.turn_id
        if self._isolated:
            self._after(_WorkerAliveCheck(slot.generation), WORKER_ALIVE_CHECK)
        # The worker reports ``ready`` only when the turn cannot start at once: on a new
        # worker, or when killed process groups must be gone first (the same rule as
        # ``TurnWorker._start``, which also says ``waiting`` when a previous stream is still
        # ending); otherwise the watchdog starts now and the turn costs no extra message.
        slot.awaiting_ready = not slot.pid or bool(self._dying_groups)
        slot.watched = self._turn_watched()
        self.send(
            slot.address,
            _StartTurn(
                effect.turn_id,
                effect.ref,
                effect.prompt,
                self.session,
                self.backend_cls,
                self._m.name,
                tuple(sorted(self._dying_groups)),
                stream=slot.watched,
            ),
        )
        self._dying_groups.clear()
        self._arm_watchdog_if_started()

    def _turn_watched(self) -> bool:
        """Whether anyone looks at a turn's events as they come: a ``Watch`` subscriber, a
        telemetry handler of ``turn.event``, or the implementation's ``handle_stream_event``.

        When nobody does, the worker sends a turn's events with its end (one message per
        turn instead of one per batch of events); the turn's ``Response`` is the same."""
        return (
            bool(self._watchers)
            or self._telemetry_wanted("turn.event")
            or type(self._m.impl).handle_stream_event is not GenAgent.handle_stream_event
        )

    def _watching_began(self) -> None:
        """Somebody started watching: a turn started unwatched streams from now on."""
        slot = self.worker
        if slot.turn_id is not None and not slot.watched and slot.address is not None:
            slot.watched = True
            self.send(slot.address, _StreamTurn(slot.turn_id))

    def _arm_watchdog_if_started(self) -> None:
        """Start the pending watchdog if its turn went to a worker that starts it at once."""
        pending = self._pending_watchdog
        slot = self.worker
        if pending is not None and slot.turn_id == pending.turn_id and not slot.awaiting_ready:
            self._arm_watchdog(pending)

    def _arm_watchdog(self, watchdog: ArmWatchdog) -> None:
        """Put the turn's watchdog on the clock now; it is no longer pending."""
        self._pending_watchdog, self._armed_watchdog = None, watchdog
        self._after(_Watchdog(watchdog.turn_id), watchdog.seconds)

    # ------------------------------------------------------------------ session governor

    def _on_session_granted(self, message: _SessionGranted, sender: ActorAddress) -> None:
        """The governor lets the waiting turn run (on the live session, or a new one)."""
        effect, self._awaiting_session = self._awaiting_session, None
        self._session_live, self._report_use = True, message.report
        self._use_reported_at = time.monotonic()  # the governor counts it busy from now
        current = self._m.current
        if effect is None or current is None or current.turn_id != effect.turn_id:
            self._session_idle()  # the turn ended while it waited: nothing runs
            return
        if self.worker.cancelling is not None:
            self._held_start = effect
            return
        self._run_on_worker(effect)

    def _on_session_denied(self, message: _SessionDenied, sender: ActorAddress) -> None:
        """No session freed up in time: the turn fails with ``SessionUnavailable``."""
        effect, self._awaiting_session = self._awaiting_session, None
        current = self._m.current
        if effect is None or current is None or current.turn_id != effect.turn_id:
            return
        error = SessionUnavailable(
            f"no live provider session freed up within {message.waited:.1f}s "
            "(max_live_sessions reached; the prompt was not sent)",
            agent=self._m.name,
            ref=effect.ref,
        )
        self._run(self._m.turn_failed(effect.turn_id, error))

    def _on_session_retire(self, message: _SessionRetire, sender: ActorAddress) -> None:
        """The governor needs the slot: retire the idle worker (its CLI ends cleanly).

        The next turn starts a new worker, whose backend resumes the session from the
        session data the agent keeps (``--resume``, thread resume)."""
        slot = self.worker
        if slot.turn_id is not None or slot.cancelling is not None:
            # Busy after all: a turn started before the retire arrived. Keep the session;
            # the governor retires another one, and hears when this turn ends.
            self.send(sender, _SessionInUse(self._m.name))
            return
        if slot.address is None:
            self._session_gone()
            return
        # The slot is free once the worker (and the CLI it ends on exit) is gone: the
        # governor hears it from the exit notice, or after a grace if none comes.
        self._retired_for_slot = slot.address
        self.send(slot.address, ActorExitRequest())
        self.worker = _WorkerSlot(generation=slot.generation)
        self._after(_SlotRetireGrace(slot.generation), CANCEL_GRACE)

    def _report_in_use(self) -> None:
        """Tell the governor a turn runs on our live session, if it wants use reports.

        Unasked, once per ``USE_HEARTBEAT`` at most: a governor that is new (its process
        was replaced) learns of the session that way and counts it again."""
        now = time.monotonic()
        if self._report_use or now - self._use_reported_at >= USE_HEARTBEAT:
            self._use_reported_at = now
            self.send(self._governor, _SessionInUse(self._m.name))

    def _session_idle(self) -> None:
        """Tell the governor our live session is idle (retirable) after a turn ended, if it
        wants use reports."""
        if self._governor is not None and self._session_live and self._report_use:
            self.send(self._governor, _SessionIdle(self._m.name))

    def _on_report_use(self, message: _ReportUse, sender: ActorAddress) -> None:
        """The governor starts (or stops) wanting use reports; starting, it hears at once
        whether a turn runs on our session, or for how long it has been idle."""
        self._report_use = message.on
        if not message.on or not self._session_live:
            return  # a session that is gone was (or is being) reported as gone
        slot = self.worker
        if slot.turn_id is not None or slot.cancelling is not None:
            self._use_reported_at = time.monotonic()
            self.send(sender, _SessionInUse(self._m.name))
        else:
            idle_for = max(0.0, time.monotonic() - slot.last_used)
            self.send(sender, _SessionIdle(self._m.name, idle_for))

    def _session_gone(self, *, withdraw: bool = False) -> None:
        """Tell the governor this agent's session ended (its worker is gone).

        ``withdraw`` (the agent stops, exits or hibernates): it gives up its place in the
        queue too, so the governor never grants a slot to an agent that is gone."""
        waiting = withdraw and (self._awaiting_session is not None or self._prewarm_pending)
        if self._governor is not None and (self._session_live or waiting):
            self.send(self._governor, _SessionGone(self._m.name, withdraw=withdraw))
        self._session_live = False
        if withdraw:
            self._awaiting_session = None
            self._prewarm_pending = False  # a grant on its way is void: the governor was told

    # ------------------------------------------------------------------ prewarm

    def _prewarm(self) -> None:
        """``prewarm=True``: get the live session started now, ahead of any turn.

        Called when this incarnation is ready (a start, a restart, a wake-up). A governed
        backend first asks the node's governor for a free slot (``_PrewarmWanted``: never
        queued, never evicting); an ungoverned one warms at once. Nothing to do when a
        turn has already started or asked for the session."""
        spec = self.spec
        if spec is None or not spec.prewarm or self.machine is None or self._fenced:
            return
        if self._stopping is not None or self._hibernating or self._prewarm_pending:
            return
        if self._m.current is not None or self._awaiting_session is not None:
            return  # a turn is on its way to the session already
        if self._governor is None:
            self._warm_session()
            return
        self._prewarm_pending = True
        self.send(self._governor, _PrewarmWanted(self._m.name))

    def _on_prewarm_answer(self, message: _PrewarmAnswer, sender: ActorAddress) -> None:
        """The governor answered the prewarm: start the session, or let the first turn ask.

        A refusal (the cap is reached, or turns wait) is nobody's error: it is logged at
        debug and emitted as ``session.prewarm`` with ``outcome="no_slot"``. A grant made
        the session live (idle) in the governor's count; if a turn asked meanwhile, it was
        queued behind this grant and is granted next, and it starts the session itself."""
        if not self._prewarm_pending:
            return  # withdrawn (stopping, hibernating): the governor was told it is gone
        self._prewarm_pending = False
        if not message.granted:
            _log.debug("agent %r: no free session slot to prewarm", self._m.name)
            self._telemetry_emit(
                "session.prewarm", {}, {"agent": self._m.name, "outcome": "no_slot"}
            )
            return
        self._session_live = True  # counted now: released with the worker, the stop or exit
        self._report_use = message.report
        if self._stopping is not None or self._fenced:
            return  # nothing may start now; the stop tells the governor the session is gone
        if self._m.current is not None or self.worker.turn_id is not None:
            return  # a turn came first: it runs on this session as soon as it is granted
        self._warm_session()

    def _warm_session(self) -> None:
        """Have the worker (created now if there is none) start the backend's live session."""
        slot = self.worker
        if slot.address is None:
            slot.address = self._new_worker()
            slot.generation += 1
            slot.pid = 0
        slot.warming = False  # it has work now: it must report that it runs
        if not slot.pid:
            self._after(_WorkerStartGrace(slot.generation), WORKER_START_GRACE)
        slot.last_used = time.monotonic()
        assert self.backend_cls is not None
        self.send(slot.address, _WarmSession(self.session, self.backend_cls, self._m.name))

    def _on_session_warmed(self, message: _SessionWarmed, sender: ActorAddress) -> None:
        """The worker's prewarm facts: its pid, the process groups it started, its end.

        The groups are recorded (and reported to the supervisor) as a turn's are, so a
        prewarmed CLI is ended with its worker whatever happens; the prewarmed session is
        then an ordinary idle one (idle retirement, the governor's LRU)."""
        if not self._worker_facts(message, sender):
            return  # a retired worker's late report
        slot = self.worker
        if message.session_changed and message.session != self.session:
            self.session = message.session
            self._persist_session()
        if not message.done:
            return
        name = self._m.name
        if message.error is not None:
            _log.debug("agent %r: prewarm failed: %s", name, message.error)
            outcome = "failed"
        else:
            outcome = "warm"
        self._telemetry_emit(
            "session.prewarm",
            {"duration_ms": message.duration_ms},
            {"agent": name, "outcome": outcome, "error": message.error},
        )
        if slot.turn_id is None and slot.cancelling is None:
            slot.last_used = time.monotonic()
            self._arm_idle_retirement()

    def _cancel_turn(self, effect: CancelTurn) -> None:
        """Ask the worker to end the turn, and give it ``CANCEL_GRACE`` seconds before a kill.

        The backend's own cancel comes first (it can end its provider process cleanly); if
        the turn is still running when the grace is over, the worker is killed and replaced."""
        slot = self.worker
        if slot.address is None or slot.turn_id != effect.turn_id:
            return
        slot.cancelling = effect.turn_id
        slot.turn_id = None
        self.send(slot.address, _CancelTurn(effect.turn_id))
        self._after(_CancelGrace(slot.generation, effect.turn_id), CANCEL_GRACE)

    def _release_held_start(self) -> None:
        """Start the held turn once the worker is free, if the machine still runs that turn."""
        held, self._held_start = self._held_start, None
        if (
            held is not None
            and self._m.current is not None
            and self._m.current.turn_id == held.turn_id
        ):
            self._start_turn(held)

    def _on_child_exited(self, message: ChildActorExited, sender: ActorAddress) -> None:
        """The worker's process is gone: fail its turn with ``TurnCrashed``; the agent lives on.

        What the worker left (its CLI process groups) is killed first, and a held turn starts
        on a fresh worker. A duplicate notice, or one about a worker retired earlier, is
        ignored: Thespian may report one exit twice."""
        slot = self.worker
        if self._retired_for_slot is not None and message.childAddress == self._retired_for_slot:
            self._retired_for_slot = None
            self._session_gone()  # its CLI is gone for sure: the slot is free
            return
        if message.childAddress != slot.address:
            return  # a duplicate notice, or a worker retired earlier
        self._worker_lost(slot)

    def _worker_lost(self, slot: _WorkerSlot) -> None:
        """The worker's process is gone: clean up after it and fail its turn, if any."""
        running = slot.turn_id
        self._kill_worker_remains(slot)
        self.worker = _WorkerSlot(generation=slot.generation)
        self._session_gone()
        if running is not None:
            crash = TurnCrashed("the turn worker process exited during the turn")
            self._run(self._m.turn_failed(running, crash))
        self._release_held_start()

    def _worker_identity(self, pid: int) -> tuple[int, float] | None:
        """The worker's ``(pid, start time)``; ``None`` in-process or once it is gone."""
        if not self._isolated or pid == os.getpid():
            return None
        try:
            return owner_identity(pid)
        except psutil.Error:
            return None

    def _check_worker_alive(self, generation: int) -> None:
        """Fail the turn of a worker that died without an exit notice; else look again later.

        Thespian drops the ``ChildActorExited`` of a child now and then (measured under kill
        storms; the supervisor sweeps its agents for the same reason): without this check a
        turn whose worker was killed would wait for its watchdog, ten minutes by default.
        The process is named by pid and start time, so a reused pid is not mistaken for it.
        """
        slot = self.worker
        if slot.generation != generation or slot.turn_id is None:
            return  # another worker, or no turn to lose
        if slot.identity is not None and not owner_alive(slot.identity):
            _log.warning(
                "agent %r: its turn worker (pid %d) ended without an exit notice; failing its turn",
                self._m.name,
                slot.pid,
            )
            self._worker_lost(slot)
            return
        self._after(_WorkerAliveCheck(generation), WORKER_ALIVE_CHECK)

    def _report_processes(self) -> None:
        """Tell the supervisor what to end should this agent die (see ``_AgentProcesses``)."""
        if self._supervisor is not None and self._isolated:
            slot = self.worker
            groups = tuple(sorted(slot.process_groups))
            pid = 0 if slot.pid == os.getpid() else slot.pid  # a hosted worker has none
            self.send(self._supervisor, _AgentProcesses(pid, groups))
            if self._record is not None and slot.pid:
                if pid:
                    self._record.record_process(pid, "worker", os.getpgid(0))
                for pgid in groups:  # the reaper ends them should the whole node die
                    self._record.record_process(pgid, "cli", pgid)

    def _kill_worker_remains(self, slot: _WorkerSlot, *, kill_worker: bool = False) -> None:
        """End what a dead or stuck worker leaves behind: its process groups, itself."""
        for pgid in list(slot.process_groups):
            kill_process_group(pgid)
        self._dying_groups.update(slot.process_groups)
        slot.process_groups.clear()
        if kill_worker and self._isolated and slot.pid and slot.pid != os.getpid():
            kill_process(slot.pid)  # (a hosted worker's pid is this process's: it is given up)

    def _after(self, deadline: _Deadline, seconds: float) -> None:
        """Set ``deadline``, replacing one of the same key; arm a wakeup only if none is due."""
        delay = self._deadlines.schedule(deadline.key, seconds, deadline)
        if delay is not None:
            self.wakeupAfter(delay, payload=_TICK)

    def _on_wakeup(self, message: WakeupMessage, sender: ActorAddress) -> None:
        """Fire the deadlines now due, and ask for another wakeup only if one is needed.

        Thespian's wakeups cannot be cancelled, so ``Deadlines`` keeps the real timers and
        this actor keeps at most the wakeups it needs (see ``_core/deadlines.py``)."""
        if message.payload != _TICK:
            return
        payloads, delay = self._deadlines.fire()
        if delay is not None:
            self.wakeupAfter(delay, payload=_TICK)
        for deadline in payloads:
            self._on_deadline(deadline)

    def _on_deadline(self, deadline: _Deadline) -> None:
        """Act on one due deadline, if it still concerns the same worker and turn.

        Each deadline names the worker generation or turn it was armed for: one that outlived
        its subject (the turn ended, the worker was replaced) does nothing."""
        match deadline:
            case _Watchdog(turn_id):
                self._run(self._m.watchdog_fired(turn_id))
            case _DelayedDue(ref):
                self._run(self._m.delayed_due(ref))
                self._note_activity()
            case _CancelGrace(generation, turn_id):
                slot = self.worker
                if slot.generation == generation and slot.cancelling == turn_id:
                    _log.warning(
                        "agent %r: cancelled turn did not end in time; killing its worker",
                        self._m.name,
                    )
                    self._replace_worker(slot)
            case _WorkerIdle(generation, used):
                slot = self.worker
                if (
                    slot.generation == generation
                    and slot.last_used == used
                    and slot.turn_id is None
                    and slot.cancelling is None
                    and slot.address is not None
                ):
                    self.send(slot.address, ActorExitRequest())
                    self.worker = _WorkerSlot(generation=slot.generation)
                    self._session_gone()
            case _UserTimer(_, message):
                self._run(self._m.info(message))
                self._note_activity()
            case _TellAckDue(ref, attempt):
                self._tell_unacknowledged(ref, attempt)
            case _SlotRetireGrace():
                if self._retired_for_slot is not None:
                    _log.warning("agent %r: a retired worker sent no exit notice", self._m.name)
                    self._retired_for_slot = None
                    self._session_gone()
            case _HibernateDue(stamp):
                if stamp == self._activity:
                    self._try_hibernate()
            case _EndSessionGrace():
                if self._stopping is not None:
                    self._finish_stop()
            case _LeaseRenewal():
                self._renew_lease()
            case _WorkerAliveCheck(generation):
                self._check_worker_alive(generation)
            case _WorkerStartGrace(generation):
                slot = self.worker
                if slot.generation == generation and slot.address is not None and not slot.pid:
                    # Thespian reports no exit for a child that dies before its start-up
                    # handshake: without this, the turn would wait for its watchdog.
                    _log.error(
                        "agent %r: its turn worker never started; replacing it", self._m.name
                    )
                    running = slot.turn_id
                    self._replace_worker(slot)
                    if running is not None:
                        crash = TurnCrashed("the turn worker process never started")
                        self._run(self._m.turn_failed(running, crash))

    def _replace_worker(self, slot: _WorkerSlot) -> None:
        """Kill a stuck worker and what it started, and forget it; the next turn makes another."""
        self._kill_worker_remains(slot, kill_worker=True)
        if slot.address is not None:
            self.send(slot.address, ActorExitRequest())
        self.worker = _WorkerSlot(generation=slot.generation)
        self._session_gone()
        self._release_held_start()

    def _arm_idle_retirement(self) -> None:
        """Retire the worker after ``worker_idle_timeout`` idle seconds: one process when idle."""
        spec = self.spec
        slot = self.worker
        if spec is None or slot.address is None or spec.worker_idle_timeout <= 0:
            return
        self._after(_WorkerIdle(slot.generation, slot.last_used), spec.worker_idle_timeout)

    # ================================================================== hibernation

    def _note_activity(self, idle: float | None = None) -> None:
        """Push the hibernation deadline back (``idle`` seconds, default ``hibernate_after``)."""
        if self._hibernate_after <= 0 or self._hibernating:
            return
        self._activity += 1
        self._after(_HibernateDue(self._activity), idle or self._hibernate_after)

    def _try_hibernate(self) -> None:
        """Idle for ``hibernate_after`` seconds: hand over to the supervisor and end.

        Nothing may be in flight (``hibernation.blocker``); otherwise the agent looks again
        after another idle period. The record is written first, then the lease released
        (the woken incarnation need not wait it out), then the supervisor gets the status
        to answer while it sleeps and the timers to keep; the worker ends as an idle one
        is retired, and this process ends with ``ActorExitRequest``."""
        machine, slot, record = self._m, self.worker, self._record
        if record is None or self._fenced:
            return
        reason = hibernation.blocker(
            machine,
            worker_busy=(
                slot.turn_id is not None
                or slot.cancelling is not None
                or self._awaiting_session is not None
            ),
            watchers=len(self._watchers),
            awaiting_replies=bool(self._outbox or self._outgoing_tells),
            stopping=self._stopping is not None,
        )
        timers: hibernation.SleepingTimers | None = None
        if reason is None:
            try:
                timers = hibernation.sleeping_timers(
                    self._deadlines.pending_items(),
                    now=time.time(),
                    user_timer=_UserTimer,
                    delayed=_DelayedDue,
                )
            except Exception as exc:
                reason = f"a send_after message cannot be pickled ({type(exc).__name__})"
            else:
                if timers.wake_at is not None and timers.wake_at - time.time() < 1.0:
                    reason = "a timer is due within a second"
        if reason is not None or timers is None:
            _log.debug("agent %r stays up: %s", machine.name, reason)
            self._after(_HibernateDue(self._activity), self._hibernate_after)
            return
        try:
            self._persist()
        except StaleIncarnation as exc:
            self._stand_down(str(exc))
            return
        except Exception:
            _log.exception("agent %r could not write its record; it stays up", machine.name)
            self._after(_HibernateDue(self._activity), self._hibernate_after)
            return
        status = dataclasses.replace(self._status(), pid=0, hibernated=True)
        self._sleep_status = status
        self._hibernating = True
        self._record = None
        record.release_lease()
        record.close()
        if slot.address is not None:
            self.send(slot.address, ActorExitRequest())
            self.worker = _WorkerSlot(generation=slot.generation)
        self._session_gone(withdraw=True)
        self.send(
            self._supervisor, _Hibernating(machine.name, status, timers.timers, timers.wake_at)
        )
        if self._telemetry is not None:
            self.send(self._telemetry, _TelemetryJoin(active=False))
        self.send(self.myAddress, ActorExitRequest())

    # ================================================================== stop

    def _on_shutdown_agent(self, message: _ShutdownAgent, sender: ActorAddress) -> None:
        """``stop()``: answer every active and queued caller, then end the backend session.

        A durable agent's record is deleted first (a stopped agent is gone for good). The
        worker ends the session (bounded by ``END_SESSION_GRACE``) before ``Stopped`` is sent,
        so no CLI process outlives the stop."""
        self._stopping = (message.reason, sender)
        record, self._record = self._record, None
        if record is not None:
            if not message.keep_record:
                record.delete()  # stop() ends a durable agent for good
            record.close()
        self._run(self._m.stop(message.reason))
        slot = self.worker
        if slot.address is not None:
            self.send(slot.address, _EndSession(self.session, self.backend_cls))
            self._after(_EndSessionGrace(), END_SESSION_GRACE)
        else:
            self._terminate_session_here()
            self._finish_stop()

    def _on_session_ended(self, message: _SessionEnded, sender: ActorAddress) -> None:
        """The worker ended the session: the stop can finish."""
        if self._stopping is not None:
            self._finish_stop()

    def _finish_stop(self) -> None:
        """Kill what the worker left and answer the stopper, once.

        Reached by the worker's ``_SessionEnded`` or by ``END_SESSION_GRACE`` running out,
        whichever comes first; the second does nothing.
        """
        stopping, self._stopping = self._stopping, None
        if stopping is None:
            return
        self._session_gone(withdraw=True)
        self._kill_worker_remains(self.worker)
        self.send(stopping[1], Stopped(self._m.name))

    def _terminate_session_here(self) -> None:
        """End the session in this process when no worker can; a failure is logged, not raised.

        The stop must complete whatever the backend does."""
        if self.backend_cls is None:
            return
        try:
            self.backend_cls().terminate_session(self.session)
        except Exception:
            _log.exception("agent %r: terminate_session raised", self._m.name)

    def _stand_down(self, reason: str) -> None:
        """This incarnation no longer owns its durable agent: stop being it.

        Either the store refused its write or renewal (its epoch is stale: another
        incarnation -- on this node or another after a node loss or partition -- has taken
        over and holds every accepted request), or its lease ran out because the store was
        unreachable (a successor may be taking over). This one starts no turn, sends no
        reply (callers resend to the owner, as for any restarted durable agent), ends its
        worker and CLIs, and exits.
        """
        if self._fenced:
            return
        self._fenced = True
        _log.error("agent %r stands down: %s", self._m.name, reason)
        self._telemetry_emit(
            "agent.fenced", {}, {"agent": self._m.name, "incarnation": self._incarnation}
        )
        record, self._record = self._record, None
        if record is not None:
            record.close()
        self._kill_worker_remains(self.worker, kill_worker=True)
        self.send(self.myAddress, ActorExitRequest())

    def _on_exit_request(self, message: ActorExitRequest, sender: ActorAddress) -> None:
        """The system or supervisor is ending this actor: answer everyone, leave nothing.

        A durable agent's record keeps its last boundary (queued tells survive a shutdown).
        A fenced incarnation answers nobody: the owning incarnation does. Hosted workers are
        retired last, where Thespian would end a worker process after this handler.
        """
        try:
            self._exit_now()
        finally:
            self._retire_hosted_now()

    def _exit_now(self) -> None:
        """The body of ``_on_exit_request``."""
        self._tell_directory(here=False)
        if self._hibernating:
            return  # handed over already: the record holds everything, nobody is waiting
        record, self._record = self._record, None
        if record is not None:
            record.release_lease()  # a clean exit: the next incarnation need not wait
            record.close()
        if self._fenced:
            self._kill_worker_remains(self.worker, kill_worker=True)
            return
        self._run(self._m.stop("shutdown"))
        self._session_gone(withdraw=True)
        self._kill_worker_remains(self.worker)
        if self.worker.address is None:
            self._terminate_session_here()
        if self._telemetry is not None:
            self.send(self._telemetry, _TelemetryJoin(active=False))

    # ================================================================== telemetry

    def _on_interest(self, message: _TelemetryInterest, sender: ActorAddress) -> None:
        """The hub says which event names someone wants: batch only those from now on.

        Acknowledged when asked (``seq``), so ``attach`` returns only once every agent knows."""
        self._telemetry_names = message.names
        if self._telemetry_wanted("turn.event"):
            self._watching_began()
        if message.seq:
            self.send(sender, _TelemetryInterestAck(message.seq))

    def _telemetry_emit(
        self, name: str, measurements: dict[str, float], metadata: Metadata
    ) -> None:
        """Queue an event for the hub if anyone wants it (sent once per handled message).

        Filtered here, in the agent, by the names the hub said are wanted: an event nobody
        subscribed to costs no message at all. The node and backend are added so every
        handler can tell agents on different hosts and providers apart.
        """
        if not self._telemetry_wanted(name):
            return
        metadata.setdefault("node", self._node)
        if self.backend_cls is not None:
            metadata.setdefault("backend", self.backend_cls.name)
        self._telemetry_out.append((name, measurements, metadata))

    def _telemetry_wanted(self, name: str) -> bool:
        """Whether the hub wants events named ``name`` (all of them until it has said)."""
        names = self._telemetry_names
        return self._telemetry is not None and (names is None or name in names)

    def _flush_telemetry(self) -> None:
        """Send the queued events in one message: one send per handled message, not per event."""
        if self._telemetry_out and self._telemetry is not None:
            batch, self._telemetry_out = tuple(self._telemetry_out), []
            self.send(self._telemetry, _TelemetryBatch(batch))

    # ================================================================== agent-to-agent

    def _on_located(self, message: Located, sender: ActorAddress) -> None:
        """The registry answered a lookup: deliver what waited for that name, or report it.

        Messages to an unknown name are not dropped: ``handle_info`` gets ``TellCompleted``
        with ``AgentNotFound`` for a tell and ``DeliveryFailed`` for anything else."""
        pending = self._outbox.pop(message.name, [])
        if message.address is None:
            for kind, outgoing in pending:
                error = AgentNotFound("no agent has that name", agent=message.name)
                if kind == "tell":
                    ref = cast(Tell, outgoing).ref  # what send_to_name("tell", ...) queues
                    self._outgoing_tells.pop(ref, None)
                    self._tell_settled(ref)
                    self._run(self._m.info(TellCompleted(message.name, ref, error=error)))
                else:
                    self._run(self._m.info(DeliveryFailed(message.name, outgoing, error)))
            return
        self._addresses[message.name] = message.address
        for _kind, outgoing in pending:
            self.send(message.address, outgoing)

    def _on_failure(self, message: Failure, sender: ActorAddress) -> None:
        """A failure answering this agent's own tell or notify: ``handle_info`` gets it.

        The cached address of the failed target is dropped, so the next send looks the name
        up again (the target may have been restarted elsewhere)."""
        target = self._outgoing_tells.pop(message.ref, None) if message.ref else None
        if target is not None:
            self._tell_settled(message.ref or "")
            self._run(self._m.info(TellCompleted(target, message.ref or "", error=message.error)))
            return
        agent = message.error.agent
        if agent is not None:
            self._addresses.pop(agent, None)
        self._run(self._m.info(message))

    def _on_tell_completed(self, message: TellCompleted, sender: ActorAddress) -> None:
        """A tell this agent sent has its final outcome: ``handle_info`` gets it."""
        self._outgoing_tells.pop(message.ref, None)
        self._run(self._m.info(message))

    def _on_accepted(self, message: Accepted, sender: ActorAddress) -> None:
        """A tell this agent sent was taken: stop watching for its acknowledgement."""
        if message.ref:
            self._tell_settled(message.ref)

    def _tell_settled(self, ref: str) -> None:
        """Stop waiting for the acknowledgement of tell ``ref`` (answered, failed or given up)."""
        if self._unacked_tells.pop(ref, None) is not None:
            self._deadlines.cancel(_TellAckDue(ref, 0).key)

    def _tell_unacknowledged(self, ref: str, attempt: int) -> None:
        """No ``Accepted`` for a tell: resend it by name, or report it undeliverable.

        A send to a process that is gone (its agent hibernated or restarted since its
        address was cached) reaches nobody; looking the name up again wakes or finds the
        agent. The ref is the same, so an agent that did get it does not run it twice."""
        message = self._unacked_tells.get(ref)
        target = self._outgoing_tells.get(ref)
        if message is None or target is None:
            self._unacked_tells.pop(ref, None)
            return
        if any(getattr(out, "ref", None) == ref for _, out in self._outbox.get(target, [])):
            self._after(_TellAckDue(ref, attempt), TELL_ACK_SECONDS)  # still being looked up
            return
        if attempt + 1 >= TELL_ATTEMPTS:
            self._unacked_tells.pop(ref, None)
            self._outgoing_tells.pop(ref, None)
            error = AgentNotFound(
                f"the tell was not acknowledged after {TELL_ATTEMPTS} attempts", agent=target
            )
            self._run(self._m.info(TellCompleted(target, ref, error=error)))
            return
        self._addresses.pop(target, None)
        self.send_to_name("tell", target, message)
        self._after(_TellAckDue(ref, attempt + 1), TELL_ACK_SECONDS)

    def send_to_name(self, kind: str, name: AgentName, message: object) -> None:
        """Send ``message`` to the agent ``name``, resolving it through the registry.

        Addresses are cached per name. An unknown name is looked up once however many
        messages wait for it (they queue in ``_outbox`` and go out in order on ``Located``);
        the lookup waits out a restart and wakes a hibernated agent. Nothing here blocks.
        """
        address = self._addresses.get(name)
        if address is not None:
            self.send(address, message)
            return
        first = name not in self._outbox
        self._outbox.setdefault(name, []).append((kind, message))
        if first:
            # wait=True: a hibernated target is woken, a restarting one waited out.
            self.send(self._registry, WhereIs(name, wait=True))

    # ================================================================== effects

    @property
    def _m(self) -> AgentMachine:
        """The machine, for handlers that run only once ``_init`` built it (``_dispatch``)."""
        assert self.machine is not None
        return self.machine

    def _persist(self) -> None:
        """Write a durable agent's boundary (before its replies and turn starts go out)."""
        if self._record is not None and self.machine is not None:
            impl = self.machine.impl
            self._record.save(self.machine, self.session, impl.snapshot_state())
            self._saves += 1

    def _record_holds(self, stored_session: Session) -> bool:
        """Whether the store holds this resumed agent's snapshot already (see ``holds``)."""
        if self._record is None or self.machine is None:
            return False
        return self._record.holds(self.machine, stored_session, self.machine.impl.snapshot_state())

    def _persist_session(self) -> None:
        """Write a durable agent's record now: the provider announced or changed its session.

        Done before the next message is handled, so an agent killed a moment later restarts
        with the session as the provider knows it (``--resume``, not a second
        ``--session-id``).
        """
        try:
            self._persist()
        except StaleIncarnation as exc:
            self._stand_down(str(exc))
        except Exception:
            _log.exception("agent %r could not persist its session", self._m.name)

    def _renew_lease(self) -> bool:
        """Renew a durable agent's lease; stand down if fenced or if it ran out.

        Returns whether this incarnation still owns the agent.
        """
        record = self._record
        if record is None:
            return not self._fenced
        began = time.monotonic()
        try:
            record.renew_lease()
        except StaleIncarnation as exc:
            self._stand_down(str(exc))
            return False
        except Exception as exc:
            # Stand down while a third of the lease is left: a successor waits for its
            # expiry, so this incarnation is gone before the successor runs anything.
            held_for = time.monotonic() - self._lease_renewed
            if held_for >= lease_seconds() * 2 / 3:
                self._stand_down(
                    f"it could not renew its lease: the store has not been reachable for "
                    f"{held_for:.1f}s ({type(exc).__name__})"
                )
                return False
            _log.warning("agent %r could not renew its lease: %s", self._m.name, exc)
        else:
            self._lease_renewed = began
        self._after(_LeaseRenewal(), lease_seconds() / 3)
        return True

    def _run(self, effects: Iterable[Effect]) -> None:
        """Carry out the machine's effects, in order.

        A durable agent saves its state first whenever a reply, a turn start or a cancel is
        among them: nothing leaves this actor that its record does not hold yet, so a tell is
        acknowledged only once it is durable. When no turn remains, its watchdog is moot."""
        effects = list(effects)
        if (
            self._record is not None
            and any(isinstance(e, StartTurn) for e in effects)
            and time.monotonic() - self._lease_renewed >= lease_seconds() * 2 / 3
            and not self._renew_lease()
        ):
            return  # a turn never starts without a lease
        if self._record is not None and any(
            isinstance(e, Reply | StartTurn | CancelTurn) for e in effects
        ):
            try:
                self._persist()
            except StaleIncarnation as exc:
                self._stand_down(str(exc))
                return  # no turn starts and no reply leaves a fenced incarnation
            except Exception:
                _log.exception("agent %r could not persist its state", self._m.name)
        for effect in effects:
            if isinstance(effect, Reply):
                if effect.to is not None:
                    self.send(effect.to, effect.message)
                    self._note_reply(effect.to, effect.message)
            elif isinstance(effect, Emit):
                self._telemetry_emit(effect.name, effect.measurements, effect.metadata)
            elif isinstance(effect, StartTurn):
                self._event_seq = 0
                self._start_turn(effect)
            elif isinstance(effect, CancelTurn):
                self._cancel_turn(effect)
            elif isinstance(effect, ArmWatchdog):
                self._pending_watchdog = effect
                self._arm_watchdog_if_started()
            elif isinstance(effect, ArmDelayed):
                self._after(_DelayedDue(effect.ref), effect.seconds)
        if self.machine is not None and self.machine.current is None:
            self._deadlines.cancel(_Watchdog)  # (its key) the turn ended: its watchdog is moot
            self._pending_watchdog = self._armed_watchdog = None


class _AgentContext:
    """What ``GenAgent``'s in-callback methods use to act (see ``_behaviour.GenAgent``).

    Callbacks run inside this actor's ``receiveMessage``, so nothing here waits for an
    answer: a wait would block the agent, and Thespian would deliver it nothing, not even
    the answer awaited. Every call only sends or arms a deadline; what comes back arrives
    later as a message that the machine hands to ``handle_info`` (``TellCompleted``,
    ``DeliveryFailed``, ``AgentStarted``, ``AgentDown``...).
    """

    def __init__(self, actor: AgentActor, name: AgentName) -> None:
        self._actor = actor
        self.name = name

    def notify(self, name: AgentName, event: object) -> None:
        """Send ``Notify`` by name; an unknown name comes back as ``DeliveryFailed``."""
        self._actor.send_to_name("notify", name, Notify(event, sender=self.name))

    def tell(self, name: AgentName, prompt: str) -> str:
        """Send a ``Tell`` asking for ``TellCompleted``, and watch for its ``Accepted``.

        The ref is kept with the target's name: the completion, a ``Failure`` or the give-up
        after ``TELL_ATTEMPTS`` all reach ``handle_info`` as one ``TellCompleted`` for it.
        """
        message = Tell(prompt, completion=True)
        self._actor._outgoing_tells[message.ref] = name
        self._actor._unacked_tells[message.ref] = message
        self._actor._after(_TellAckDue(message.ref, 0), TELL_ACK_SECONDS)
        self._actor.send_to_name("tell", name, message)
        return message.ref

    def send_after(self, seconds: float, message: object) -> str:
        """Arm a ``_UserTimer``; it dies with this incarnation unless carried over a hibernation."""
        timer_id = uuid.uuid4().hex
        self._actor._after(_UserTimer(timer_id, message), max(0.0, float(seconds)))
        return timer_id

    def cancel_timer(self, timer_id: str) -> bool:
        """Drop the timer's deadline; ``False`` if it already fired or never existed."""
        return self._actor._deadlines.cancel(_UserTimer(timer_id, None).key)

    def start_agent(
        self, impl: type[GenAgent], *, name: AgentName, backend: ClassSpec, **options: OptionValue
    ) -> None:
        """Ask the supervisor for a sibling agent, splitting framework settings from options.

        The spec is built (and checked) here, so a bad option raises in the calling callback
        rather than as a late failure; the supervisor answers ``AgentStarted`` or a
        ``Failure``.
        """
        settings = {k: v for k, v in options.items() if k in _SPEC_SETTINGS}
        init_options = {k: v for k, v in options.items() if k not in _SPEC_SETTINGS}
        spec = build_spec(impl, name=name, backend=backend, options=init_options, **settings)
        self._actor.send(self._actor._supervisor, StartAgent(spec))

    def stop_agent(self, name: AgentName) -> None:
        """Ask the supervisor to stop agent ``name``; ``Stopped`` (or a ``Failure``) follows."""
        self._actor.send(self._actor._supervisor, StopAgent(name))

    def watch_agent(self, name: AgentName) -> None:
        """Ask the supervisor for ``AgentDown`` when agent ``name`` exits (or is unknown)."""
        self._actor.send(self._actor._supervisor, WatchAgent(name))

    def log_unexpected_info(self, message: object) -> None:
        """Warn about a message ``handle_info`` did not expect, except the framework's replies.

        ``AgentStarted``, ``Stopped`` and ``Accepted`` answer requests the agent made through
        this context; an implementation that does not care for them must not fill the log.
        """
        if isinstance(message, AgentStarted | Stopped | Accepted):
            return
        _log.warning("agent %r ignored unexpected message %s", self.name, type(message).__name__)


def _handles_info(impl: GenAgent) -> bool:
    """Whether the implementation has a ``handle_info`` of its own (messages it expects)."""
    return type(impl).handle_info is not GenAgent.handle_info


_HANDLERS: dict[type, MessageHandler] = {
    Prompt: AgentActor._on_prompt,
    Tell: AgentActor._on_tell,
    Poll: AgentActor._on_poll,
    Notify: AgentActor._on_notify,
    Interrupt: AgentActor._on_interrupt,
    Cancel: AgentActor._on_cancel,
    Halt: AgentActor._on_halt,
    Resume: AgentActor._on_resume,
    Status: AgentActor._on_status,
    Watch: AgentActor._on_watch,
    _WatcherGone: AgentActor._on_watcher_gone,
    _BackendSession: AgentActor._on_backend_session,
    _TurnOutput: AgentActor._on_turn_output,
    ChildActorExited: AgentActor._on_child_exited,
    WakeupMessage: AgentActor._on_wakeup,
    _ShutdownAgent: AgentActor._on_shutdown_agent,
    _SessionEnded: AgentActor._on_session_ended,
    ActorExitRequest: AgentActor._on_exit_request,
    _TelemetryInterest: AgentActor._on_interest,
    Located: AgentActor._on_located,
    _Adopted: AgentActor._on_adopted,
    Failure: AgentActor._on_failure,
    TellCompleted: AgentActor._on_tell_completed,
    Accepted: AgentActor._on_accepted,
    _SessionGranted: AgentActor._on_session_granted,
    _ReportUse: AgentActor._on_report_use,
    _SessionDenied: AgentActor._on_session_denied,
    _SessionRetire: AgentActor._on_session_retire,
    _PrewarmAnswer: AgentActor._on_prewarm_answer,
    _SessionWarmed: AgentActor._on_session_warmed,
}
