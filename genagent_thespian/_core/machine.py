"""The agent's state machine as a pure object: no actors, no processes, no clocks of its own.

:class:`AgentMachine` holds everything an agent knows between messages (phase, halted
flag, FIFO mailbox, self-chain slot, buffered notifications, the tell-result cache, the
running turn) and calls the user's :class:`~genagent_thespian.GenAgent` callbacks. Each
input method returns a list of *effects* (:class:`Reply`, :class:`StartTurn`,
:class:`CancelTurn`, :class:`ArmWatchdog`, :class:`Emit`) that the actor shell in
``_actors/agent.py`` carries out. Tests drive the machine directly, with a fake clock.

Why effects rather than sends: the machine must be testable without an actor system, and
the shell must be able to act on the whole batch at once (a durable agent writes its
record before any ``Reply`` or ``StartTurn`` of the batch leaves, so nothing is
acknowledged that a restart would forget).

One ask, as calls and effects::

    ask(ref, prompt, caller)     -> [Emit state.changed, StartTurn(1), ArmWatchdog(1),
                                     Emit prompt.start, Emit turn.start]
    stream_event(1, text event)  -> []                  (handle_stream_event saw it)
    turn_succeeded(1, ms)        -> [Emit prompt.stop, Emit turn.stop, ...,
                                     Reply(caller, Response), StartTurn(2) if work waits]

Invariants kept by every method:

* at most one turn runs; ``phase == PROCESSING`` exactly when ``current`` is set;
* idle and not halted implies an empty mailbox and an empty self-chain slot;
* every ask and tell is answered exactly once (a reply, a cached result, or both);
* a finished turn runs: record, decide (handle_response / handle_error), post_turn,
  halt (post_run once per transition to halted), drain buffered notifications,
  reply to the caller, then the next work (self-chain first, then the mailbox).

The machine never looks inside an address: ``reply_to``, ``Reply.to`` and a notification's
sender are whatever the shell hands it (Thespian's ``ActorAddress``, or none), and events and
info messages are the user's own picklable terms (``_core/types.py`` names each).
"""

from __future__ import annotations

import enum
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Mapping
from dataclasses import MISSING, dataclass, field, fields
from typing import TypedDict

from ..messages import (
    Accepted,
    AgentSpec,
    Failure,
    Halt,
    PollResult,
    PollState,
    Prompt,
    Skip,
    TellCompleted,
)
from .behaviour import GenAgent
from .errors import (
    AgentOverloaded,
    AgentRestarted,
    AgentStopped,
    CallbackError,
    DuplicateRequest,
    GenAgentError,
    RequestNotFound,
    TurnCancelled,
    TurnHalted,
    TurnInterrupted,
    TurnSkipped,
    TurnTimeout,
)
from .log import get_logger
from .turn import Event, EventKind, Response, Usage
from .types import ActorAddress, AgentName, Callback, Metadata, Pickled, Sender, UserTerm
from .validate import SPEC_DEFAULTS

__all__ = [
    "AgentMachine",
    "ArmDelayed",
    "ArmWatchdog",
    "CancelTurn",
    "Effect",
    "Emit",
    "MachineLimits",
    "Origin",
    "Phase",
    "Reply",
    "Request",
    "StartTurn",
]

_log = get_logger("genagent_thespian.agent")


class Phase(enum.StrEnum):
    """The two states of an agent. Halted is a flag on IDLE, not a state."""

    IDLE = "idle"  # waiting for work; drains the queue on entry unless halted
    PROCESSING = "processing"  # exactly one turn is in flight


class Origin(enum.StrEnum):
    """Where a prompt came from; decides who hears about its outcome."""

    ASK = "ask"  # a caller is waiting for the Response
    TELL = "tell"  # the outcome is cached for poll (and optionally sent as TellCompleted)
    EVENT = "event"  # returned by handle_event
    INFO = "info"  # returned by handle_info
    SELF_CHAIN = "self_chain"  # returned by handle_response / handle_error


@dataclass(slots=True)
class Request:
    """One prompt waiting for, or holding, the agent's single turn slot."""

    ref: str
    origin: Origin
    prompt: str
    reply_to: Sender = None
    completion: bool = False
    attempt: int = 1
    size: int = 0
    answered: bool = False


# --------------------------------------------------------------------------- effects


@dataclass(frozen=True, slots=True)
class Reply:
    """Send ``message`` to the address ``to``."""

    to: ActorAddress
    message: object


@dataclass(frozen=True, slots=True)
class StartTurn:
    """Run ``prompt`` on the backend as turn ``turn_id`` (for request ``ref``)."""

    turn_id: int
    ref: str
    prompt: str


@dataclass(frozen=True, slots=True)
class CancelTurn:
    """Stop turn ``turn_id`` at the worker (the caller already has its answer)."""

    turn_id: int
    reason: str


@dataclass(frozen=True, slots=True)
class ArmWatchdog:
    """Call ``watchdog_fired(turn_id)`` after ``seconds``."""

    turn_id: int
    seconds: float


@dataclass(frozen=True, slots=True)
class ArmDelayed:
    """Call ``delayed_due(ref)`` after ``seconds`` (a self-chain or retry with a delay)."""

    ref: str
    seconds: float


@dataclass(frozen=True, slots=True)
class Emit:
    """Emit the telemetry event ``name``."""

    name: str
    measurements: dict[str, float]
    metadata: Metadata


class StatusFields(TypedDict):
    """The machine's part of an ``AgentStatus``, keyed by its fields (``status_fields``)."""

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
    retries: int
    last_error: str | None
    input_tokens: int
    output_tokens: int
    cost_usd: float | None


Effect = Reply | StartTurn | CancelTurn | ArmWatchdog | ArmDelayed | Emit


