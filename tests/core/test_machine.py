"""The agent's pure state machine (``AgentMachine``), driven directly: no actor system.

Every test feeds inputs to the machine and asserts on two things only:

* the *effects* it returns (``Reply``, ``StartTurn``, ``CancelTurn``, ``ArmWatchdog``,
  ``Emit``), in their exact order;
* the *callbacks* it made on the ``GenAgent`` implementation, in their exact order
  (recorded by :class:`Recorder`, whose return values each test scripts).

The expected behaviour is the specification (``gen_agent.md`` §1, §2, §4, §9 with the later
upstream fixes that ARCHITECTURE.md "Semantics (decided)" takes), not what the machine
happens to do. Where the specification is silent the tests pin the machine's choice and say
so in a comment starting with "Spec silent:".
"""

from __future__ import annotations

import logging
import pickle
import string
from collections import Counter, defaultdict, deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Self, TypeVar

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from genagent_thespian import AgentRestarted, GenAgent
from genagent_thespian._actors.telemetry import EVENT_NAMES
from genagent_thespian._core.errors import (
    AgentOverloaded,
    AgentStopped,
    BackendError,
    CallbackError,
    GenAgentError,
    RequestNotFound,
    TurnCancelled,
    TurnHalted,
    TurnInterrupted,
    TurnSkipped,
    TurnTimeout,
)
from genagent_thespian._core.machine import (
    AgentMachine,
    ArmWatchdog,
    CancelTurn,
    Effect,
    Emit,
    MachineLimits,
    MachineSnapshot,
    Phase,
    Reply,
    StartTurn,
)
from genagent_thespian._core.turn import Event, EventKind, Response, Usage
from genagent_thespian.messages import (
    Accepted,
    Failure,
    Halt,
    PollResult,
    PollState,
    Prompt,
    Skip,
    TellCompleted,
)

AGENT = "agent-under-test"
E = TypeVar("E", bound=GenAgentError)

# ============================================================================ test doubles


@dataclass(frozen=True)
class Raise:
    """A scripted callback outcome: raise a fresh ``error_type(message)`` instead of returning."""

    error_type: type[Exception] = RuntimeError
    message: str = "callback bug"


class Recorder(GenAgent):
    """A GenAgent that records every callback call in order and returns scripted values.

    ``script(callback, v1, v2, ...)`` queues return values for the next calls of
    ``callback``; ``always(callback, v)`` sets the value used once the queue is empty. A
    value may be a :class:`Raise`, or a plain callable that is called with the callback's
    arguments and whose result is returned.
    """

    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []
        self._script: dict[str, deque[Any]] = defaultdict(deque)
        self._always: dict[str, Any] = {}

    # -- configuration

    def script(self, callback: str, *values: Any) -> Self:
        self._script[callback].extend(values)
        return self

    def always(self, callback: str, value: Any) -> Self:
        self._always[callback] = value
        return self

    def names(self) -> list[str]:
        """The callback names in call order (without their arguments)."""
        return [call[0] for call in self.calls]

    def calls_of(self, callback: str) -> list[tuple[Any, ...]]:
        return [call[1:] for call in self.calls if call[0] == callback]

    def _outcome(self, callback: str, default: Any, *args: Any) -> Any:
        self.calls.append((callback, *args))
        queue = self._script[callback]
        value = queue.popleft() if queue else self._always.get(callback, default)
        if isinstance(value, Raise):
            raise value.error_type(value.message)
        if callable(value):
            return value(*args)
        return value

    # -- the callbacks

    def handle_response(self, ref: str, response: Response) -> Any:
        return self._outcome("handle_response", None, ref, response)

    def handle_error(self, ref: str, error: Exception) -> Any:
        return self._outcome("handle_error", None, ref, error)

    def handle_event(self, event: Any) -> Any:
        return self._outcome("handle_event", None, event)

    def handle_info(self, message: Any) -> Any:
        return self._outcome("handle_info", None, message)

    def handle_stream_event(self, event: Event) -> Any:
        return self._outcome("handle_stream_event", None, event)

    def terminate_agent(self, reason: str) -> Any:
        return self._outcome("terminate_agent", None, reason)

    def pre_turn(self, prompt: str) -> Any:
        return self._outcome("pre_turn", lambda p: p, prompt)

    def post_turn(self, ref: str, outcome: Any) -> Any:
        return self._outcome("post_turn", None, ref, outcome)

    def post_run(self) -> Any:
        return self._outcome("post_run", None)


class FakeClock:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def fresh_prompt(text: str) -> Callable[..., Prompt]:
    """A scripted value that builds a new ``Prompt`` (with a fresh ref) on every call."""
    return lambda *_args: Prompt(text)


class Harness:
    """One machine, its Recorder and fake clock, and every effect it returned so far.

    Names are readable: ``ask("A")`` sends prompt ``"A"`` under ref ``"ref-A"`` for caller
    ``"caller-A"``; ``tell("B")`` uses ref ``"ref-B"`` and sender ``"teller-B"``.
    """

    def __init__(self, agent: Recorder | None = None, **limits: Any) -> None:
        self.agent = agent or Recorder()
        self.clock = FakeClock()
        self.machine = AgentMachine(
            name=AGENT, impl=self.agent, limits=MachineLimits(**limits), clock=self.clock
        )
        self.log: list[Effect] = []
        self.feed(self.machine.start())

    def feed(self, effects: list[Effect]) -> list[Effect]:
        self.log.extend(effects)
        return effects

    # -- requests

    def ask(self, name: str, prompt: str | None = None) -> list[Effect]:
        return self.feed(self.machine.ask(f"ref-{name}", prompt or name, f"caller-{name}"))

    def tell(
        self, name: str, prompt: str | None = None, *, completion: bool = False
    ) -> list[Effect]:
        return self.feed(
            self.machine.tell(
                f"ref-{name}", prompt or name, f"teller-{name}", completion=completion
            )
        )

    def notify(self, event: Any, reply_to: Any = "notifier") -> list[Effect]:
        return self.feed(self.machine.notify(event, sender="peer", reply_to=reply_to))

    def info(self, message: Any) -> list[Effect]:
        return self.feed(self.machine.info(message))

    def poll(self, name: str) -> PollResult | None:
        return self.machine.poll(f"ref-{name}")

    def interrupt(self, ref: str | None = None) -> list[Effect]:
        return self.feed(self.machine.interrupt(ref, "interrupter"))

    def cancel(self, ref: str) -> list[Effect]:
        return self.feed(self.machine.cancel(ref, "canceller"))

    def halt(self) -> list[Effect]:
        return self.feed(self.machine.halt("halter"))

    def resume(self) -> list[Effect]:
        return self.feed(self.machine.resume("resumer"))

    def stop(self, reason: str = "stop") -> list[Effect]:
        return self.feed(self.machine.stop(reason))

    # -- the running turn

    @property
    def turn(self) -> StartTurn:
        """The most recently started turn."""
        started = [e for e in self.log if isinstance(e, StartTurn)]
        assert started, "no turn was started"
        return started[-1]

    def stream(self, event: Event, turn: StartTurn | None = None) -> list[Effect]:
        return self.feed(self.machine.stream_event((turn or self.turn).turn_id, event))

    def succeed(self, text: str = "done", turn: StartTurn | None = None) -> list[Effect]:
        """End the turn with a ``result`` event (streamed first, as the worker does)."""
        turn = turn or self.turn
        effects = self.stream(Event.result(text), turn)
        return effects + self.feed(self.machine.turn_succeeded(turn.turn_id, 12.0))

    def fail(
        self, error: GenAgentError | None = None, turn: StartTurn | None = None
    ) -> list[Effect]:
        error = error or BackendError("provider down", kind="server_error")
        return self.feed(self.machine.turn_failed((turn or self.turn).turn_id, error))

    def watchdog(self, turn: StartTurn | None = None) -> list[Effect]:
        return self.feed(self.machine.watchdog_fired((turn or self.turn).turn_id))

    # -- views over the whole log

    def replies_to(self, to: Any) -> list[Any]:
        return [e.message for e in self.log if isinstance(e, Reply) and e.to == to]

    def started_prompts(self) -> list[str]:
        return [e.prompt for e in self.log if isinstance(e, StartTurn)]

    def emitted(self, name: str) -> list[Emit]:
        return [e for e in self.log if isinstance(e, Emit) and e.name == name]


# ============================================================================ effect helpers


def describe(message: Any) -> Any:
    """A short, comparable description of a reply message."""
    if isinstance(message, Response):
        return ("Response", message.text)
    if isinstance(message, Failure):
        return ("Failure", type(message.error).__name__)
    if isinstance(message, Accepted):
        return ("Accepted", message.ref)
    if isinstance(message, TellCompleted):
        outcome = message.response.text if message.response else type(message.error).__name__
        return ("TellCompleted", outcome)
    return message


def summary(effects: Iterable[Effect]) -> list[tuple[Any, ...]]:
    """Effects as short tuples, so a test can assert their exact order."""
    out: list[tuple[Any, ...]] = []
    for effect in effects:
        if isinstance(effect, Reply):
            out.append(("reply", effect.to, describe(effect.message)))
        elif isinstance(effect, StartTurn):
            out.append(("start", effect.prompt))
        elif isinstance(effect, CancelTurn):
            out.append(("cancel", effect.reason))
        elif isinstance(effect, ArmWatchdog):
            out.append(("watchdog", effect.seconds))
        elif isinstance(effect, Emit):
            out.append(("emit", effect.name))
        else:  # pragma: no cover - the Effect union has no other member
            raise AssertionError(f"unknown effect {effect!r}")
    return out


def without_emits(effects: Iterable[Effect]) -> list[tuple[Any, ...]]:
    return [s for s in summary(effects) if s[0] != "emit"]


def replies(effects: Iterable[Effect]) -> list[Reply]:
    return [e for e in effects if isinstance(e, Reply)]


def starts(effects: Iterable[Effect]) -> list[StartTurn]:
    return [e for e in effects if isinstance(e, StartTurn)]


def emits(effects: Iterable[Effect], name: str) -> list[Emit]:
    return [e for e in effects if isinstance(e, Emit) and e.name == name]


def only_reply(effects: Iterable[Effect], to: Any) -> Any:
    """The single message addressed to ``to`` in ``effects``."""
    messages = [e.message for e in replies(effects) if e.to == to]
    assert len(messages) == 1, f"expected one reply to {to!r}, got {messages!r}"
    return messages[0]