@dataclass(frozen=True, slots=True)
class MachineLimits:
    """The bounds of one agent (validated by ``build_spec`` before they get here).

    Every queue the machine holds is bounded: the mailbox by count and bytes, the result
    cache by ``max_tell_results``, buffered notifications by ``max_pending_notifications``.
    An agent's memory (and a durable agent's snapshot) cannot grow without end, whatever
    its callers send.
    """

    watchdog: float | None = SPEC_DEFAULTS.watchdog
    max_tell_results: int = SPEC_DEFAULTS.max_tell_results
    max_queued: int = SPEC_DEFAULTS.max_queued
    max_queued_bytes: int = SPEC_DEFAULTS.max_queued_bytes
    max_pending_notifications: int = 1000  # not a user setting: buffered notify/info bound

    @classmethod
    def from_spec(cls, spec: AgentSpec) -> MachineLimits:
        """The limits an agent started from ``spec`` runs with."""
        return cls(
            watchdog=spec.watchdog,
            max_tell_results=spec.max_tell_results,
            max_queued=spec.max_queued,
            max_queued_bytes=spec.max_queued_bytes,
        )


@dataclass(frozen=True, slots=True)
class MachineSnapshot:
    """The machine's durable state (see :meth:`AgentMachine.snapshot`); must pickle."""

    halted: bool
    halt_pending: bool
    mailbox: tuple[Request, ...]
    self_chain: Request | None
    delayed: tuple[Request, ...]  # timer-delayed self-chains/retries: re-queued at restore
    pending: tuple[tuple[str, object, Sender, Sender], ...]  # buffered (kind, payload, sender, to)
    in_flight: tuple[Request, str] | None  # the running turn's request and sent prompt
    answered: tuple[str, ...]  # refs answered lately, so a resent request is not run twice
    counters: _Counters

    @classmethod
    def from_dict(cls, data: Mapping[str, Pickled]) -> MachineSnapshot:
        """Read the ``dict`` snapshot that stores written before typed snapshots hold.

        (Keys as ``snapshot()`` used to write them; ``delayed`` came later than the rest.)
        """
        return cls(
            halted=data["halted"],
            halt_pending=data["halt_pending"],
            mailbox=tuple(data["mailbox"]),
            self_chain=data["self_chain"],
            delayed=tuple(data.get("delayed", ())),
            pending=tuple(data["pending"]),
            in_flight=data["in_flight"],
            answered=tuple(data["answered"]),
            counters=data["counters"],
        )


@dataclass(slots=True)
class _ActiveTurn:
    """The running turn: its request, the prompt actually sent, and its events so far."""

    turn_id: int
    request: Request
    prompt: str
    started_at: float
    events: list[Event] = field(default_factory=list)


@dataclass(slots=True)
class _Counters:
    """Totals over the agent's life (reported by ``status``; a durable agent keeps them)."""

    turns: int = 0
    failures: int = 0
    callback_failures: int = 0
    usage: Usage = field(default_factory=Usage)
    retries: int = 0  # provider retries the backends reported (``retry`` events)
    last_error: str | None = None  # the last failed turn, "Type: message" (for operators)

    def __setstate__(self, state: Pickled) -> None:
        """Restore counters pickled by an older release, giving new fields their defaults.

        Durable agents keep their counters across restarts and upgrades; a slot left unset would
        raise ``AttributeError`` on the first ``status``.
        """
        # Pickled as (None, {slot: value}); records written before a field existed
        # restore it with its default instead of leaving the slot unset.
        values = state[1] if isinstance(state, tuple) else state
        for item in fields(self):
            if item.name in (values or {}):
                setattr(self, item.name, values[item.name])
            elif item.default_factory is not MISSING:
                setattr(self, item.name, item.default_factory())
            else:
                setattr(self, item.name, item.default)