def failure_of(message: Any, error_type: type[E]) -> E:
    assert isinstance(message, Failure), f"expected a Failure, got {message!r}"
    error = message.error
    assert isinstance(error, error_type) and type(error) is error_type, f"{message!r}"
    return error


def dispatched(prompt: str, watchdog: float | None = 600.0) -> list[tuple[Any, ...]]:
    """The summarized effects of dispatching ``prompt``, in order (600 s is the default)."""
    armed = [("watchdog", watchdog)] if watchdog is not None else []
    return [
        ("emit", "state.changed"),
        ("start", prompt),
        *armed,
        ("emit", "prompt.start"),
        ("emit", "turn.start"),
    ]


# The effects that open every finished turn, before its reply.
SUCCEEDED = [("emit", "state.changed"), ("emit", "prompt.stop"), ("emit", "turn.stop")]
FAILED = [("emit", "state.changed"), ("emit", "prompt.error"), ("emit", "turn.error")]
INTERRUPTED = [
    ("emit", "turn.interrupted"),
    ("cancel", "interrupted"),
    ("emit", "state.changed"),
    ("emit", "prompt.error"),
    ("emit", "turn.error"),
]


# ============================================================================ dispatch, FIFO


def test_start_announces_idle() -> None:
    h = Harness()
    assert [e.metadata for e in h.emitted("state.changed")] == [
        {"agent": AGENT, "from": None, "to": "idle"}
    ]
    assert h.machine.phase is Phase.IDLE


def test_ask_when_idle_dispatches_at_once() -> None:
    h = Harness()
    effects = h.ask("A")
    assert summary(effects) == dispatched("A")
    assert h.turn.ref == "ref-A"
    assert h.agent.calls == [("pre_turn", "A")]
    assert h.machine.phase is Phase.PROCESSING


def test_ask_is_answered_with_the_response_after_the_turn() -> None:
    h = Harness()
    h.ask("A", "what is up")
    effects = h.succeed("all good")
    assert summary(effects) == [*SUCCEEDED, ("reply", "caller-A", ("Response", "all good"))]
    response = only_reply(effects, "caller-A")
    assert response.ref == "ref-A"
    assert response.prompt == "what is up"
    assert [e.kind for e in response.events] == [EventKind.RESULT]
    assert h.machine.phase is Phase.IDLE


def test_queued_asks_run_and_are_answered_in_arrival_order() -> None:
    h = Harness()
    h.ask("A")
    assert summary(h.ask("B")) == [("emit", "mailbox.queued")]
    assert summary(h.ask("C")) == [("emit", "mailbox.queued")]
    assert [e.measurements["depth"] for e in h.emitted("mailbox.queued")] == [1, 2]

    assert summary(h.succeed("a")) == [
        *SUCCEEDED,
        ("reply", "caller-A", ("Response", "a")),
        *dispatched("B"),
    ]
    assert summary(h.succeed("b")) == [
        *SUCCEEDED,
        ("reply", "caller-B", ("Response", "b")),
        *dispatched("C"),
    ]
    assert summary(h.succeed("c")) == [*SUCCEEDED, ("reply", "caller-C", ("Response", "c"))]
    assert h.started_prompts() == ["A", "B", "C"]


def test_sync_backend_error_is_the_ask_callers_answer() -> None:
    h = Harness()
    h.ask("A")
    error = BackendError("rate limited", kind="rate_limited", retry_after=3.0)
    effects = h.fail(error)
    assert summary(effects) == [*FAILED, ("reply", "caller-A", ("Failure", "BackendError"))]
    answered = failure_of(only_reply(effects, "caller-A"), BackendError)
    assert (answered.kind, answered.retry_after) == ("rate_limited", 3.0)
    assert (answered.agent, answered.ref) == (AGENT, "ref-A")
    assert h.agent.calls_of("handle_error") == [("ref-A", answered)]


def test_status_counts_provider_retries_and_keeps_the_last_error_for_operators() -> None:
    h = Harness()
    assert (h.machine.status_fields()["retries"], h.machine.status_fields()["last_error"]) == (
        0,
        None,
    )
    h.ask("A")
    h.stream(Event(EventKind.RETRY, {"attempt": 1, "delay_ms": 500, "message": "overloaded"}))
    h.stream(Event(EventKind.RETRY, {"attempt": 2, "delay_ms": 1000, "message": "overloaded"}))
    h.fail(BackendError("still overloaded", kind="overloaded"))
    h.ask("B")
    h.succeed("fine")  # a later success keeps the last error: it is history, not state
    fields = h.machine.status_fields()
    assert fields["retries"] == 2 and fields["failures"] == 1
    last_error = fields["last_error"]
    assert last_error is not None and last_error.startswith("BackendError: still overloaded")


def test_counters_from_a_record_written_before_retries_existed_restore_with_defaults() -> None:
    import pickle

    from genagent_thespian._core.machine import _Counters

    old = _Counters.__new__(_Counters)
    old.__setstate__((None, {"turns": 4, "failures": 1, "callback_failures": 0, "usage": Usage()}))
    restored = pickle.loads(pickle.dumps(old))
    assert (restored.turns, restored.failures, restored.retries, restored.last_error) == (
        4,
        1,
        0,
        None,
    )


# ============================================================================ tell and poll


def test_tell_when_idle_is_accepted_and_dispatched() -> None:
    h = Harness()
    effects = h.tell("T")
    assert summary(effects) == [("reply", "teller-T", ("Accepted", "ref-T")), *dispatched("T")]


def test_tell_while_busy_is_accepted_and_queued() -> None:
    h = Harness()
    h.ask("A")
    effects = h.tell("T")
    assert summary(effects) == [
        ("reply", "teller-T", ("Accepted", "ref-T")),
        ("emit", "mailbox.queued"),
    ]


def test_poll_is_pending_while_queued_and_while_running() -> None:
    h = Harness()
    h.ask("A")
    h.tell("T")
    assert h.poll("T") == PollResult("ref-T", PollState.PENDING)
    h.succeed()
    assert h.turn.ref == "ref-T"
    assert h.poll("T") == PollResult("ref-T", PollState.PENDING)


def test_poll_completed_after_success() -> None:
    h = Harness()
    h.tell("T")
    effects = h.succeed("told")
    assert replies(effects) == []  # nobody waits for a tell's outcome
    result = h.poll("T")
    assert result is not None and result.state is PollState.COMPLETED and result.done
    assert result.response is not None and result.response.text == "told"
    assert result.error is None


def test_poll_failed_after_error() -> None:
    h = Harness()
    h.tell("T")
    h.fail(BackendError("nope", kind="invalid_request"))
    result = h.poll("T")
    assert result is not None and result.state is PollState.FAILED
    assert type(result.error) is BackendError and result.error.kind == "invalid_request"
    assert result.response is None


def test_poll_unknown_ref_is_none() -> None:
    h = Harness()
    assert h.machine.poll("never-issued") is None


def test_poll_of_a_finished_ask_is_none() -> None:
    h = Harness()
    h.ask("A")
    h.succeed()
    assert h.poll("A") is None


def test_results_are_kept_after_poll() -> None:
    h = Harness()
    h.tell("T")
    h.succeed("once")
    first = h.poll("T")
    assert first is not None and first.state is PollState.COMPLETED
    assert h.poll("T") == first
    assert h.poll("T") == first


def test_results_are_evicted_oldest_inserted_first_regardless_of_polls() -> None:
    h = Harness(max_tell_results=2)
    for name in ("T1", "T2"):
        h.tell(name)
        h.succeed(name)
    assert h.poll("T1") is not None  # reading T1 does not make it "recent"
    h.tell("T3")
    h.succeed("T3")
    assert h.poll("T1") is None
    assert [h.poll(n).response.text for n in ("T2", "T3")] == ["T2", "T3"]  # type: ignore[union-attr]


def test_max_tell_results_zero_keeps_no_result() -> None:
    h = Harness(max_tell_results=0)
    h.tell("T")
    assert h.poll("T") == PollResult("ref-T", PollState.PENDING)
    h.succeed()
    assert h.poll("T") is None


def test_tell_with_completion_sends_exactly_one_tell_completed() -> None:
    h = Harness()
    h.tell("T", completion=True)
    effects = h.succeed("fin")
    assert summary(replies(effects)) == [("reply", "teller-T", ("TellCompleted", "fin"))]
    done = only_reply(effects, "teller-T")
    assert (done.agent, done.ref, done.ok) == (AGENT, "ref-T", True)
    assert h.replies_to("teller-T") == [Accepted("ref-T"), done]


# ============================================================================ self-chain


def test_self_chain_runs_ahead_of_the_mailbox() -> None:
    agent = Recorder().script("handle_response", fresh_prompt("chained"))
    h = Harness(agent)
    h.ask("first")
    h.tell("queued-1")
    h.tell("queued-2")
    effects = h.succeed()
    assert summary(effects) == [
        *SUCCEEDED,
        ("reply", "caller-first", ("Response", "done")),
        *dispatched("chained"),
    ]
    h.succeed()
    h.succeed()
    h.succeed()
    assert h.started_prompts() == ["first", "chained", "queued-1", "queued-2"]


def test_self_chain_gets_its_own_ref_and_origin() -> None:
    agent = Recorder().script("handle_response", fresh_prompt("chained"))
    h = Harness(agent)
    h.ask("A")
    h.succeed()
    chained = h.turn
    assert chained.prompt == "chained" and chained.ref != "ref-A"
    start = h.emitted("prompt.start")[-1].metadata
    assert (start["ref"], start["origin"], start["attempt"]) == (chained.ref, "self_chain", 1)
    # Spec silent: §2.6 keeps results for tells only. While a self-chain runs, its ref polls
    # pending (upstream's poll checks the current request whatever its kind).
    assert h.machine.poll(chained.ref) == PollResult(chained.ref, PollState.PENDING)
    h.succeed()
    assert h.poll("A") is None and h.machine.poll(chained.ref) is None


# ============================================================================ halt and resume


def test_halt_directive_freezes_the_mailbox() -> None:
    agent = Recorder().script("handle_response", Halt())
    h = Harness(agent)
    h.ask("A")
    h.tell("T")
    effects = h.succeed()
    assert summary(effects) == [
        *SUCCEEDED,
        ("emit", "halted"),
        ("reply", "caller-A", ("Response", "done")),
    ]
    assert h.machine.halted and h.machine.phase is Phase.IDLE
    assert h.poll("T") == PollResult("ref-T", PollState.PENDING)
    assert h.machine.status_fields()["queued"] == 1


def test_requests_while_halted_are_queued_not_run() -> None:
    agent = Recorder().script("handle_response", Halt())
    h = Harness(agent)
    h.ask("A")
    h.succeed()
    assert summary(h.ask("B")) == [("emit", "mailbox.queued")]
    assert summary(h.tell("T")) == [
        ("reply", "teller-T", ("Accepted", "ref-T")),
        ("emit", "mailbox.queued"),
    ]
    assert h.machine.status_fields()["queued"] == 2


def test_resume_drains_self_chain_then_mailbox_in_order() -> None:
    agent = Recorder().script("handle_response", Halt())
    h = Harness(agent)
    h.ask("A")
    h.ask("B")
    h.tell("T")
    h.succeed()
    effects = h.resume()
    assert summary(effects) == [
        ("emit", "resumed"),
        ("reply", "resumer", ("Accepted", None)),
        *dispatched("B"),
    ]
    assert not h.machine.halted
    h.succeed()
    h.succeed()
    assert h.started_prompts() == ["A", "B", "T"]
    assert h.poll("T").state is PollState.COMPLETED  # type: ignore[union-attr]


def test_external_halt_when_idle_halts_at_once() -> None:
    h = Harness()
    effects = h.halt()
    assert summary(effects) == [("emit", "halted"), ("reply", "halter", ("Accepted", None))]
    assert h.agent.names() == ["post_run"]
    assert h.machine.halted


def test_post_run_runs_once_per_transition_to_halted() -> None:
    agent = Recorder().script("handle_response", Halt()).always("handle_event", Halt())
    h = Harness(agent)
    h.ask("A")
    h.succeed()
    assert h.agent.names().count("post_run") == 1

    # Halting again while already halted is not a transition: no post_run, no telemetry.
    assert summary(h.halt()) == [("reply", "halter", ("Accepted", None))]
    assert summary(h.notify("halt again")) == [
        ("emit", "event.received"),
        ("reply", "notifier", ("Accepted", None)),
    ]
    assert h.agent.names().count("post_run") == 1
    assert len(h.emitted("halted")) == 1

    h.resume()
    h.halt()
    assert h.agent.names().count("post_run") == 2
    assert len(h.emitted("halted")) == 2


def test_external_halt_while_processing_waits_for_the_turn_to_end() -> None:
    h = Harness()
    h.ask("A")
    h.ask("B")
    assert summary(h.halt()) == [("reply", "halter", ("Accepted", None))]
    assert not h.machine.halted and h.machine.halt_pending
    assert "post_run" not in h.agent.names()

    effects = h.succeed()
    assert summary(effects) == [
        *SUCCEEDED,
        ("emit", "halted"),
        ("reply", "caller-A", ("Response", "done")),
    ]
    assert h.machine.halted and not h.machine.halt_pending
    assert h.agent.names()[-3:] == ["handle_response", "post_turn", "post_run"]
    assert h.started_prompts() == ["A"]


def test_external_halt_and_a_halt_directive_in_the_same_turn_run_post_run_once() -> None:
    agent = Recorder().script("handle_response", Halt())
    h = Harness(agent)
    h.ask("A")
    h.halt()
    h.succeed()
    assert h.agent.names().count("post_run") == 1
    assert len(h.emitted("halted")) == 1


def test_resume_cancels_a_pending_halt() -> None:
    h = Harness()
    h.ask("A")
    h.ask("B")
    h.halt()
    assert summary(h.resume()) == [("reply", "resumer", ("Accepted", None))]
    assert not h.machine.halt_pending
    effects = h.succeed()
    assert summary(effects) == [
        *SUCCEEDED,
        ("reply", "caller-A", ("Response", "done")),
        *dispatched("B"),
    ]
    assert "post_run" not in h.agent.names()


def test_notifies_while_halted_are_handled_and_their_prompts_queue() -> None:
    agent = Recorder().always("handle_event", fresh_prompt("from-event"))
    h = Harness(agent)
    h.halt()
    effects = h.notify("e1")
    assert summary(effects) == [
        ("emit", "event.received"),
        ("emit", "mailbox.queued"),
        ("reply", "notifier", ("Accepted", None)),
    ]
    assert h.agent.calls[-1] == ("handle_event", "e1")
    assert h.machine.status_fields()["queued"] == 1
    assert summary(h.resume())[-len(dispatched("from-event")) :] == dispatched("from-event")


# ============================================================================ notify, info


def test_notify_when_idle_is_handled_at_once() -> None:
    h = Harness()
    effects = h.notify({"kind": "tick"})
    assert summary(effects) == [
        ("emit", "event.received"),
        ("reply", "notifier", ("Accepted", None)),
    ]
    assert h.agent.calls == [("handle_event", {"kind": "tick"})]
    received = h.emitted("event.received")[0].metadata
    assert received == {"agent": AGENT, "event": {"kind": "tick"}, "sender": "peer"}


def test_notify_prompt_when_idle_dispatches_an_event_turn() -> None:
    agent = Recorder().script("handle_event", fresh_prompt("react"))
    h = Harness(agent)
    effects = h.notify("e")
    assert summary(effects) == [
        ("emit", "event.received"),
        *dispatched("react"),
        ("reply", "notifier", ("Accepted", None)),
    ]
    assert h.emitted("prompt.start")[-1].metadata["origin"] == "event"


def test_notify_halt_when_idle_halts() -> None:
    agent = Recorder().script("handle_event", Halt())
    h = Harness(agent)
    h.notify("stop please")
    assert h.machine.halted
    assert h.agent.names() == ["handle_event", "post_run"]


def test_notifies_during_a_turn_are_buffered_until_it_ends() -> None:
    h = Harness()
    h.ask("A")
    effects = h.notify("e1")
    assert summary(effects) == [
        ("emit", "event.received"),  # at receipt, not at handling
        ("reply", "notifier", ("Accepted", None)),
    ]
    assert "handle_event" not in h.agent.names()
    assert h.machine.status_fields()["pending_notifications"] == 1


class Counting(Recorder):
    """Counts events; the turn's decision resets a label that buffered events must see."""

    def __init__(self) -> None:
        super().__init__()
        self.count = 0
        self.label = "before"
        self.seen_labels: list[str] = []

    def handle_response(self, ref: str, response: Response) -> Any:
        self.label = "decided"
        return super().handle_response(ref, response)

    def post_turn(self, ref: str, outcome: Any) -> Any:
        self.label = "post-turned"
        return super().post_turn(ref, outcome)

    def handle_event(self, event: Any) -> Any:
        self.count += 1
        self.seen_labels.append(self.label)
        return super().handle_event(event)


def test_buffered_notifies_are_drained_in_arrival_order_against_post_decision_state() -> None:
    agent = Counting()
    h = Harness(agent)
    h.ask("A")
    for n in range(5):
        h.notify(f"e{n}")
    h.succeed()
    assert agent.count == 5
    assert agent.calls_of("handle_event") == [(f"e{n}",) for n in range(5)]
    assert agent.seen_labels == ["post-turned"] * 5
    assert h.machine.status_fields()["pending_notifications"] == 0


def test_buffered_prompt_goes_to_the_mailbox_tail_not_the_self_chain_slot() -> None:
    agent = Recorder().script("handle_event", fresh_prompt("from-event"))
    agent.script("handle_response", fresh_prompt("chained"))
    h = Harness(agent)
    h.ask("A")
    h.ask("B")
    h.notify("e")
    effects = h.succeed()
    assert emits(effects, "mailbox.queued")[0].measurements["depth"] == 2
    for _ in range(3):
        h.succeed()
    assert h.started_prompts() == ["A", "chained", "B", "from-event"]


def test_buffered_halt_halts_after_the_turn_and_the_drain_continues() -> None:
    agent = Recorder().script("handle_event", Halt(), None)
    h = Harness(agent)
    h.ask("A")
    h.ask("B")
    h.notify("halt")
    h.notify("later")
    effects = h.succeed()
    assert summary(effects) == [
        *SUCCEEDED,
        ("emit", "halted"),
        ("reply", "caller-A", ("Response", "done")),
    ]
    assert h.agent.names()[-5:] == [
        "handle_response",
        "post_turn",
        "handle_event",
        "post_run",
        "handle_event",
    ]
    assert h.machine.halted
    assert h.started_prompts() == ["A"]


def test_self_chain_pending_when_a_buffered_notify_halts_survives_until_resume() -> None:
    agent = Recorder().script("handle_response", fresh_prompt("chained"))
    agent.script("handle_event", Halt())
    h = Harness(agent)
    h.ask("A")
    h.ask("B")
    h.notify("halt")
    h.succeed()
    assert h.machine.halted and h.machine.status_fields()["self_chain_pending"]
    h.resume()
    assert h.turn.prompt == "chained"


def test_buffered_notifies_are_drained_on_the_error_path_too() -> None:
    agent = Counting()
    h = Harness(agent)
    h.ask("A")
    h.notify("e1")
    h.notify("e2")
    effects = h.fail()
    assert agent.count == 2
    assert h.agent.names()[-4:] == ["handle_error", "post_turn", "handle_event", "handle_event"]
    assert replies(effects)[-1].to == "caller-A"


def test_info_when_idle_goes_to_handle_info() -> None:
    agent = Recorder().script("handle_info", fresh_prompt("timer fired"))
    h = Harness(agent)
    effects = h.info(("timer", 1))
    assert summary(effects) == dispatched("timer fired")
    assert h.agent.calls[0] == ("handle_info", ("timer", 1))
    assert h.emitted("prompt.start")[-1].metadata["origin"] == "info"


def test_info_during_a_turn_is_buffered_with_notifies_in_arrival_order() -> None:
    h = Harness()
    h.ask("A")
    h.notify("n1")
    h.info("i1")
    h.notify("n2")
    assert "handle_info" not in h.agent.names()
    h.succeed()
    assert h.agent.names()[-3:] == ["handle_event", "handle_info", "handle_event"]


# ============================================================================ finished-turn order


def test_finished_turn_order_success() -> None:
    """record -> handle_response -> post_turn -> drained notifications -> reply -> next turn."""
    agent = Recorder().script("handle_event", fresh_prompt("from-event"))
    h = Harness(agent)
    h.ask("A")
    h.ask("B")
    h.notify("e")
    before = len(h.agent.calls)
    effects = h.succeed("a")
    assert h.agent.names()[before:] == [
        "handle_stream_event",
        "handle_response",
        "post_turn",
        "handle_event",
        "pre_turn",
    ]
    assert summary(effects) == [
        *SUCCEEDED,
        ("emit", "mailbox.queued"),  # the drained notification's prompt
        ("reply", "caller-A", ("Response", "a")),
        *dispatched("B"),
    ]
    assert h.machine.status_fields()["turns"] == 1