class AgentMachine:
    """The pure two-state machine of one agent. See the module docstring.

    Attributes:
        phase: ``IDLE`` or ``PROCESSING``; ``PROCESSING`` exactly while ``current`` is set.
        halted: No queued work starts until ``resume``; ``halt_pending``: halt when the
            running turn ends.
        stopped: ``stop`` ran: every later request is refused with ``AgentStopped``.
        mailbox: Asks and tells waiting for the turn slot, oldest first, bounded by
            ``limits.max_queued`` and ``limits.max_queued_bytes`` (``mailbox_bytes``).
        self_chain: The prompt a callback chained, run before the mailbox.
        delayed: Chained prompts and retries waiting on a timer, by ref (``ArmDelayed``).
        pending: Notifications and infos buffered during a turn, bounded.
        current: The running turn, with its events so far.
        results: Tell outcomes for ``poll``, oldest evicted first; ``new_results``: those
            the durable record has not written yet.
        answered: Refs answered lately, so a request resent after a restart is not run twice.
    """

    def __init__(
        self,
        *,
        name: AgentName,
        impl: GenAgent,
        limits: MachineLimits | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """A fresh, idle machine. ``clock`` is injectable so tests drive time without sleeping."""
        self.name = name
        self.impl = impl
        self.limits = limits or MachineLimits()
        self.clock = clock
        self.phase = Phase.IDLE
        self.halted = False
        self.halt_pending = False
        self.stopped = False
        self.mailbox: deque[Request] = deque()
        self.mailbox_bytes = 0
        self.self_chain: Request | None = None
        self.delayed: dict[str, Request] = {}  # self-chains and retries waiting on a timer
        self.pending: deque[tuple[str, object, Sender, Sender]] = (
            deque()
        )  # (kind, payload, sender, to)
        self.current: _ActiveTurn | None = None
        self.results: OrderedDict[str, PollResult] = OrderedDict()
        self.counters = _Counters()
        self._next_turn_id = 1
        self._effects: list[Effect] = []
        self._refusals = 0  # consecutive pre_turn refusals of generated prompts
        self.new_results: list[PollResult] = []  # tell results not yet persisted
        self.answered: deque[str] = deque(maxlen=1024)  # refs answered lately (dedupe)

    # ================================================================== inputs: requests

    def start(self) -> list[Effect]:
        """Announce the agent as idle (``pre_run`` is run by the shell before this)."""
        self._emit("state.changed", {}, {"from": None, "to": Phase.IDLE.value})
        return self._flush()

    def ask(self, ref: str, prompt: str, reply_to: ActorAddress) -> list[Effect]:
        """Accept a synchronous prompt; the Response or Failure goes to ``reply_to`` later.

        Refused at once with a ``Failure`` when it would have to wait in a full mailbox
        (``AgentOverloaded``) or the agent is stopping; a ref already held or answered is a
        resend, never run twice.
        """
        self._admit(Request(ref, Origin.ASK, prompt, reply_to, size=_size(prompt)))
        return self._flush()

    def tell(
        self, ref: str, prompt: str, reply_to: ActorAddress, *, completion: bool = False
    ) -> list[Effect]:
        """Accept an asynchronous prompt and answer ``Accepted(ref)`` at once.

        The acknowledgement goes first among the effects: a tell that ends at once (its
        ``pre_turn`` skips it) must not reach its sender as ``TellCompleted`` before the
        ``Accepted`` it is waiting for.
        """
        request = Request(ref, Origin.TELL, prompt, reply_to, completion=completion)
        request.size = _size(prompt)
        if self._admit(request):
            self._effects.insert(0, Reply(reply_to, Accepted(ref)))
        return self._flush()

    def notify(
        self, event: object, *, sender: Sender = None, reply_to: Sender = None
    ) -> list[Effect]:
        """Deliver ``event`` to ``handle_event`` now (idle) or after the turn (processing).

        Buffered during a turn so that the callback sees the state the turn's decision
        leaves, not a state the running turn is about to overwrite (gen_agent's later fix).
        ``reply_to`` gets ``Accepted`` or the callback's error once it ran.
        """
        self._emit("event.received", {}, {"event": event, "sender": sender})
        self._deliver("event", event, sender, reply_to)
        return self._flush()

    def info(self, message: object) -> list[Effect]:
        """Deliver any other message to ``handle_info`` now or after the turn."""
        self._deliver("info", message, None, None)
        return self._flush()

    def poll(self, ref: str) -> PollResult | None:
        """Return where the tell ``ref`` stands, or ``None`` if it is unknown or evicted.

        A query, not an input: it changes nothing and returns no effects, so the shell can
        answer it from a hibernating agent's last state as well.
        """
        cached = self.results.get(ref)
        if cached is not None:
            return cached
        if self._holds(ref):
            return PollResult(ref, PollState.PENDING)
        return None

    def interrupt(self, ref: str | None, reply_to: ActorAddress) -> list[Effect]:
        """End the running turn (or only the one with ``ref``); answer ``reply_to``.

        ``ref`` guards against interrupting the wrong turn: a caller that saw its turn end
        and another start must not end the newer one. The interrupted turn's caller gets
        ``TurnInterrupted``; the worker gets ``CancelTurn`` and may take a while to stop,
        which is the shell's concern: the machine moves on to its next work at once.
        """
        current = self.current
        if current is None or (ref is not None and current.request.ref != ref):
            detail = "no turn is running" if current is None else "that ref is not running"
            missing = RequestNotFound(f"cannot interrupt: {detail}", agent=self.name, ref=ref)
            self._effects.append(Reply(reply_to, Failure(missing, ref)))
            return self._flush()
        self._effects.append(Reply(reply_to, Accepted(current.request.ref)))
        self._emit("turn.interrupted", {}, {"ref": current.request.ref})
        error = TurnInterrupted(
            "the turn was interrupted", agent=self.name, ref=current.request.ref
        )
        self._fail_current(error, cancel_reason="interrupted")
        return self._flush()

    def cancel(self, ref: str, reply_to: ActorAddress) -> list[Effect]:
        """Remove the queued tell ``ref`` before it runs; answer ``reply_to``.

        Only a queued tell can be cancelled: an ask has a caller waiting who may interrupt,
        and a running turn is interrupted, not cancelled. The refusal says which case it is.
        """
        for request in self.mailbox:
            if request.ref == ref and request.origin is Origin.TELL:
                self.mailbox.remove(request)
                self.mailbox_bytes -= request.size
                error = TurnCancelled("the queued tell was cancelled", agent=self.name, ref=ref)
                self._emit("turn.cancelled", {}, {"ref": ref, "origin": request.origin.value})
                self._answer(request, error)
                self._effects.append(Reply(reply_to, Accepted(ref)))
                return self._flush()
        if self.current is not None and self.current.request.ref == ref:
            detail = "it is running; use interrupt"
        elif ref in self.results:
            detail = "it has already finished"
        else:
            detail = "no queued tell has that ref"
        missing = RequestNotFound(f"cannot cancel: {detail}", agent=self.name, ref=ref)
        self._effects.append(Reply(reply_to, Failure(missing, ref)))
        return self._flush()

    def halt(self, reply_to: ActorAddress) -> list[Effect]:
        """Halt now when idle, or once the running turn ends.

        A halt from outside never cuts a turn short (use ``interrupt`` for that); queued
        work stays queued until ``resume``. Answered ``Accepted(None)`` at once.
        """
        if self.phase is Phase.PROCESSING:
            self.halt_pending = True
        else:
            self._transition_to_halted()
        self._effects.append(Reply(reply_to, Accepted(None)))
        return self._flush()

    def resume(self, reply_to: ActorAddress) -> list[Effect]:
        """Clear the halted flag (or a pending halt) and drain the queue."""
        self.halt_pending = False
        if self.halted:
            self.halted = False
            self._emit("resumed", {}, {})
        self._effects.append(Reply(reply_to, Accepted(None)))
        self._process_next()
        return self._flush()

    # ================================================================== inputs: the turn

    def stream_event(self, turn_id: int, event: Event) -> list[Effect]:
        """Record a streamed event of turn ``turn_id`` and show it to ``handle_stream_event``.

        Events are kept to build the turn's ``Response`` at its end. A raising
        ``handle_stream_event`` fails the turn with ``CallbackError`` (and cancels it at the
        worker): an implementation that cannot observe its turn must not go on unaware.
        """
        current = self.current
        if current is None or current.turn_id != turn_id:
            return self._flush()  # a late event of a turn that already ended
        current.events.append(event)
        if event.kind == EventKind.RETRY:
            self.counters.retries += 1
        ok, _ = self._call("handle_stream_event", self.impl.handle_stream_event, event)
        if not ok:
            error = CallbackError(
                "handle_stream_event raised",
                agent=self.name,
                ref=current.request.ref,
                callback="handle_stream_event",
            )
            self._fail_current(error, cancel_reason="callback_error")
        return self._flush()

    def turn_succeeded(self, turn_id: int, duration_ms: float) -> list[Effect]:
        """Turn ``turn_id`` ended with a ``result`` event (already streamed in).

        A stale ``turn_id`` (the turn was interrupted or timed out meanwhile) is ignored: its
        caller has been answered already. Otherwise the order of the module docstring runs:
        decide, ``post_turn``, halt, drain notifications, reply, next work.
        """
        current = self.current
        if current is None or current.turn_id != turn_id:
            return self._flush()
        request = current.request
        response = Response.from_events(
            current.events, duration_ms=duration_ms, prompt=current.prompt, ref=request.ref
        )
        self.counters.turns += 1
        if response.usage is not None:
            self.counters.usage = self.counters.usage + response.usage
        self._end_turn()
        self._emit(
            "prompt.stop",
            {"duration_ms": duration_ms},
            {"ref": request.ref, "origin": request.origin.value, "usage": response.usage},
        )
        self._emit("turn.stop", {"duration_ms": duration_ms}, self._turn_meta(request))
        decision_ok, directive = self._decide(
            "handle_response", self.impl.handle_response, request.ref, response, ref=request.ref
        )
        outcome: Response | GenAgentError = response
        if not decision_ok:
            outcome = directive  # the CallbackError
            directive = None
        post_error = self._post_turn(request, outcome)
        if post_error is not None and isinstance(outcome, Response):
            outcome = post_error
        self._finish(request, outcome, directive, retry_allowed=False)
        return self._flush()

    def turn_failed(self, turn_id: int, error: GenAgentError) -> list[Effect]:
        """Turn ``turn_id`` ended with an error from the worker or the backend."""
        current = self.current
        if current is None or current.turn_id != turn_id:
            return self._flush()
        self._fail_current(error.with_context(agent=self.name, ref=current.request.ref))
        return self._flush()

    def delayed_due(self, ref: str) -> list[Effect]:
        """A delayed self-chain or retry is due: run it next (ahead of the mailbox).

        It takes the self-chain slot if that is free, else the head of the mailbox: a
        chained prompt that waited out a back-off must not fall behind prompts that
        arrived during the wait. A stopped agent ignores it (its caller was answered).
        """
        request = self.delayed.pop(ref, None)
        if request is None or self.stopped:
            return self._flush()
        if self.self_chain is None:
            self.self_chain = request
        else:
            self.mailbox.appendleft(request)
            self.mailbox_bytes += request.size
        self._process_next()
        return self._flush()

    def watchdog_fired(self, turn_id: int) -> list[Effect]:
        """The watchdog of turn ``turn_id`` expired (ignored when that turn already ended).

        The turn fails with ``TurnTimeout`` and is cancelled at the worker; ``handle_error``
        decides what follows, as for any failed turn.
        """
        current = self.current
        if current is None or current.turn_id != turn_id:
            return self._flush()
        seconds = self.limits.watchdog
        error = TurnTimeout(
            f"the turn exceeded the watchdog of {seconds}s",
            agent=self.name,
            ref=current.request.ref,
        )
        self._fail_current(error, cancel_reason="timeout")
        return self._flush()

    def stop(self, reason: str) -> list[Effect]:
        """Answer every active and queued request with ``AgentStopped``; run terminate_agent.

        Idempotent. Nobody may be left waiting on a stopped agent: the running turn, the
        self-chain, the delayed prompts and the mailbox are all answered here, and the
        buffered notifications (which have no caller waiting) are dropped with a warning.
        """
        if self.stopped:
            return self._flush()
        self.stopped = True
        error = AgentStopped(f"the agent stopped ({reason}) before this request finished")
        if self.current is not None:
            current = self.current
            self._effects.append(CancelTurn(current.turn_id, "stopped"))
            self._end_turn()
            self._answer(
                current.request, error.with_context(agent=self.name, ref=current.request.ref)
            )
        queued = ([self.self_chain] if self.self_chain else []) + list(self.delayed.values())
        queued += list(self.mailbox)
        self.self_chain = None
        self.delayed.clear()
        self.mailbox.clear()
        self.mailbox_bytes = 0
        for request in queued:
            self._answer(request, error.with_context(agent=self.name, ref=request.ref))
        if self.pending:
            _log.warning(
                "agent %r stopped with %d buffered notification(s) unhandled",
                self.name,
                len(self.pending),
            )
            self.pending.clear()
        self._call("terminate_agent", self.impl.terminate_agent, reason)
        self._emit("terminated", {}, {"reason": reason})
        return self._flush()

    # ================================================================== durability

    def snapshot(self) -> MachineSnapshot:
        """Return the machine's state as picklable data (for a durable agent's store).

        Everything a restarted agent needs to carry on: halted flags, the mailbox, the
        self-chain slot, buffered notifications, the in-flight request, recently answered
        refs and counters. Tell results are persisted separately (``new_results``).
        """
        current = self.current
        return MachineSnapshot(
            halted=self.halted,
            halt_pending=self.halt_pending,
            mailbox=tuple(self.mailbox),
            self_chain=self.self_chain,
            delayed=tuple(self.delayed.values()),
            pending=tuple(self.pending),
            in_flight=(current.request, current.prompt) if current else None,
            answered=tuple(self.answered),
            counters=self.counters,
        )

    def restore(
        self,
        snapshot: MachineSnapshot,
        results: list[PollResult],
        *,
        callers_gone: bool = False,
    ) -> list[Effect]:
        """Load a snapshot into this fresh machine and carry on after a restart.

        The in-flight request is never re-run: its caller gets ``AgentRestarted`` and
        ``handle_error`` sees it (a ``Prompt`` it returns runs as an independent
        follow-up). Then queued work continues, self-chain first.

        With ``callers_gone`` (the snapshot was written by a previous boot of the whole
        system, so every caller waiting then went with it) queued asks are dropped, not run:
        nobody could receive their answers. Each is reported (``request.dropped`` telemetry
        and a log line) and forgotten, so a caller that did survive and sends the same ref
        again has it run then. Tells keep running (their results are polled), without the
        completion notices nobody can receive; nothing is sent to a gone caller.
        """
        self.halted = snapshot.halted
        self.halt_pending = snapshot.halt_pending
        queued = [*snapshot.delayed, *snapshot.mailbox]
        if callers_gone:
            queued = [r for r in queued if not self._drop_orphan(r)]
        self.mailbox = deque(queued)
        self.mailbox_bytes = sum(r.size for r in self.mailbox)
        self.self_chain = snapshot.self_chain
        if callers_gone and self.self_chain is not None and self._drop_orphan(self.self_chain):
            self.self_chain = None
        self.pending = deque(snapshot.pending)
        self.answered.extend(snapshot.answered)
        self.counters = snapshot.counters
        for result in results:
            self.results[result.ref] = result
        in_flight = snapshot.in_flight
        if in_flight is not None:
            request, prompt = in_flight
            if callers_gone:
                request.reply_to = None  # handle_error still hears of it; the caller is gone
            self.current = _ActiveTurn(0, request, prompt, self.clock())
            self.phase = Phase.PROCESSING
            error = AgentRestarted(
                "the agent restarted while this turn was in flight; it was not re-run",
                agent=self.name,
                ref=request.ref,
            )
            self._fail_current(error)
        else:
            self._process_next()
        return self._flush()

    def _drop_orphan(self, request: Request) -> bool:
        """Whether ``request`` is an ask whose caller went with the previous system (dropped).

        A tell from then stays (its result is polled) but no longer notifies its sender.
        """
        if request.origin is not Origin.ASK:
            if request.origin is Origin.TELL:
                request.reply_to, request.completion = None, False
            return False
        _log.warning(
            "agent %r dropped the ask %s queued before the system restarted: its caller is "
            "gone, so it was not run",
            self.name,
            request.ref,
        )
        self._emit(
            "request.dropped",
            {},
            {**self._turn_meta(request), "reason": "caller_gone"},
        )
        return True

    # ================================================================== views

    @property
    def current_ref(self) -> str | None:
        """Ref of the running turn, if any."""
        return self.current.request.ref if self.current else None

    def status_fields(self) -> StatusFields:
        """The machine's part of an ``AgentStatus`` snapshot."""
        current = self.current
        usage = self.counters.usage
        return {
            "name": self.name,
            "state": self.phase.value,
            "halted": self.halted,
            "halt_pending": self.halt_pending,
            "queued": len(self.mailbox),
            "queued_bytes": self.mailbox_bytes,
            "pending_notifications": len(self.pending),
            "self_chain_pending": self.self_chain is not None,
            "current_ref": current.request.ref if current else None,
            "current_origin": current.request.origin.value if current else None,
            "current_elapsed": (self.clock() - current.started_at) if current else None,
            "watchdog": self.limits.watchdog,
            "turns": self.counters.turns,
            "failures": self.counters.failures,
            "retries": self.counters.retries,
            "last_error": self.counters.last_error,
            "input_tokens": usage.total_input_tokens,
            "output_tokens": usage.output_tokens,
            "cost_usd": usage.cost_usd,
        }

    # ================================================================== internals: admission

    def _admit(self, request: Request) -> bool:
        """Take a new ask or tell: run it now, queue it, or refuse it. Returns whether taken.

        A ref already held, answered or in the result cache is a resend after a restart: it
        must not run twice, so it is only acknowledged again (a tell) or ignored (an ask,
        whose first copy gets or got the answer). Bounds are checked only when the request
        must wait: an idle agent takes any one prompt."""
        if self._holds(request.ref) or request.ref in self.results or request.ref in self.answered:
            return self._admit_duplicate(request)
        if self.stopped:
            self._reply_failure(
                request, AgentStopped("the agent is stopping", agent=self.name, ref=request.ref)
            )
            return False
        if self.phase is Phase.IDLE and not self.halted:
            self._dispatch(request)
            self._process_next()
            return True
        limit = self._over_limit(request)
        if limit is not None:
            bound = self.limits.max_queued if limit == "count" else self.limits.max_queued_bytes
            error = AgentOverloaded(
                f"the mailbox is full ({limit} limit {bound})",
                agent=self.name,
                ref=request.ref,
                limit=limit,
            )
            self._emit("turn.rejected", {}, {**self._turn_meta(request), "reason": "overloaded"})
            self._emit("input.rejected", {}, {"reason": "overloaded", "limit": limit})
            self._reply_failure(request, error)
            return False
        self._enqueue(request)
        return True

    def _admit_duplicate(self, request: Request) -> bool:
        """Answer a request whose ref is queued, running or answered already; never run it.

        A tell is acknowledged again (``Accepted`` is all a tell ever answers). An ask
        re-sent by its own caller (the client does so after a durable agent restarts) gets
        nothing now: the original's answer, still to come, is its one answer. Any other
        copy of an ask gets ``DuplicateRequest``.
        """
        if request.origin is Origin.TELL:
            return True
        original = self._held(request.ref)
        if original is not None and original.reply_to == request.reply_to:
            return False
        where = "answered already" if original is None else "queued or running"
        error = DuplicateRequest(
            f"a request with this ref is {where}; it runs once (send a new ref to run again)",
            agent=self.name,
            ref=request.ref,
        )
        self._reply_failure(request, error)
        return False

    def _held(self, ref: str) -> Request | None:
        """The held request (running, self-chained, delayed or queued) with ``ref``."""
        if self.current is not None and self.current.request.ref == ref:
            return self.current.request
        if self.self_chain is not None and self.self_chain.ref == ref:
            return self.self_chain
        if ref in self.delayed:
            return self.delayed[ref]
        return next((r for r in self.mailbox if r.ref == ref), None)

    def _enqueue(self, request: Request) -> None:
        """Append ``request`` to the mailbox (bounds already checked) and report the new depth."""
        self.mailbox.append(request)
        self.mailbox_bytes += request.size
        self._emit(
            "mailbox.queued",
            {"depth": len(self.mailbox)},
            {"ref": request.ref, "origin": request.origin.value},
        )

    def _deliver(self, kind: str, payload: object, sender: Sender, reply_to: Sender) -> None:
        """Deliver a notify or info: now when idle, buffered (bounded) during a turn.

        Buffered notifications are applied after the running turn is decided, to the state
        it leaves (upstream's later fix), and the notifier is answered at once either way."""
        if self.stopped:
            if reply_to is not None:
                stopped = AgentStopped("the agent is stopping", agent=self.name)
                self._effects.append(Reply(reply_to, Failure(stopped)))
            return
        if self.phase is Phase.PROCESSING:
            if len(self.pending) >= self.limits.max_pending_notifications:
                error = AgentOverloaded(
                    "too many buffered notifications", agent=self.name, limit="count"
                )
                self._emit("input.rejected", {}, {"reason": "overloaded", "kind": kind})
                if reply_to is not None:
                    self._effects.append(Reply(reply_to, Failure(error)))
                return
            self.pending.append((kind, payload, sender, None))
            if reply_to is not None:
                self._effects.append(Reply(reply_to, Accepted(None)))
            return
        failure = self._handle_notification(kind, payload, draining=False)
        if reply_to is not None:
            message = Failure(failure) if failure is not None else Accepted(None)
            self._effects.append(Reply(reply_to, message))

    def _handle_notification(
        self, kind: str, payload: object, *, draining: bool
    ) -> GenAgentError | None:
        """Run ``handle_event``/``handle_info`` and apply its directive; return its error, if any.

        A ``Prompt`` it returns runs now only when the agent is idle and not draining;
        otherwise it is queued within the mailbox bounds, so notifications can never
        overtake work already waiting."""
        callback_name = "handle_event" if kind == "event" else "handle_info"
        callback = self.impl.handle_event if kind == "event" else self.impl.handle_info
        ok, directive = self._decide(callback_name, callback, payload)
        if not ok:
            assert isinstance(directive, CallbackError)  # what _decide returns on failure
            return directive
        if isinstance(directive, Halt):
            self._transition_to_halted()
        elif isinstance(directive, Prompt):
            origin = Origin.EVENT if kind == "event" else Origin.INFO
            request = Request(directive.ref, origin, directive.text, size=_size(directive.text))
            if draining or self.halted or self.phase is Phase.PROCESSING:
                return self._enqueue_generated(request, callback_name)
            self._dispatch(request)
            self._process_next()
        return None

    def _enqueue_generated(self, request: Request, callback: str) -> GenAgentError | None:
        """Queue a prompt a callback produced, within the mailbox bounds."""
        limit = self._over_limit(request)
        if limit is None:
            self._enqueue(request)
            return None
        self._emit("input.rejected", {}, {"reason": "overloaded", "limit": limit, "kind": callback})
        _log.warning("agent %r: mailbox full, dropped the prompt %s returned", self.name, callback)
        return AgentOverloaded(
            f"the mailbox is full ({limit} limit); the prompt {callback} returned was dropped",
            agent=self.name,
            limit=limit,
        )

    def _over_limit(self, request: Request) -> str | None:
        """Which mailbox bound ``request`` would break (``"count"``, ``"bytes"``), or ``None``."""
        if len(self.mailbox) >= self.limits.max_queued:
            return "count"
        if self.mailbox_bytes + request.size > self.limits.max_queued_bytes:
            return "bytes"
        return None

    def _holds(self, ref: str) -> bool:
        """Whether a request with ``ref`` is running, self-chained, delayed or queued."""
        return self._held(ref) is not None

    # ================================================================== internals: turns

    def _dispatch(self, request: Request) -> None:
        """Ask ``pre_turn`` about ``request``, then start its turn or answer why not.

        ``pre_turn`` may rewrite the prompt, skip it or halt the agent; a bad return or a
        raise is contained as ``CallbackError`` for the caller, and the agent keeps serving."""
        ok, rewritten = self._call("pre_turn", self.impl.pre_turn, request.prompt)
        if ok and isinstance(rewritten, str) and rewritten:
            self._start_turn(request, rewritten)
            return
        if ok and isinstance(rewritten, Skip):
            error: GenAgentError = TurnSkipped(
                "pre_turn skipped the prompt", agent=self.name, ref=request.ref
            )
        elif ok and isinstance(rewritten, Halt):
            error = TurnHalted("pre_turn halted the agent", agent=self.name, ref=request.ref)
        else:
            detail = (
                "raised" if not ok else f"returned {type(rewritten).__name__}, not str/Skip/Halt"
            )
            error = CallbackError(
                f"pre_turn {detail}", agent=self.name, ref=request.ref, callback="pre_turn"
            )
            if ok:
                self._log_callback_failure("pre_turn", detail)
        self._emit("turn.rejected", {}, {**self._turn_meta(request), "reason": error.reason_kind})
        self._answer(request, error)
        if isinstance(rewritten, Halt):
            self._transition_to_halted()
        elif request.origin not in (Origin.ASK, Origin.TELL):
            self._refused_generated(request, error)

    def _refused_generated(self, request: Request, error: GenAgentError) -> None:
        """Tell ``handle_error`` that ``pre_turn`` refused a prompt nobody waits for.

        A ``Prompt`` it returns joins the mailbox tail (not the self-chain slot), so a
        ``pre_turn`` that keeps refusing cannot spin the agent without letting other work
        run; after :data:`_MAX_REFUSALS` refusals in a row the agent halts.
        """
        self._refusals += 1
        if self._refusals > _MAX_REFUSALS:
            _log.error(
                "agent %r: pre_turn refused %d prompts in a row; halting", self.name, self._refusals
            )
            self._transition_to_halted()
            return
        ok, directive = self._decide(
            "handle_error", self.impl.handle_error, request.ref, error, ref=request.ref
        )
        if ok and isinstance(directive, Prompt):
            chained = Request(
                directive.ref, Origin.SELF_CHAIN, directive.text, size=_size(directive.text)
            )
            self._enqueue_generated(chained, "handle_error")
        elif ok and isinstance(directive, Halt):
            self._transition_to_halted()

    def _start_turn(self, request: Request, prompt: str) -> None:
        """Enter ``processing`` and emit ``StartTurn`` (and the watchdog) for ``prompt``."""
        self._refusals = 0
        turn_id = self._next_turn_id
        self._next_turn_id += 1
        self.current = _ActiveTurn(turn_id, request, prompt, self.clock())
        previous = self.phase
        self.phase = Phase.PROCESSING
        self._emit("state.changed", {}, {"from": previous.value, "to": Phase.PROCESSING.value})
        self._effects.append(StartTurn(turn_id, request.ref, prompt))
        if self.limits.watchdog is not None:
            self._effects.append(ArmWatchdog(turn_id, self.limits.watchdog))
        self._emit(
            "prompt.start",
            {"system_time": time.time()},
            {
                "ref": request.ref,
                "prompt": prompt,
                "original_prompt": request.prompt,
                "rewritten": prompt != request.prompt,
                "origin": request.origin.value,
                "attempt": request.attempt,
            },
        )
        self._emit("turn.start", {"system_time": time.time()}, self._turn_meta(request))

    def _end_turn(self) -> None:
        """Leave ``processing``: no turn is current any more."""
        self.current = None
        self.phase = Phase.IDLE
        self._emit("state.changed", {}, {"from": Phase.PROCESSING.value, "to": Phase.IDLE.value})

    def _fail_current(self, error: GenAgentError, *, cancel_reason: str | None = None) -> None:
        """End the running turn with ``error`` and apply the turn-end order to it.

        ``handle_error`` decides (a ``Prompt`` it returns retries an ask or tell under the
        same ref, unless the turn was interrupted or the agent restarted), then
        ``post_turn`` runs, then :meth:`_finish`. With ``cancel_reason`` the worker is told to
        stop the backend call first."""
        current = self.current
        assert current is not None
        request = current.request
        duration_ms = (self.clock() - current.started_at) * 1000.0
        if cancel_reason is not None:
            self._effects.append(CancelTurn(current.turn_id, cancel_reason))
        self.counters.failures += 1
        self.counters.last_error = f"{type(error).__name__}: {error}"[:300]
        self._end_turn()
        self._emit(
            "prompt.error",
            {"system_time": time.time()},
            {"ref": request.ref, "reason": error.reason_kind, "error": str(error)},
        )
        self._emit(
            "turn.error",
            {"duration_ms": duration_ms},
            {**self._turn_meta(request), "reason": error.reason_kind},
        )
        decision_ok, directive = self._decide(
            "handle_error", self.impl.handle_error, request.ref, error, ref=request.ref
        )
        if not decision_ok:
            directive = None
        self._post_turn(request, error)
        retry_allowed = (
            not isinstance(error, TurnInterrupted) and error.reason_kind != "agent_restarted"
        )
        self._finish(request, error, directive, retry_allowed=retry_allowed)

    def _post_turn(
        self, request: Request, outcome: Response | GenAgentError
    ) -> GenAgentError | None:
        """Run ``post_turn``; a raise is returned as ``CallbackError``, never propagated."""
        ok, _value = self._call("post_turn", self.impl.post_turn, request.ref, outcome)
        if ok:
            return None
        return CallbackError(
            "post_turn raised", agent=self.name, ref=request.ref, callback="post_turn"
        )

    def _finish(
        self,
        request: Request,
        outcome: Response | GenAgentError,
        directive: Prompt | Halt | None,
        *,
        retry_allowed: bool,
    ) -> None:
        """Apply the decision, drain notifications, answer the caller, take the next work.

        A ``Prompt`` directive after a failed ask or tell (when ``retry_allowed``) is a retry:
        the same request, its ``attempt`` counted, its caller answered only by the final
        outcome. Any other ``Prompt`` becomes a self-chain, into the slot that runs before
        the mailbox, or onto a timer when it has a ``delay``. Notifications buffered during
        the turn run after the decision and before the reply, so a caller acting on its answer
        finds them applied; the reply goes before the next turn's start in the effects.
        """
        retried = False
        if isinstance(directive, Prompt):
            if (
                retry_allowed
                and isinstance(outcome, GenAgentError)
                and request.origin in (Origin.ASK, Origin.TELL)
            ):
                request.prompt = directive.text
                request.attempt += 1
                chained = request
                retried = True
            else:
                chained = Request(directive.ref, Origin.SELF_CHAIN, directive.text)
            if directive.delay > 0:
                self.delayed[chained.ref] = chained
                self._effects.append(ArmDelayed(chained.ref, float(directive.delay)))
            else:
                self.self_chain = chained
        if isinstance(directive, Halt) or (self.halt_pending and not self.halted):
            self.halt_pending = False
            self._transition_to_halted()
        while self.pending:
            kind, payload, _sender, _to = self.pending.popleft()
            self._handle_notification(kind, payload, draining=True)
        if not retried:
            self._answer(request, outcome)
        self._process_next()

    def _process_next(self) -> None:
        """Start the next work while idle: the self-chain slot first, then the mailbox.

        A loop, because ``pre_turn`` may refuse a prompt without starting a turn, leaving the
        agent idle for the next one."""
        while self.phase is Phase.IDLE and not self.halted and not self.stopped:
            if self.self_chain is not None:
                request, self.self_chain = self.self_chain, None
            elif self.mailbox:
                request = self.mailbox.popleft()
                self.mailbox_bytes -= request.size
            else:
                return
            self._dispatch(request)

    def _transition_to_halted(self) -> None:
        """Halt once: ``post_run`` runs once per transition to halted, as upstream fixed it."""
        if self.halted or self.stopped:
            return
        self.halted = True
        self._call("post_run", self.impl.post_run)
        self._emit("halted", {"system_time": time.time()}, {})

    # ================================================================== internals: answers

    def _answer(self, request: Request, outcome: Response | GenAgentError) -> None:
        """Deliver the final outcome of ``request`` to whoever waits for it (exactly once).

        An ask's caller gets the ``Response`` or a ``Failure``; a tell's outcome is cached for
        ``poll`` and, with ``completion``, sent as ``TellCompleted``; a prompt generated by a
        callback has nobody waiting. The ref joins ``answered``, so a copy of the request
        resent after a restart is recognised and not run again.
        """
        if request.answered:
            return
        request.answered = True
        if request.origin in (Origin.ASK, Origin.TELL):
            self.answered.append(request.ref)
        if request.origin is Origin.ASK:
            message = outcome if isinstance(outcome, Response) else Failure(outcome, request.ref)
            self._effects.append(Reply(request.reply_to, message))
        elif request.origin is Origin.TELL:
            if isinstance(outcome, Response):
                result = PollResult(request.ref, PollState.COMPLETED, response=outcome)
            else:
                result = PollResult(request.ref, PollState.FAILED, error=outcome)
            self._store_result(result)
            if request.completion and request.reply_to is not None:
                done = TellCompleted(
                    self.name,
                    request.ref,
                    response=outcome if isinstance(outcome, Response) else None,
                    error=outcome if isinstance(outcome, GenAgentError) else None,
                )
                self._effects.append(Reply(request.reply_to, done))

    def _reply_failure(self, request: Request, error: GenAgentError) -> None:
        """Reject ``request`` at admission: the caller hears it now, nothing is cached."""
        request.answered = True
        self._effects.append(Reply(request.reply_to, Failure(error, request.ref)))

    def _store_result(self, result: PollResult) -> None:
        """Keep a tell's outcome for ``poll``, evicting the oldest beyond ``max_tell_results``.

        ``new_results`` lists what the durable record has not yet written, so each result is stored
        once, at the next boundary.
        """
        limit = self.limits.max_tell_results
        if limit <= 0:
            return
        self.results[result.ref] = result
        self.new_results.append(result)
        while len(self.results) > limit:
            self.results.popitem(last=False)

    # ================================================================== internals: callbacks

    def _call(self, callback: str, fn: Callback, *args: object) -> tuple[bool, UserTerm]:
        """Run a user callback; contain any exception (logged with the agent's name).

        A raising callback must not take the agent down with it (the agent keeps serving
        its other callers): the failure is counted, logged with the agent's name, emitted
        as ``callback.error``, and returned so the caller decides what it means for the turn.
        """
        try:
            return True, fn(*args)
        except Exception as exc:
            self.counters.callback_failures += 1
            self._log_callback_failure(callback, f"raised {type(exc).__name__}: {exc}", exc)
            self._emit("callback.error", {}, {"callback": callback, "error": type(exc).__name__})
            return False, exc

    def _decide(
        self, callback: str, fn: Callback, *args: object, ref: str | None = None
    ) -> tuple[bool, UserTerm]:
        """Run a decision callback and validate its directive.

        Returns ``(True, directive)`` or ``(False, CallbackError)``.
        """
        ok, value = self._call(callback, fn, *args)
        if not ok:
            return False, CallbackError(
                f"{callback} raised", agent=self.name, ref=ref, callback=callback
            )
        if value is None or isinstance(value, Halt):
            return True, value
        if (
            isinstance(value, Prompt)
            and isinstance(value.text, str)
            and value.text
            and isinstance(value.delay, int | float)
            and not isinstance(value.delay, bool)
            and 0 <= value.delay < float("inf")
        ):
            return True, value
        detail = f"returned {value!r:.80}; expected None, Prompt(text) or Halt()"
        self._log_callback_failure(callback, detail)
        self.counters.callback_failures += 1
        return False, CallbackError(
            f"{callback} {detail}", agent=self.name, ref=ref, callback=callback
        )

    def _log_callback_failure(
        self, callback: str, detail: str, exc: BaseException | None = None
    ) -> None:
        """Log a failed callback with the agent, class and method names (and the traceback)."""
        _log.error(
            "agent %r: callback %s.%s %s",
            self.name,
            type(self.impl).__name__,
            callback,
            detail,
            exc_info=exc,
        )

    # ================================================================== internals: output

    def _turn_meta(self, request: Request) -> Metadata:
        """The telemetry metadata every ``turn.*`` event of ``request`` carries."""
        return {"ref": request.ref, "origin": request.origin.value, "attempt": request.attempt}

    def _emit(self, name: str, measurements: dict[str, float], metadata: Metadata) -> None:
        """Queue a telemetry event as an ``Emit`` effect, tagged with the agent's name."""
        self._effects.append(Emit(name, measurements, {"agent": self.name, **metadata}))

    def _flush(self) -> list[Effect]:
        """Hand over the effects gathered by this input, in order, and start a new list."""
        effects, self._effects = self._effects, []
        return effects


#: Consecutive refusals of generated prompts after which the agent halts (no spinning).
_MAX_REFUSALS = 100


def _size(prompt: str) -> int:
    """A prompt's size in UTF-8 bytes; lone surrogates (which JSON can carry) count instead of
    raising, so a strange prompt is measured against the bound, not lost.
    """
    return len(prompt.encode("utf-8", "surrogatepass"))