def test_finished_turn_order_when_halting() -> None:
    """... post_turn -> post_run -> halted -> drained notifications -> reply; no next turn.

    Spec ambiguous: ARCHITECTURE.md fixes post_run before the drain; gen_agent.md §1.3
    (0.7.0, #401) drains before post_run. This test follows ARCHITECTURE.md (and the brief).
    """
    agent = Recorder().script("handle_response", Halt())
    agent.script("handle_event", fresh_prompt("from-event"))
    h = Harness(agent)
    h.ask("A")
    h.ask("B")
    h.notify("e")
    before = len(h.agent.calls)
    effects = h.succeed("a")
    assert h.agent.names()[before:] == [
        "handle_stream_event",
        "handle_response",
        "post_turn",
        "post_run",
        "handle_event",
    ]
    assert summary(effects) == [
        *SUCCEEDED,
        ("emit", "halted"),
        ("emit", "mailbox.queued"),
        ("reply", "caller-A", ("Response", "a")),
    ]


def test_finished_turn_order_on_the_error_path() -> None:
    agent = Recorder().script("handle_event", fresh_prompt("from-event"))
    h = Harness(agent)
    h.ask("A")
    h.ask("B")
    h.notify("e")
    before = len(h.agent.calls)
    effects = h.fail()
    assert h.agent.names()[before:] == ["handle_error", "post_turn", "handle_event", "pre_turn"]
    assert summary(effects) == [
        *FAILED,
        ("emit", "mailbox.queued"),
        ("reply", "caller-A", ("Failure", "BackendError")),
        *dispatched("B"),
    ]


def test_post_turn_sees_the_outcome_and_ref() -> None:
    h = Harness()
    h.ask("A")
    h.succeed("ok")
    h.ask("B")
    h.fail()
    (ref_a, outcome_a), (ref_b, outcome_b) = h.agent.calls_of("post_turn")
    assert ref_a == "ref-A" and isinstance(outcome_a, Response) and outcome_a.text == "ok"
    assert ref_b == "ref-B" and type(outcome_b) is BackendError


# ============================================================================ interrupt


def test_interrupt_ends_the_current_turn() -> None:
    h = Harness()
    h.ask("A")
    h.ask("B")
    turn = h.turn
    effects = h.interrupt()
    assert summary(effects) == [
        ("reply", "interrupter", ("Accepted", "ref-A")),
        *INTERRUPTED,
        ("reply", "caller-A", ("Failure", "TurnInterrupted")),
        *dispatched("B"),
    ]
    assert next(e for e in effects if isinstance(e, CancelTurn)).turn_id == turn.turn_id
    (ref, error), *_ = h.agent.calls_of("handle_error")
    assert ref == "ref-A" and type(error) is TurnInterrupted
    assert h.agent.names()[-3:] == ["handle_error", "post_turn", "pre_turn"]


def test_interrupt_by_ref_ends_only_that_turn() -> None:
    h = Harness()
    h.ask("A")
    effects = h.interrupt("ref-A")
    failure_of(only_reply(effects, "caller-A"), TurnInterrupted)


def test_interrupt_with_a_wrong_ref_changes_nothing() -> None:
    h = Harness()
    h.ask("A")
    h.ask("B")
    calls_before = list(h.agent.calls)
    effects = h.interrupt("ref-B")
    assert summary(effects) == [("reply", "interrupter", ("Failure", "RequestNotFound"))]
    error = failure_of(only_reply(effects, "interrupter"), RequestNotFound)
    assert error.ref == "ref-B"
    assert h.machine.current_ref == "ref-A"
    assert h.agent.calls == calls_before
    assert h.machine.status_fields()["queued"] == 1


def test_interrupt_while_idle_is_request_not_found() -> None:
    h = Harness()
    effects = h.interrupt()
    assert summary(effects) == [("reply", "interrupter", ("Failure", "RequestNotFound"))]
    assert h.agent.calls == []


def test_prompt_returned_after_an_interrupt_is_an_independent_follow_up() -> None:
    agent = Recorder().script("handle_error", fresh_prompt("follow-up"))
    h = Harness(agent)
    h.ask("A")
    effects = h.interrupt()
    failure_of(only_reply(effects, "caller-A"), TurnInterrupted)
    follow_up = starts(effects)[0]
    assert follow_up.prompt == "follow-up" and follow_up.ref != "ref-A"
    assert h.emitted("prompt.start")[-1].metadata["origin"] == "self_chain"
    h.succeed("follow-up done")
    (answer,) = h.replies_to("caller-A")
    failure_of(answer, TurnInterrupted)


def test_interrupted_tell_polls_failed() -> None:
    h = Harness()
    h.tell("T")
    h.interrupt("ref-T")
    result = h.poll("T")
    assert result is not None and result.state is PollState.FAILED
    assert type(result.error) is TurnInterrupted


def test_late_outcome_of_an_interrupted_turn_is_ignored() -> None:
    h = Harness()
    h.ask("A")
    old = h.turn
    h.interrupt()
    calls_before = list(h.agent.calls)
    assert h.stream(Event.result("late"), old) == []
    assert h.feed(h.machine.turn_succeeded(old.turn_id, 1.0)) == []
    assert h.fail(turn=old) == []
    assert h.agent.calls == calls_before


# ============================================================================ cancel


def test_cancel_a_queued_tell() -> None:
    h = Harness()
    h.ask("A")
    h.tell("T")
    effects = h.cancel("ref-T")
    assert summary(effects) == [
        ("emit", "turn.cancelled"),
        ("reply", "canceller", ("Accepted", "ref-T")),
    ]
    result = h.poll("T")
    assert result is not None and result.state is PollState.FAILED
    assert type(result.error) is TurnCancelled and result.error.ref == "ref-T"
    assert h.machine.status_fields()["queued"] == 0
    h.succeed()
    assert h.started_prompts() == ["A"]


def test_cancel_a_queued_tell_with_completion_sends_its_completion() -> None:
    h = Harness()
    h.ask("A")
    h.tell("T", completion=True)
    effects = h.cancel("ref-T")
    assert ("reply", "teller-T", ("TellCompleted", "TurnCancelled")) in summary(effects)


def test_cancel_the_running_tell_is_request_not_found() -> None:
    h = Harness()
    h.tell("T")
    effects = h.cancel("ref-T")
    assert summary(effects) == [("reply", "canceller", ("Failure", "RequestNotFound"))]
    assert h.machine.current_ref == "ref-T"
    assert h.poll("T").state is PollState.PENDING  # type: ignore[union-attr]


def test_cancel_a_finished_tell_is_request_not_found() -> None:
    h = Harness()
    h.tell("T")
    h.succeed()
    effects = h.cancel("ref-T")
    assert summary(effects) == [("reply", "canceller", ("Failure", "RequestNotFound"))]
    assert h.poll("T").state is PollState.COMPLETED  # type: ignore[union-attr]


def test_cancel_an_unknown_ref_is_request_not_found() -> None:
    h = Harness()
    effects = h.cancel("nope")
    assert summary(effects) == [("reply", "canceller", ("Failure", "RequestNotFound"))]


def test_cancel_does_not_apply_to_queued_asks() -> None:
    # Spec silent: §2.12 cancel_request is for queued tells; the machine refuses asks.
    h = Harness()
    h.ask("A")
    h.ask("B")
    effects = h.cancel("ref-B")
    assert summary(effects) == [("reply", "canceller", ("Failure", "RequestNotFound"))]
    assert h.machine.status_fields()["queued"] == 1


# ============================================================================ watchdog


def test_watchdog_times_out_the_current_turn() -> None:
    h = Harness(watchdog=30.0)
    h.ask("A")
    h.ask("B")
    h.clock.advance(30.0)
    effects = h.watchdog()
    assert summary(effects) == [
        ("cancel", "timeout"),
        *FAILED,
        ("reply", "caller-A", ("Failure", "TurnTimeout")),
        *dispatched("B", watchdog=30.0),
    ]
    error = failure_of(only_reply(effects, "caller-A"), TurnTimeout)
    assert isinstance(error, TimeoutError)
    assert h.agent.calls_of("handle_error")[0] == ("ref-A", error)
    assert emits(effects, "turn.error")[0].measurements["duration_ms"] == pytest.approx(30000.0)
    assert emits(effects, "prompt.error")[0].metadata["reason"] == "timeout"


def test_a_stale_watchdog_is_ignored() -> None:
    h = Harness()
    h.ask("A")
    old = h.turn
    h.succeed()
    h.ask("B")
    calls_before = list(h.agent.calls)
    assert h.watchdog(old) == []
    assert h.machine.current_ref == "ref-B"
    assert h.agent.calls == calls_before


def test_watchdog_is_armed_for_every_dispatch_including_self_chains() -> None:
    agent = Recorder().script("handle_response", fresh_prompt("chained"))
    h = Harness(agent, watchdog=5.0)
    h.ask("A")
    h.ask("B")
    h.succeed()
    h.succeed()
    armed = [e for e in h.log if isinstance(e, ArmWatchdog)]
    turns = [e for e in h.log if isinstance(e, StartTurn)]
    assert [(a.turn_id, a.seconds) for a in armed] == [(t.turn_id, 5.0) for t in turns]
    assert [t.prompt for t in turns] == ["A", "chained", "B"]
    assert len({t.turn_id for t in turns}) == 3


def test_no_watchdog_is_armed_when_it_is_none() -> None:
    h = Harness(watchdog=None)
    effects = h.ask("A")
    assert summary(effects) == dispatched("A", watchdog=None)


# ============================================================================ handle_error retry


def test_ask_retry_from_handle_error_keeps_ref_and_caller() -> None:
    agent = Recorder().script("handle_error", fresh_prompt("again"))
    h = Harness(agent)
    h.ask("A")
    h.ask("B")
    effects = h.fail()
    assert summary(effects) == [*FAILED, *dispatched("again")]
    assert h.turn.ref == "ref-A"
    start = h.emitted("prompt.start")[-1].metadata
    assert (start["ref"], start["origin"], start["attempt"]) == ("ref-A", "ask", 2)
    assert h.replies_to("caller-A") == []

    effects = h.succeed("finally")
    assert summary(replies(effects)) == [("reply", "caller-A", ("Response", "finally"))]
    assert [describe(m) for m in h.replies_to("caller-A")] == [("Response", "finally")]
    assert h.turn.prompt == "B"


def test_each_retry_counts_as_a_new_attempt_of_the_same_request() -> None:
    agent = Recorder().script("handle_error", fresh_prompt("second"), fresh_prompt("third"))
    h = Harness(agent)
    h.ask("A")
    h.fail()
    h.fail()
    h.succeed("third time lucky")
    starts_ = [(e.metadata["ref"], e.metadata["attempt"]) for e in h.emitted("turn.start")]
    assert starts_ == [("ref-A", 1), ("ref-A", 2), ("ref-A", 3)]
    assert h.started_prompts() == ["A", "second", "third"]
    assert [describe(m) for m in h.replies_to("caller-A")] == [("Response", "third time lucky")]


def test_ask_retry_that_fails_again_answers_once_with_the_final_error() -> None:
    agent = Recorder().script("handle_error", fresh_prompt("again"), None)
    h = Harness(agent)
    h.ask("A")
    h.fail(BackendError("first", kind="server_error"))
    h.fail(BackendError("second", kind="overloaded"))
    (answer,) = h.replies_to("caller-A")
    assert failure_of(answer, BackendError).message == "second"


def test_tell_retry_stays_pending_until_the_final_outcome() -> None:
    agent = Recorder().script("handle_error", fresh_prompt("again"))
    h = Harness(agent)
    h.tell("T", completion=True)
    h.fail()
    assert h.poll("T") == PollResult("ref-T", PollState.PENDING)
    assert h.turn.ref == "ref-T"
    h.succeed("second try")
    result = h.poll("T")
    assert result is not None and result.state is PollState.COMPLETED
    assert result.response is not None and result.response.text == "second try"
    assert result.response.prompt == "again"
    assert [describe(m) for m in h.replies_to("teller-T")] == [
        ("Accepted", "ref-T"),
        ("TellCompleted", "second try"),
    ]


def test_handle_error_halt_halts() -> None:
    agent = Recorder().script("handle_error", Halt())
    h = Harness(agent)
    h.ask("A")
    h.ask("B")
    h.fail()
    assert h.machine.halted
    assert h.agent.names()[-3:] == ["handle_error", "post_turn", "post_run"]
    assert h.started_prompts() == ["A"]


def test_retry_while_a_halt_is_pending_waits_in_the_self_chain_slot() -> None:
    agent = Recorder().script("handle_error", fresh_prompt("again"))
    h = Harness(agent)
    h.ask("A")
    h.halt()
    h.fail()
    assert h.machine.halted and h.machine.status_fields()["self_chain_pending"]
    assert h.replies_to("caller-A") == []
    h.resume()
    assert (h.turn.ref, h.turn.prompt) == ("ref-A", "again")


# ============================================================================ contained callbacks


def test_handle_response_raising_answers_callback_error_and_keeps_serving() -> None:
    agent = Recorder().script("handle_response", Raise(RuntimeError, "bug"))
    h = Harness(agent)
    h.ask("A")
    h.ask("B")
    effects = h.succeed()
    error = failure_of(only_reply(effects, "caller-A"), CallbackError)
    assert (error.callback, error.agent, error.ref) == ("handle_response", AGENT, "ref-A")
    assert starts(effects)[0].prompt == "B"
    assert emits(effects, "callback.error")[0].metadata["callback"] == "handle_response"


@pytest.mark.parametrize(
    "bad", [42, "a string", Prompt(""), Skip()], ids=["int", "str", "empty-prompt", "skip"]
)
def test_handle_response_malformed_return_answers_callback_error(bad: str) -> None:
    agent = Recorder().script("handle_response", bad)
    h = Harness(agent)
    h.ask("A")
    h.ask("B")
    effects = h.succeed()
    assert failure_of(only_reply(effects, "caller-A"), CallbackError).callback == (
        "handle_response"
    )
    assert starts(effects)[0].prompt == "B"
    assert not h.machine.halted


def test_handle_response_failure_of_a_tell_is_its_poll_result() -> None:
    agent = Recorder().script("handle_response", Raise(RuntimeError, "bug"))
    h = Harness(agent)
    h.tell("T")
    h.succeed()
    result = h.poll("T")
    assert result is not None and result.state is PollState.FAILED
    assert type(result.error) is CallbackError and result.error.callback == "handle_response"


@pytest.mark.parametrize("bad", [Raise(RuntimeError, "bug"), 42], ids=["raises", "malformed"])
def test_handle_error_failure_keeps_the_original_error_and_serving(bad: str) -> None:
    # Spec §1.3 (later): a failing handle_error is treated as "no reply" (noreply), so the
    # caller gets the turn's own error.
    agent = Recorder().script("handle_error", bad)
    h = Harness(agent)
    h.ask("A")
    h.ask("B")
    effects = h.fail(BackendError("down", kind="server_error"))
    assert failure_of(only_reply(effects, "caller-A"), BackendError).message == "down"
    assert starts(effects)[0].prompt == "B"


@pytest.mark.parametrize("bad", [Raise(RuntimeError, "bug"), 42], ids=["raises", "malformed"])
def test_handle_event_failure_when_idle_is_the_notifiers_answer(bad: str) -> None:
    agent = Recorder().script("handle_event", bad)
    h = Harness(agent)
    effects = h.notify({"n": 1})
    error = failure_of(only_reply(effects, "notifier"), CallbackError)
    assert (error.callback, error.agent) == ("handle_event", AGENT)
    assert summary(h.ask("A")) == dispatched("A")


def test_handle_event_failure_does_not_take_a_string_event_as_the_ref() -> None:
    """A CallbackError's ``ref`` is a request ref (STYLE.md 6: errors carry the agent name
    and the request ref); a notify has none, and the event is not one."""
    agent = Recorder().script("handle_event", Raise(RuntimeError, "bug"))
    h = Harness(agent)
    effects = h.notify("tick")
    error = failure_of(only_reply(effects, "notifier"), CallbackError)
    assert error.ref is None


def test_handle_event_failure_during_the_drain_is_contained() -> None:
    agent = Counting().script("handle_event", Raise(RuntimeError, "bug"))
    h = Harness(agent)
    h.ask("A")
    h.ask("B")
    h.notify("e1")
    h.notify("e2")
    effects = h.succeed()
    assert agent.count == 2
    assert describe(only_reply(effects, "caller-A")) == ("Response", "done")
    assert starts(effects)[0].prompt == "B"


@pytest.mark.parametrize("bad", [Raise(RuntimeError, "bug"), 42], ids=["raises", "malformed"])
def test_handle_info_failure_is_contained(bad: str) -> None:
    agent = Recorder().script("handle_info", bad)
    h = Harness(agent)
    effects = h.info("tick")
    assert replies(effects) == [] and starts(effects) == []
    assert summary(h.ask("A")) == dispatched("A")


@pytest.mark.parametrize(
    "bad", [Raise(RuntimeError, "bug"), 42, ""], ids=["raises", "malformed", "empty"]
)
def test_pre_turn_failure_answers_callback_error_and_draining_continues(bad: str) -> None:
    agent = Recorder().script("pre_turn", lambda p: p, bad)
    h = Harness(agent)
    h.ask("A")
    h.ask("B")
    h.ask("C")
    effects = h.succeed()
    error = failure_of(only_reply(effects, "caller-B"), CallbackError)
    assert (error.callback, error.ref) == ("pre_turn", "ref-B")
    assert starts(effects)[0].prompt == "C"
    assert emits(effects, "turn.rejected")[0].metadata["reason"] == "callback_error"


def test_post_turn_raising_is_contained_and_the_next_request_runs() -> None:
    # Spec silent: what the caller gets when post_turn raises after a success (§1.2 says
    # only "caught, logged, transition proceeds"); the machine answers CallbackError.
    agent = Recorder().script("post_turn", Raise(RuntimeError, "bug"))
    h = Harness(agent)
    h.ask("A")
    h.ask("B")
    effects = h.succeed()
    assert failure_of(only_reply(effects, "caller-A"), CallbackError).callback == "post_turn"
    assert starts(effects)[0].prompt == "B"


def test_post_turn_return_value_cannot_halt() -> None:
    agent = Recorder().script("post_turn", Halt())
    h = Harness(agent)
    h.ask("A")
    h.ask("B")
    effects = h.succeed()
    assert not h.machine.halted
    assert describe(only_reply(effects, "caller-A")) == ("Response", "done")
    assert starts(effects)[0].prompt == "B"


def test_post_run_raising_still_halts() -> None:
    agent = (
        Recorder().script("handle_response", Halt()).script("post_run", Raise(RuntimeError, "bug"))
    )
    h = Harness(agent)
    h.ask("A")
    effects = h.succeed()
    assert h.machine.halted
    assert summary(effects) == [
        *SUCCEEDED,
        ("emit", "callback.error"),
        ("emit", "halted"),
        ("reply", "caller-A", ("Response", "done")),
    ]


def test_handle_stream_event_raising_fails_the_turn_and_keeps_serving() -> None:
    agent = Recorder().script("handle_stream_event", Raise(RuntimeError, "bug"))
    h = Harness(agent)
    h.ask("A")
    h.ask("B")
    effects = h.stream(Event.text_delta("hel"))
    assert summary(effects)[:3] == [
        ("emit", "callback.error"),
        ("cancel", "callback_error"),
        ("emit", "state.changed"),
    ]
    error = failure_of(only_reply(effects, "caller-A"), CallbackError)
    assert (error.callback, error.ref) == ("handle_stream_event", "ref-A")
    assert h.agent.calls_of("handle_error") == [("ref-A", error)]
    assert starts(effects)[0].prompt == "B"


def test_terminate_agent_raising_still_answers_everyone() -> None:
    agent = Recorder().script("terminate_agent", Raise(RuntimeError, "bug"))
    h = Harness(agent)
    h.ask("A")
    h.ask("B")
    effects = h.stop()
    assert {r.to for r in replies(effects)} == {"caller-A", "caller-B"}


# ============================================================================ pre_turn


def test_pre_turn_rewrite_is_what_runs_and_is_reported() -> None:
    agent = Recorder().always("pre_turn", lambda p: f"[ctx] {p}")
    h = Harness(agent)
    effects = h.ask("A", "original")
    assert starts(effects)[0].prompt == "[ctx] original"
    start = emits(effects, "prompt.start")[0].metadata
    assert start["prompt"] == "[ctx] original"
    assert start["original_prompt"] == "original"
    assert start["rewritten"] is True
    response = only_reply(h.succeed(), "caller-A")
    assert response.prompt == "[ctx] original"


def test_pre_turn_identity_is_not_a_rewrite() -> None:
    h = Harness()
    effects = h.ask("A", "same")
    start = emits(effects, "prompt.start")[0].metadata
    assert (start["prompt"], start["original_prompt"], start["rewritten"]) == (
        "same",
        "same",
        False,
    )


def test_pre_turn_runs_for_every_origin() -> None:
    agent = Recorder().script("handle_response", fresh_prompt("chained"))
    agent.script("handle_event", fresh_prompt("evented"))
    h = Harness(agent)
    h.ask("A")
    h.succeed()
    h.succeed()
    h.notify("e")
    h.succeed()
    h.tell("T")
    assert [p for (p,) in h.agent.calls_of("pre_turn")] == ["A", "chained", "evented", "T"]


def test_pre_turn_skip_answers_turn_skipped_and_draining_continues() -> None:
    agent = Recorder().script("pre_turn", lambda p: p, Skip())
    h = Harness(agent)
    h.ask("A")
    h.ask("B")
    h.ask("C")
    effects = h.succeed()
    assert without_emits(effects) == [
        ("reply", "caller-A", ("Response", "done")),
        ("reply", "caller-B", ("Failure", "TurnSkipped")),
        ("start", "C"),
        ("watchdog", 600.0),
    ]
    assert failure_of(only_reply(effects, "caller-B"), TurnSkipped).ref == "ref-B"
    assert emits(effects, "turn.rejected")[0].metadata["reason"] == "pre_turn_skipped"
    assert [e.metadata["ref"] for e in emits(effects, "prompt.start")] == ["ref-C"]


def test_pre_turn_skip_of_a_tell_is_its_poll_result() -> None:
    agent = Recorder().script("pre_turn", Skip())
    h = Harness(agent)
    effects = h.tell("T")
    assert summary(effects) == [
        ("reply", "teller-T", ("Accepted", "ref-T")),
        ("emit", "turn.rejected"),
    ]
    result = h.poll("T")
    assert result is not None and type(result.error) is TurnSkipped
    assert h.machine.phase is Phase.IDLE


def test_pre_turn_halt_answers_turn_halted_and_halts() -> None:
    agent = Recorder().script("pre_turn", lambda p: p, Halt())
    h = Harness(agent)
    h.ask("A")
    h.ask("B")
    h.ask("C")
    effects = h.succeed()
    failure_of(only_reply(effects, "caller-B"), TurnHalted)
    assert h.machine.halted
    assert h.agent.names()[-2:] == ["pre_turn", "post_run"]
    assert emits(effects, "halted")
    assert starts(effects) == []
    assert h.machine.status_fields()["queued"] == 1  # C waits for resume


@pytest.mark.parametrize(
    ("refusal", "error_type"),
    [(Skip(), TurnSkipped), (Raise(RuntimeError, "bug"), CallbackError), (42, CallbackError)],
    ids=["skip", "raises", "malformed"],
)
def test_pre_turn_refusing_a_generated_prompt_reaches_handle_error(
    refusal: str, error_type: type[Exception]
) -> None:
    """§1.3 (later): for an event or self-chain prompt, a pre_turn skip, crash or malformed
    return calls handle_error (there is no caller to tell), instead of a silent drop."""
    agent = Recorder().script("handle_response", fresh_prompt("chained"))
    agent.script("pre_turn", lambda p: p, refusal)
    h = Harness(agent)
    h.ask("A")
    h.succeed()
    calls = h.agent.calls_of("handle_error")
    assert len(calls) == 1, f"handle_error was called {len(calls)} times"
    (call,) = calls
    assert type(call[1]) is error_type
    assert call[0] == getattr(call[1], "ref", None) != "ref-A"


# ============================================================================ bounds


def test_mailbox_count_bound_rejects_with_agent_overloaded() -> None:
    h = Harness(max_queued=2)
    h.ask("A")
    h.ask("B")
    h.tell("C")
    effects = h.ask("D")
    assert summary(effects) == [
        ("emit", "turn.rejected"),
        ("emit", "input.rejected"),
        ("reply", "caller-D", ("Failure", "AgentOverloaded")),
    ]
    error = failure_of(only_reply(effects, "caller-D"), AgentOverloaded)
    assert (error.limit, error.ref, error.agent) == ("count", "ref-D", AGENT)
    assert emits(effects, "input.rejected")[0].metadata["limit"] == "count"
    assert h.machine.status_fields()["queued"] == 2


def test_mailbox_bytes_bound_rejects_with_agent_overloaded() -> None:
    h = Harness(max_queued_bytes=10)
    h.ask("A")
    h.ask("B", "12345")
    h.ask("C", "é234")  # five UTF-8 bytes: exactly at the bound
    effects = h.ask("D", "x")
    error = failure_of(only_reply(effects, "caller-D"), AgentOverloaded)
    assert error.limit == "bytes"
    assert emits(effects, "input.rejected")[0].metadata["limit"] == "bytes"
    assert h.machine.status_fields()["queued_bytes"] == 10


def test_overloaded_tell_is_not_accepted_and_not_pollable() -> None:
    h = Harness(max_queued=0)
    h.ask("A")
    effects = h.tell("T")
    assert summary(replies(effects)) == [("reply", "teller-T", ("Failure", "AgentOverloaded"))]
    assert h.poll("T") is None


def test_queued_bytes_are_released_when_work_leaves_the_mailbox() -> None:
    h = Harness(max_queued_bytes=10)
    h.ask("A")
    h.tell("B", "12345")
    h.tell("C", "12345")
    h.cancel("ref-B")
    assert h.machine.status_fields()["queued_bytes"] == 5
    h.succeed()  # C dispatched
    assert h.machine.status_fields()["queued_bytes"] == 0
    h.ask("D", "1234567890")
    assert h.machine.status_fields()["queued_bytes"] == 10


def test_the_self_chain_slot_is_not_counted_against_the_mailbox_bound() -> None:
    agent = Recorder().script("handle_response", fresh_prompt("chained"))
    h = Harness(agent, max_queued=1)
    h.ask("A")
    h.ask("B")  # the mailbox is now full
    effects = h.succeed()
    assert starts(effects)[0].prompt == "chained"
    assert h.emitted("input.rejected") == []
    h.succeed()
    assert h.started_prompts() == ["A", "chained", "B"]


def test_buffered_notification_bound() -> None:
    h = Harness(max_pending_notifications=2)
    h.ask("A")
    h.notify("e1")
    h.notify("e2")
    effects = h.notify("e3", reply_to="notifier-3")
    failure_of(only_reply(effects, "notifier-3"), AgentOverloaded)
    assert emits(effects, "input.rejected")
    h.succeed()
    assert h.agent.calls_of("handle_event") == [("e1",), ("e2",)]


def test_prompts_from_notifies_respect_the_mailbox_bound() -> None:
    """§2.12 (0.3.0, #41) and ARCHITECTURE.md ("bounded mailbox (count and bytes)"): a
    halted agent's notifies must not grow the mailbox past ``max_queued``; the overflow is
    rejected with ``input.rejected`` telemetry."""
    agent = Recorder().always("handle_event", fresh_prompt("from-event"))
    h = Harness(agent, max_queued=2)
    h.halt()
    for n in range(4):
        h.notify(f"e{n}")
    assert h.machine.status_fields()["queued"] <= 2
    assert h.emitted("input.rejected")


# ============================================================================ stop


def test_stop_answers_running_self_chained_and_queued_requests_once() -> None:
    agent = Recorder().script("handle_error", fresh_prompt("retry A"))
    h = Harness(agent)
    h.ask("A")  # will sit in the self-chain slot as a retry
    h.tell("T", completion=True)
    h.ask("B")
    h.halt()
    h.fail()
    assert h.machine.status_fields()["self_chain_pending"]
    h.resume()  # A's retry runs; T and B queued behind it
    assert h.turn.ref == "ref-A"
    h.ask("C")
    effects = h.stop("stop")
    assert without_emits(effects) == [
        ("cancel", "stopped"),
        ("reply", "caller-A", ("Failure", "AgentStopped")),
        ("reply", "teller-T", ("TellCompleted", "AgentStopped")),
        ("reply", "caller-B", ("Failure", "AgentStopped")),
        ("reply", "caller-C", ("Failure", "AgentStopped")),
    ]
    for caller in ("caller-A", "caller-B", "caller-C"):
        (answer,) = h.replies_to(caller)
        error = failure_of(answer, AgentStopped)
        assert error.agent == AGENT and error.ref == caller.replace("caller", "ref")
    assert type(h.poll("T").error) is AgentStopped  # type: ignore[union-attr]
    assert h.agent.calls[-1] == ("terminate_agent", "stop")
    assert emits(effects, "terminated")[0].metadata["reason"] == "stop"


def test_stop_answers_a_retry_waiting_in_the_self_chain_slot() -> None:
    agent = Recorder().script("handle_error", fresh_prompt("retry A"))
    h = Harness(agent)
    h.ask("A")
    h.halt()
    h.fail()
    effects = h.stop("shutdown")
    failure_of(only_reply(effects, "caller-A"), AgentStopped)
    assert h.agent.calls_of("terminate_agent") == [("shutdown",)]


def test_requests_after_stop_are_refused() -> None:
    h = Harness()
    h.stop()
    effects = h.ask("A")
    assert summary(effects) == [("reply", "caller-A", ("Failure", "AgentStopped"))]
    error = failure_of(only_reply(effects, "caller-A"), AgentStopped)
    assert (error.agent, error.ref) == (AGENT, "ref-A")
    assert summary(h.tell("T")) == [("reply", "teller-T", ("Failure", "AgentStopped"))]
    assert h.poll("T") is None


def test_stop_twice_terminates_once() -> None:
    h = Harness()
    h.stop("stop")
    assert h.stop("shutdown") == []
    assert h.agent.calls_of("terminate_agent") == [("stop",)]


def test_late_outcome_after_stop_is_ignored() -> None:
    h = Harness()
    h.ask("A")
    turn = h.turn
    h.stop()
    calls_before = list(h.agent.calls)
    assert h.succeed(turn=turn) == []
    assert h.watchdog(turn) == []
    assert h.agent.calls == calls_before


@pytest.mark.parametrize("route", ["notify", "info"])
def test_no_turn_starts_after_stop(route: str) -> None:
    """A stopped agent starts no work (ARCHITECTURE.md "stop really stops"; §2.10 later:
    a stopping agent refuses new work). The shell keeps delivering notifies and timers
    while it waits for the session to end (``_actors/agent.py`` END_SESSION_GRACE)."""
    agent = (
        Recorder()
        .always("handle_event", fresh_prompt("late"))
        .always("handle_info", fresh_prompt("late"))
    )
    h = Harness(agent)
    h.stop()
    effects = h.notify("e") if route == "notify" else h.info("timer")
    assert starts(effects) == []
    assert h.machine.current is None


def test_halt_after_stop_does_not_run_post_run() -> None:
    """§1.2: post_run runs on halting, "never on crash/stop/shutdown"; a halt arriving
    after stop (and after terminate_agent) must not run it."""
    h = Harness()
    h.stop()
    h.halt()
    assert "post_run" not in h.agent.names()


# ============================================================================ stream events


def test_handle_stream_event_sees_every_event_in_order_including_the_terminal() -> None:
    h = Harness()
    h.ask("A")
    h.stream(Event.text_delta("hel"))
    h.stream(Event.text_delta("lo"))
    h.stream(Event(EventKind.USAGE, {"usage": Usage(input_tokens=3, output_tokens=2)}))
    effects = h.succeed("hello")
    kinds = [event.kind for (event,) in h.agent.calls_of("handle_stream_event")]
    assert kinds == ["text_delta", "text_delta", "usage", "result"]
    response = only_reply(effects, "caller-A")
    assert [e.kind for e in response.events] == kinds
    assert response.usage == Usage(input_tokens=3, output_tokens=2)
    assert h.machine.status_fields()["output_tokens"] == 2


class StreamState(Recorder):
    """Keeps what the stream showed on the instance, as a real agent would."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[str] = []
        self.seen_at_error: list[str] | None = None

    def handle_stream_event(self, event: Event) -> Any:
        self.seen.append(event.data.get("text", ""))
        return super().handle_stream_event(event)

    def handle_error(self, ref: str, error: Exception) -> Any:
        self.seen_at_error = list(self.seen)
        return super().handle_error(ref, error)


def test_stream_event_state_survives_to_handle_error() -> None:
    agent = StreamState()
    h = Harness(agent)
    h.ask("A")
    h.stream(Event.text_delta("partial "))
    h.stream(Event.text_delta("work"))
    h.fail()
    assert agent.seen_at_error == ["partial ", "work"]


# ============================================================================ telemetry


def test_state_changed_sequence() -> None:
    h = Harness()
    h.ask("A")
    h.ask("B")
    h.succeed()
    h.succeed()
    transitions = [(e.metadata["from"], e.metadata["to"]) for e in h.emitted("state.changed")]
    assert transitions == [
        (None, "idle"),
        ("idle", "processing"),
        ("processing", "idle"),
        ("idle", "processing"),
        ("processing", "idle"),
    ]


def test_prompt_events_carry_ref_and_reason() -> None:
    h = Harness()
    h.ask("A")
    h.succeed()
    h.ask("B")
    h.fail(BackendError("x", kind="server_error"))
    h.ask("C")
    h.interrupt()
    assert [e.metadata["ref"] for e in h.emitted("prompt.start")] == ["ref-A", "ref-B", "ref-C"]
    (stop,) = h.emitted("prompt.stop")
    assert stop.metadata["ref"] == "ref-A" and stop.measurements["duration_ms"] == 12.0
    errors = [(e.metadata["ref"], e.metadata["reason"]) for e in h.emitted("prompt.error")]
    assert errors == [("ref-B", "backend_error"), ("ref-C", "interrupted")]


def test_halted_is_emitted_after_post_run() -> None:
    h = Harness()
    effects = h.halt()
    (halted,) = emits(effects, "halted")
    assert halted.metadata == {"agent": AGENT}
    assert h.agent.names() == ["post_run"]


def test_turn_events_are_content_free() -> None:
    agent = Recorder().always("pre_turn", lambda p: p if p != "skip me" else Skip())
    h = Harness(agent, max_queued=1)
    h.ask("A", "secret prompt one")
    h.succeed("secret answer")
    h.ask("B", "secret prompt two")
    h.fail(BackendError("secret failure detail", kind="server_error"))
    h.ask("C", "skip me")
    h.ask("D", "secret prompt three")
    h.tell("E", "secret prompt four")
    h.tell("F", "secret prompt five")  # rejected: mailbox full
    h.cancel("ref-E")
    h.interrupt()
    turn_events = [e for e in h.log if isinstance(e, Emit) and e.name.startswith("turn.")]
    assert {e.name for e in turn_events} >= {
        "turn.start",
        "turn.stop",
        "turn.error",
        "turn.rejected",
        "turn.cancelled",
        "turn.interrupted",
    }
    for event in turn_events:
        assert set(event.metadata) <= {"agent", "ref", "origin", "attempt", "reason"}
        for value in (*event.metadata.values(), *event.measurements.values()):
            assert "secret" not in repr(value) and "skip me" not in repr(value)
    starts_ = [e.metadata for e in turn_events if e.name == "turn.start"]
    assert [(m["origin"], m["attempt"]) for m in starts_] == [("ask", 1)] * 3


def test_every_emitted_name_is_a_known_telemetry_event() -> None:
    agent = Recorder().script("handle_response", Halt())
    h = Harness(agent, max_queued=1)
    h.ask("A")
    h.notify("e")
    h.ask("B")
    h.ask("C")
    h.succeed()
    h.resume()
    h.interrupt()
    h.stop()
    assert {e.name for e in h.log if isinstance(e, Emit)} <= EVENT_NAMES


def test_status_reports_elapsed_time_on_the_fake_clock() -> None:
    h = Harness()
    h.ask("A")
    h.clock.advance(7.5)
    fields = h.machine.status_fields()
    assert (fields["state"], fields["current_ref"], fields["current_origin"]) == (
        "processing",
        "ref-A",
        "ask",
    )
    assert fields["current_elapsed"] == pytest.approx(7.5)


# ============================================================================ random sequences

# What each callback may do in a random run: every directive, an exception, and garbage.
# Each maps a name to (weight, behaviour); the ordinary behaviour is listed first, so that
# hypothesis shrinks towards it, and weighs most, so that many turns run to their end.
DECISIONS = {
    "none": (4, None),
    "prompt": (2, fresh_prompt("directed")),
    "halt": (1, Halt()),
    "raise": (1, Raise(RuntimeError, "callback bug")),
    "garbage": (1, 42),
}
PRE_TURN = {
    "identity": (4, lambda p: p),
    "rewrite": (2, lambda p: f"rewritten {p}"),
    "skip": (1, Skip()),
    "halt": (1, Halt()),
    "raise": (1, Raise(RuntimeError, "pre_turn bug")),
    "garbage": (1, 42),
}
PLAIN = {"none": (5, None), "raise": (1, Raise(RuntimeError, "hook bug"))}
CALLBACK_CHOICES: dict[str, dict[str, tuple[int, Any]]] = {
    "handle_response": DECISIONS,
    "handle_error": DECISIONS,
    "handle_event": DECISIONS,
    "handle_info": DECISIONS,
    "pre_turn": PRE_TURN,
    "post_turn": PLAIN,
    "post_run": PLAIN,
    "handle_stream_event": PLAIN,
    "terminate_agent": PLAIN,
}


def weighted_choice(options: dict[str, tuple[int, Any]]) -> st.SearchStrategy[str]:
    """The name of one behaviour, drawn in proportion to its weight."""
    return st.sampled_from([name for name, (weight, _) in options.items() for _ in range(weight)])


_machine_log = logging.getLogger("genagent_thespian.agent")
LIMITS = {"max_queued": 3, "max_queued_bytes": 24, "max_pending_notifications": 3}
prompt_texts = st.text(alphabet=string.ascii_lowercase + "é", min_size=1, max_size=8)


class MachineRun(RuleBasedStateMachine):
    """Random inputs in any order; after each step the machine's invariants must hold.

    The model tracks who is owed an answer. Every ask and tell sender, and every caller of
    notify / interrupt / cancel / halt / resume, is a distinct reply address; a reply to any
    other address (or to nobody) fails the run, as does a second answer to an ask.
    """

    def __init__(self) -> None:
        super().__init__()
        _machine_log.disabled = True  # thousands of contained callback failures would be logged
        self.agent = Recorder()
        self.h = Harness(self.agent, max_tell_results=10_000, watchdog=10.0, **LIMITS)
        self.serial = 0
        self.asks: dict[str, str] = {}  # reply address -> ref
        self.tells: dict[str, tuple[str, bool]] = {}  # reply address -> (ref, completion)
        self.accepted_tells: set[str] = set()
        self.finished_tells: dict[str, PollResult] = {}
        self.refs: list[str] = []
        self.answers: Counter[Any] = Counter()  # reply address -> answers so far
        self.completions: Counter[Any] = Counter()
        self.running: StartTurn | None = None  # the model's idea of the running turn
        self.old_turns: list[StartTurn] = []
        self.stopped = False

    # -------------------------------------------------------------- bookkeeping

    def _new(self, kind: str) -> tuple[str, str]:
        self.serial += 1
        return f"ref-{kind}-{self.serial}", f"{kind}-{self.serial}"

    def _apply(self, effects: list[Effect], *, control: str | None = None) -> None:
        """Check ``effects`` against the model; ``control`` is the caller of this input."""
        control_answers = 0
        for effect in effects:
            if isinstance(effect, Reply):
                if effect.to == control:
                    control_answers += 1
                elif effect.to in self.asks:
                    self.answers[effect.to] += 1
                    assert self.answers[effect.to] == 1, f"ask {effect.to} answered twice"
                    assert isinstance(effect.message, Response | Failure)
                    assert effect.message.ref == self.asks[effect.to], effect
                elif effect.to in self.tells:
                    ref, completion = self.tells[effect.to]
                    assert isinstance(effect.message, TellCompleted), effect
                    assert completion and ref in self.accepted_tells, effect
                    assert effect.message.ref == ref, effect
                    self.completions[effect.to] += 1
                    assert self.completions[effect.to] == 1, f"{effect.to} completed twice"
                else:
                    raise AssertionError(f"reply to {effect.to!r}, who is not waiting: {effect}")
            elif isinstance(effect, CancelTurn):
                assert self.running is not None and effect.turn_id == self.running.turn_id
                self.old_turns.append(self.running)
                self.running = None
            elif isinstance(effect, StartTurn):
                assert not self.stopped, "a turn started after stop"
                assert self.running is None, "a second turn started while one runs"
                self.running = effect
            elif isinstance(effect, ArmWatchdog):
                assert self.running is not None and effect.turn_id == self.running.turn_id
            elif isinstance(effect, Emit):
                assert effect.name in EVENT_NAMES, effect.name
        if control is not None:
            assert control_answers == 1, f"{control} got {control_answers} answers: {effects}"

    def _end_running(self) -> None:
        assert self.running is not None
        self.old_turns.append(self.running)
        self.running = None

    # -------------------------------------------------------------- the agent's behaviour

    @initialize(
        choices=st.fixed_dictionaries(
            {name: weighted_choice(options) for name, options in CALLBACK_CHOICES.items()}
        )
    )
    def configure(self, choices: dict[str, str]) -> None:
        for callback, choice in choices.items():
            self.agent.always(callback, CALLBACK_CHOICES[callback][choice][1])

    @rule(
        callback=st.sampled_from(sorted(CALLBACK_CHOICES)),
        data=st.data(),
    )
    def reconfigure(self, callback: str, data: st.DataObject) -> None:
        choice = data.draw(weighted_choice(CALLBACK_CHOICES[callback]))
        self.agent.always(callback, CALLBACK_CHOICES[callback][choice][1])

    # -------------------------------------------------------------- requests

    @rule(text=prompt_texts)
    def ask(self, text: str) -> None:
        ref, caller = self._new("ask")
        self.asks[caller] = ref
        self.refs.append(ref)
        effects = self.h.feed(self.h.machine.ask(ref, text, caller))
        self._apply(effects)
        if self.stopped:
            assert self.answers[caller] == 1

    @rule(text=prompt_texts, completion=st.booleans())
    def tell(self, text: str, completion: bool) -> None:
        ref, teller = self._new("tell")
        self.refs.append(ref)
        effects = self.h.feed(self.h.machine.tell(ref, text, teller, completion=completion))
        (immediate,) = [
            e
            for e in effects
            if isinstance(e, Reply) and e.to == teller and not isinstance(e.message, TellCompleted)
        ]
        assert isinstance(immediate.message, Accepted | Failure), immediate
        if isinstance(immediate.message, Accepted):
            assert immediate.message.ref == ref
            self.accepted_tells.add(ref)
        self.tells[teller] = (ref, completion)
        self._apply([e for e in effects if e is not immediate])

    @rule(event=st.integers(0, 9))
    def notify(self, event: int) -> None:
        _, notifier = self._new("notify")
        self._apply(self.h.feed(self.h.machine.notify(event, reply_to=notifier)), control=notifier)

    @rule(message=st.integers(0, 9))
    def info(self, message: int) -> None:
        self._apply(self.h.feed(self.h.machine.info(message)))

    @rule(data=st.data())
    def poll(self, data: st.DataObject) -> None:
        if not self.refs:
            return
        ref = data.draw(st.sampled_from(self.refs))
        result = self.h.machine.poll(ref)
        if ref in self.finished_tells:
            assert result == self.finished_tells[ref], "a finished result changed"
        elif result is not None and result.done:
            assert ref in self.accepted_tells
            self.finished_tells[ref] = result
        if self.running is not None and ref == self.running.ref:
            assert result is not None and result.state is PollState.PENDING

    # -------------------------------------------------------------- control

    @rule(data=st.data(), now=st.integers(0, 2))
    def interrupt(self, data: st.DataObject, now: int) -> None:
        if now:  # one time in three, or few turns would ever finish
            return
        target = data.draw(st.sampled_from([None, "running", "any"]))
        ref: str | None = None
        if target == "running" and self.running is not None:
            ref = self.running.ref
        elif target == "any" and self.refs:
            ref = data.draw(st.sampled_from(self.refs))
        _, interrupter = self._new("interrupt")
        was_running = self.running
        effects = self.h.feed(self.h.machine.interrupt(ref, interrupter))
        self._apply(effects, control=interrupter)
        hit = was_running is not None and ref in (None, was_running.ref)
        answer = next(e.message for e in effects if isinstance(e, Reply) and e.to == interrupter)
        assert isinstance(answer, Accepted if hit else Failure), (ref, was_running, answer)
        if not hit:
            assert effects == [Reply(interrupter, answer)], "a refused interrupt changed things"

    @rule(data=st.data())
    def cancel(self, data: st.DataObject) -> None:
        if not self.refs:
            return
        ref = data.draw(st.sampled_from(self.refs))
        _, canceller = self._new("cancel")
        self._apply(self.h.feed(self.h.machine.cancel(ref, canceller)), control=canceller)

    @rule(now=st.integers(0, 1))
    def halt(self, now: int) -> None:
        if now:  # one time in two: a halted agent runs nothing until resumed
            return
        _, halter = self._new("halt")
        self._apply(self.h.feed(self.h.machine.halt(halter)), control=halter)

    @rule()
    def resume(self) -> None:
        _, resumer = self._new("resume")
        self._apply(self.h.feed(self.h.machine.resume(resumer)), control=resumer)

    # -------------------------------------------------------------- the running turn

    @precondition(lambda self: self.running is not None)
    @rule(text=prompt_texts)
    def stream_event(self, text: str) -> None:
        assert self.running is not None
        turn_id = self.running.turn_id
        self._apply(self.h.feed(self.h.machine.stream_event(turn_id, Event.text_delta(text))))

    @precondition(lambda self: self.running is not None)
    @rule(text=prompt_texts)
    def turn_succeeded(self, text: str) -> None:
        assert self.running is not None
        turn = self.running
        machine = self.h.machine
        # The worker streams the terminal event first; handle_stream_event may fail the turn.
        self._apply(self.h.feed(machine.stream_event(turn.turn_id, Event.result(text))))
        still_running = self.running is not None and self.running.turn_id == turn.turn_id
        if still_running:
            self._end_running()
        effects = self.h.feed(machine.turn_succeeded(turn.turn_id, 5.0))
        if not still_running:
            assert effects == []
        self._apply(effects)

    @precondition(lambda self: self.running is not None)
    @rule()
    def turn_failed(self) -> None:
        assert self.running is not None
        turn_id = self.running.turn_id
        self._end_running()
        error = BackendError("provider failed", kind="server_error")
        self._apply(self.h.feed(self.h.machine.turn_failed(turn_id, error)))

    @precondition(lambda self: self.running is not None)
    @rule(seconds=st.floats(0, 20))
    def watchdog_fired(self, seconds: float) -> None:
        assert self.running is not None
        self.h.clock.advance(seconds)
        self._apply(self.h.feed(self.h.machine.watchdog_fired(self.running.turn_id)))

    @precondition(lambda self: bool(self.old_turns))
    @rule(data=st.data(), kind=st.sampled_from(["event", "success", "failure", "watchdog"]))
    def stale_turn_input(self, data: st.DataObject, kind: str) -> None:
        """Late input of a turn that already ended changes nothing and calls nobody."""
        turn_id = data.draw(st.sampled_from(self.old_turns)).turn_id
        machine = self.h.machine
        calls_before = len(self.agent.calls)
        if kind == "event":
            effects = machine.stream_event(turn_id, Event.text_delta("late"))
        elif kind == "success":
            effects = machine.turn_succeeded(turn_id, 5.0)
        elif kind == "failure":
            effects = machine.turn_failed(turn_id, BackendError("late", kind="server_error"))
        else:
            effects = machine.watchdog_fired(turn_id)
        assert effects == [] and len(self.agent.calls) == calls_before

    @rule(reason=st.sampled_from(["stop", "shutdown"]), now=st.integers(0, 7))
    def stop(self, reason: str, now: int) -> None:
        if now:  # stop ends the interesting part of a run: take it one time in eight
            return
        first = not self.stopped
        self.stopped = True
        effects = self.h.feed(self.h.machine.stop(reason))
        self._apply(effects)
        if first:
            self._check_everyone_answered()
        else:
            assert effects == []

    # -------------------------------------------------------------- invariants

    @invariant()
    def at_most_one_turn(self) -> None:
        machine = self.h.machine
        assert (machine.phase is Phase.PROCESSING) == (machine.current is not None)
        running_id = self.running.turn_id if self.running else None
        assert (machine.current.turn_id if machine.current else None) == running_id

    @invariant()
    def idle_and_not_halted_means_nothing_waits(self) -> None:
        machine = self.h.machine
        if machine.phase is Phase.IDLE and not machine.halted and not machine.stopped:
            assert not machine.mailbox and machine.self_chain is None
        if machine.halted:
            assert machine.phase is Phase.IDLE

    @invariant()
    def queued_bytes_add_up(self) -> None:
        machine = self.h.machine
        assert machine.mailbox_bytes == sum(r.size for r in machine.mailbox)

    def _check_everyone_answered(self) -> None:
        machine = self.h.machine
        assert machine.current is None and not machine.mailbox and machine.self_chain is None
        for caller in self.asks:
            assert self.answers[caller] == 1, f"ask {caller} answered {self.answers[caller]}x"
        for teller, (ref, completion) in self.tells.items():
            if ref not in self.accepted_tells:
                assert machine.poll(ref) is None
                continue
            result = machine.poll(ref)
            assert result is not None and result.done, f"tell {ref} left {result}"
            if completion:
                assert self.completions[teller] == 1, f"{teller} has no completion"

    def teardown(self) -> None:
        try:
            if not self.stopped:
                self.stop("shutdown", now=0)
        finally:
            _machine_log.disabled = False


MachineRun.TestCase.settings = settings(
    max_examples=500,
    stateful_step_count=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
test_random_sequences_keep_the_invariants = MachineRun.TestCase


def test_a_snapshot_is_typed_pickles_and_restores_into_a_fresh_machine() -> None:
    """The durable snapshot round trip (``_durable/record.py`` stores exactly this)."""
    old = Harness()
    old.ask("A")
    old.tell("B")
    snapshot = pickle.loads(pickle.dumps(old.machine.snapshot()))
    assert isinstance(snapshot, MachineSnapshot)
    assert snapshot.in_flight is not None and snapshot.in_flight[0].ref == "ref-A"
    assert [r.ref for r in snapshot.mailbox] == ["ref-B"]
    fresh = Harness()
    effects = fresh.feed(fresh.machine.restore(snapshot, []))
    failures = [e for e in effects if isinstance(e, Reply) and isinstance(e.message, Failure)]
    assert [f.to for f in failures] == ["caller-A"]
    failure = failures[0].message
    assert isinstance(failure, Failure) and isinstance(failure.error, AgentRestarted)
    assert fresh.turn.ref == "ref-B"  # the queued tell runs next; A is never re-run
