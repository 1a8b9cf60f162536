"""Behaviour of one agent through the public API, on every supported system base.

Each test runs once on ``simpleSystemBase`` and once on ``multiprocTCPBase`` through the
``any_agent_system`` fixture. Callbacks are observed through the ``Recorder`` agent's log
file, so assertions are exact (order and arguments), not "it ran".
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from support_agents import Minimal, Recorder, calls

import genagent_thespian as g
from genagent_thespian.messages import PollState
from genagent_thespian.testing import Crash, Exit, Fail, Slow, wait_until

pytestmark = pytest.mark.usefixtures("any_agent_system")


def start(tmp_path: Path, name: str = "a", **options: Any) -> Path:
    log = tmp_path / f"{name}.log"
    g.start_agent(Recorder, name=name, backend="scripted", log=str(log), **options)
    return log


def wait_done(name: str, ref: str, timeout: float = 10.0) -> g.PollResult:
    result: g.PollResult = wait_until(lambda: (r := g.poll(name, ref)).done and r, timeout=timeout)
    return result


def text_of(result: g.PollResult) -> str:
    """The response text of a completed poll result."""
    assert result.response is not None, result
    return result.response.text


# --- startup


def test_a_new_agent_is_idle_with_nothing_running(tmp_path: Path) -> None:
    start(tmp_path)
    status = g.status("a")
    assert (status.state, status.halted, status.queued, status.current_ref) == (
        "idle",
        False,
        0,
        None,
    )
    assert status.backend == "scripted"
    assert g.list_agents() == ["a"]
    assert g.whereis("a") is not None


def test_init_agent_then_pre_run_run_once_before_any_turn(tmp_path: Path) -> None:
    log = start(tmp_path, script=["hi"])
    g.ask("a", "q")
    assert [r["cb"] for r in calls(log)][:4] == [
        "init_agent",
        "pre_run",
        "pre_turn",
        "handle_response",
    ]


def test_duplicate_name_is_rejected_and_the_first_agent_keeps_serving(tmp_path: Path) -> None:
    start(tmp_path, script=["first"])
    with pytest.raises(g.AgentAlreadyExists) as info:
        g.start_agent(Minimal, name="a", backend="scripted")
    assert info.value.agent == "a"
    assert g.ask("a", "q").text == "first"


def test_stop_deregisters_and_the_name_can_be_reused(tmp_path: Path) -> None:
    log = start(tmp_path)
    g.stop("a")
    assert g.whereis("a") is None
    assert g.list_agents() == []
    assert calls(log, "terminate_agent") == [{"cb": "terminate_agent", "reason": "stop"}]
    g.start_agent(Minimal, name="a", backend="scripted", script=["again"])
    assert g.ask("a", "q").text == "again"


def test_stopping_an_unknown_name_is_agent_not_found() -> None:
    with pytest.raises(g.AgentNotFound):
        g.stop("nobody")


# --- ask / tell / poll


def test_ask_returns_the_assembled_response(tmp_path: Path) -> None:
    start(tmp_path, script=["hello there"])
    response = g.ask("a", "what?")
    assert response.text == "hello there"
    assert response.prompt == "what?"
    assert response.usage is not None and response.usage.output_tokens == 2
    assert response.session_id and response.session_id.startswith("scripted-")
    assert [e.kind for e in response.events][-1] == "result"
    assert g.status("a").state == "idle"


def test_backend_failure_reaches_the_caller_and_handle_error(tmp_path: Path) -> None:
    log = start(tmp_path, script=[Fail("rate_limited", "slow down", retry_after=2.5), "ok"])
    with pytest.raises(g.BackendError) as info:
        g.ask("a", "q")
    assert (info.value.kind, info.value.retryable, info.value.retry_after) == (
        "rate_limited",
        True,
        2.5,
    )
    assert info.value.agent == "a"
    assert calls(log, "handle_error")[0]["kind"] == "rate_limited"
    assert g.ask("a", "again").text == "ok"


def test_tell_then_poll_gives_the_response_and_results_stay_readable(tmp_path: Path) -> None:
    start(tmp_path, script=["told"])
    ref = g.tell("a", "q")
    result = wait_done("a", ref)
    assert result.state is PollState.COMPLETED and text_of(result) == "told"
    assert g.poll("a", ref) == result


def test_a_failed_tell_polls_as_failed(tmp_path: Path) -> None:
    start(tmp_path, script=[Fail("server_error", "boom")])
    ref = g.tell("a", "q")
    result = wait_done("a", ref)
    assert result.state is PollState.FAILED and isinstance(result.error, g.BackendError)


def test_poll_of_an_unknown_ref_is_request_not_found(tmp_path: Path) -> None:
    start(tmp_path)
    result = g.poll("a", "0" * 32)
    assert result.state is PollState.FAILED and isinstance(result.error, g.RequestNotFound)


def test_tell_queued_behind_a_slow_turn_is_pending_then_completes_in_order(tmp_path: Path) -> None:
    log = start(tmp_path, script=[Slow("slow one", 0.6), "second", "third"])
    first = g.tell("a", "one")
    second = g.tell("a", "two")
    third = g.tell("a", "three")
    assert g.poll("a", second).state is PollState.PENDING
    assert g.status("a").queued == 2
    assert text_of(wait_done("a", third)) == "third"
    assert text_of(wait_done("a", first)) == "slow one"
    assert [r["prompt"] for r in calls(log, "handle_response")] == ["one", "two", "three"]


def test_tell_results_are_bounded_by_insertion_order(tmp_path: Path) -> None:
    start(tmp_path, default="x", max_tell_results=2)
    refs = [g.tell("a", f"q{i}") for i in range(3)]
    wait_done("a", refs[2])
    assert isinstance(g.poll("a", refs[0]).error, g.RequestNotFound)
    assert g.poll("a", refs[1]).state is PollState.COMPLETED


# --- self-chain, halt, resume


def test_self_chain_runs_ahead_of_queued_prompts(tmp_path: Path) -> None:
    log = start(
        tmp_path, script=[Slow("first", 0.3), "chained", "queued"], responses=["prompt:chain me"]
    )
    ref = g.tell("a", "first")
    queued = g.tell("a", "queued")
    wait_done("a", queued)
    wait_done("a", ref)
    assert [r["prompt"] for r in calls(log, "handle_response")] == ["first", "chain me", "queued"]


def test_halt_freezes_the_mailbox_and_resume_drains_it(tmp_path: Path) -> None:
    log = start(tmp_path, script=["done", "later"], responses=["halt"])
    g.ask("a", "go")
    status = g.status("a")
    assert (status.state, status.halted) == ("idle", True)
    ref = g.tell("a", "waits")
    assert g.poll("a", ref).state is PollState.PENDING
    assert g.status("a").queued == 1
    assert [r["cb"] for r in calls(log, "post_run")] == ["post_run"]
    g.resume("a")
    assert text_of(wait_done("a", ref)) == "later"
    assert g.status("a").halted is False


def test_external_halt_while_idle_and_resume(tmp_path: Path) -> None:
    log = start(tmp_path, script=["x"])
    g.halt("a")
    g.halt("a")
    assert g.status("a").halted is True
    assert len(calls(log, "post_run")) == 1
    g.resume("a")
    assert g.ask("a", "q").text == "x"


# --- notify


def test_notify_when_idle_runs_handle_event_and_its_prompt(tmp_path: Path) -> None:
    log = start(tmp_path, script=["from event"], events={"go": "prompt:triggered"})
    g.notify("a", "go")
    wait_until(lambda: g.status("a").turns == 1)  # status also drives simpleSystemBase
    assert calls(log, "handle_response")[0]["prompt"] == "triggered"


def test_notify_can_halt(tmp_path: Path) -> None:
    start(tmp_path, events={"stop please": "halt"})
    g.notify("a", "stop please")
    assert g.status("a").halted is True


def test_notifications_during_a_turn_are_buffered_and_all_applied_in_order(tmp_path: Path) -> None:
    log = start(tmp_path, script=[Slow("slow", 0.5)])
    ref = g.tell("a", "q")
    wait_until(lambda: g.status("a").state == "processing")
    for index in range(5):
        g.notify("a", f"e{index}")
    assert g.status("a").pending_notifications == 5
    wait_done("a", ref)
    records = calls(log, "handle_response", "handle_event", "post_turn")
    assert [r["cb"] for r in records] == ["handle_response", "post_turn"] + ["handle_event"] * 5
    assert [r["event"] for r in records[2:]] == [f"e{i}" for i in range(5)]
    assert records[-1]["count"] == 5


def test_handle_event_failure_reaches_the_notifier_and_the_agent_keeps_serving(
    tmp_path: Path,
) -> None:
    start(tmp_path, script=["still fine"], events={"bad": "raise", "worse": "bad"})
    with pytest.raises(g.CallbackError) as info:
        g.notify("a", "bad")
    assert info.value.callback == "handle_event" and info.value.agent == "a"
    with pytest.raises(g.CallbackError):
        g.notify("a", "worse")
    assert g.ask("a", "q").text == "still fine"


# --- interrupt, watchdog, crashes


def test_interrupt_ends_the_running_ask_and_the_agent_serves_the_next_one(tmp_path: Path) -> None:
    log = start(tmp_path, script=[Slow("a b c d e f g h", 30.0), "next"])
    ref = g.tell("a", "long")
    # The provider has taken the turn (the script moved on): interrupted before that, on a
    # busy machine, the turn never reached it and "q" would get the slow item (measured).
    wait_until(lambda: g.status("a").current_ref == ref and g.backend_session("a").position == 1)
    assert g.interrupt("a") == ref
    result = wait_done("a", ref)
    assert isinstance(result.error, g.TurnInterrupted)
    assert calls(log, "handle_error")[0]["error"] == "TurnInterrupted"
    assert g.ask("a", "q").text == "next"


def test_interrupt_with_another_ref_or_when_idle_changes_nothing(tmp_path: Path) -> None:
    start(tmp_path, script=[Slow("a b c", 30.0)])
    with pytest.raises(g.RequestNotFound):
        g.interrupt("a")
    ref = g.tell("a", "long")
    wait_until(lambda: g.status("a").current_ref == ref)
    with pytest.raises(g.RequestNotFound):
        g.interrupt("a", ref="f" * 32)
    assert g.status("a").current_ref == ref
    g.interrupt("a", ref=ref)


def test_cancel_removes_a_queued_tell(tmp_path: Path) -> None:
    start(tmp_path, script=[Slow("a b", 30.0), "never"])
    running = g.tell("a", "long")
    queued = g.tell("a", "queued")
    g.cancel("a", queued)
    assert isinstance(g.poll("a", queued).error, g.TurnCancelled)
    with pytest.raises(g.RequestNotFound):
        g.cancel("a", running)
    g.interrupt("a")


def test_watchdog_ends_a_long_turn_with_turn_timeout(tmp_path: Path) -> None:
    log = start(tmp_path, script=[Slow("a b c d", 30.0), "after"], watchdog=0.3)
    with pytest.raises(g.TurnTimeout):
        g.ask("a", "long")
    assert calls(log, "handle_error")[0]["error"] == "TurnTimeout"
    assert g.ask("a", "q").text == "after"


def test_an_exception_while_streaming_is_turn_crashed_and_the_agent_survives(
    tmp_path: Path,
) -> None:
    start(tmp_path, script=[Crash("kaboom", after=1), "survived"])
    with pytest.raises(g.TurnCrashed):
        g.ask("a", "q")
    assert g.ask("a", "q").text == "survived"


def test_the_worker_process_dying_is_turn_crashed_and_a_new_worker_serves(tmp_path: Path) -> None:
    start(tmp_path, script=[Exit(3), "new worker"])
    with pytest.raises(g.TurnCrashed):
        g.ask("a", "q")
    assert g.ask("a", "q").text == "new worker"


def test_a_backend_without_a_terminal_event_is_a_typed_error(tmp_path: Path) -> None:
    start(tmp_path, script=[[g.Event.text_delta("partial")], "ok"])
    with pytest.raises(g.BackendError) as info:
        g.ask("a", "q")
    assert info.value.kind == "no_terminal_event"
    assert g.ask("a", "q").text == "ok"


def test_handle_error_prompt_retries_under_the_same_ask(tmp_path: Path) -> None:
    log = start(
        tmp_path, script=[Fail("overloaded", "busy"), "second try"], errors=["prompt:retry please"]
    )
    response = g.ask("a", "q")
    assert response.text == "second try"
    assert response.prompt == "retry please"
    assert [r["cb"] for r in calls(log, "handle_error", "handle_response")] == [
        "handle_error",
        "handle_response",
    ]


# --- hooks and callbacks


def test_pre_turn_rewrite_reaches_the_backend(tmp_path: Path) -> None:
    start(tmp_path, script=["x"], pre_turn={"original": "rewrite:rewritten"})
    response = g.ask("a", "original")
    assert response.prompt == "rewritten"
    assert g.backend_session("a").history == ("rewritten",)


def test_pre_turn_skip_and_halt_are_typed_errors(tmp_path: Path) -> None:
    start(tmp_path, script=["x"], pre_turn={"skip me": "skip", "halt me": "halt"})
    with pytest.raises(g.TurnSkipped):
        g.ask("a", "skip me")
    with pytest.raises(g.TurnHalted):
        g.ask("a", "halt me")
    assert g.status("a").halted is True
    assert g.backend_session("a").history == ()


def test_callback_exceptions_and_bad_returns_become_callback_errors(tmp_path: Path) -> None:
    start(tmp_path, script=["one", "two", "three"], responses=["raise", "bad"])
    with pytest.raises(g.CallbackError) as info:
        g.ask("a", "q1")
    assert info.value.callback == "handle_response"
    with pytest.raises(g.CallbackError):
        g.ask("a", "q2")
    assert g.ask("a", "q3").text == "three"


def test_post_turn_sees_every_outcome_after_the_decision(tmp_path: Path) -> None:
    log = start(tmp_path, script=["ok", Fail("server_error")])
    g.ask("a", "q1")
    with pytest.raises(g.BackendError):
        g.ask("a", "q2")
    records = calls(log, "handle_response", "handle_error", "post_turn")
    assert [(r["cb"], r.get("outcome")) for r in records] == [
        ("handle_response", None),
        ("post_turn", "Response"),
        ("handle_error", None),
        ("post_turn", "BackendError"),
    ]


def test_stream_events_reach_handle_stream_event_and_survive_to_handle_error(
    tmp_path: Path,
) -> None:
    log = start(tmp_path, script=["ok", Crash("mid stream", after=2)])
    g.ask("a", "q1")
    with pytest.raises(g.TurnCrashed):
        g.ask("a", "q2")
    ok, failed = calls(log, "handle_response")[0], calls(log, "handle_error")[0]
    assert ok["stream_kinds"] == ["session_started", "text_delta", "text", "usage", "result"]
    assert failed["stream_kinds"] == ["session_started", "text_delta", "text_delta"]


def test_defaults_of_a_minimal_implementation(tmp_path: Path) -> None:
    g.start_agent(Minimal, name="m", backend="scripted", script=[Fail("server_error"), "fine"])
    with pytest.raises(g.BackendError):
        g.ask("m", "q")
    g.notify("m", {"any": "event"})
    assert g.ask("m", "q").text == "fine"


# --- bad input


@pytest.mark.parametrize("prompt", [None, 42, b"bytes", "", ["list"]])
def test_a_prompt_that_is_not_a_non_empty_str_is_invalid(tmp_path: Path, prompt: object) -> None:
    start(tmp_path)
    with pytest.raises(g.InvalidPrompt):
        g.ask("a", prompt)  # type: ignore[arg-type]  # the wrong type is the point
    with pytest.raises(g.InvalidPrompt):
        g.tell("a", prompt)  # type: ignore[arg-type]  # the wrong type is the point


@pytest.mark.parametrize(
    "call",
    [
        lambda: g.ask("ghost", "q"),
        lambda: g.tell("ghost", "q"),
        lambda: g.poll("ghost", "r"),
        lambda: g.notify("ghost", "e"),
        lambda: g.interrupt("ghost"),
        lambda: g.cancel("ghost", "r"),
        lambda: g.halt("ghost"),
        lambda: g.resume("ghost"),
        lambda: g.status("ghost"),
    ],
)
def test_every_call_to_an_unknown_name_is_agent_not_found(call: Callable[[], object]) -> None:
    with pytest.raises(g.AgentNotFound) as info:
        call()
    assert info.value.agent == "ghost"


@pytest.mark.parametrize(
    ("options", "fragment"),
    [
        ({"watchdog": -1}, "watchdog"),
        ({"watchdog": 0}, "watchdog"),
        ({"watchdog": "soon"}, "watchdog"),
        ({"max_queued": -5}, "max_queued"),
        ({"restart": "sometimes"}, "restart"),
        ({"backend": "no-such-backend"}, "no-such-backend"),
        ({"backend": 12}, "backend"),
    ],
)
def test_invalid_start_options_are_rejected_with_the_option_named(
    options: dict[str, Any], fragment: str
) -> None:
    arguments = {"name": "bad", "backend": "scripted", **options}
    with pytest.raises(g.InvalidOption) as info:
        g.start_agent(Minimal, **arguments)
    assert fragment in str(info.value)
    assert g.whereis("bad") is None


def test_unknown_backend_options_fail_the_start_with_invalid_option(tmp_path: Path) -> None:
    with pytest.raises(g.InvalidOption) as info:
        g.start_agent(Recorder, name="b", backend="scripted", backend_options={"bogus": 1})
    assert "bogus" in str(info.value) and info.value.agent == "b"
    assert g.whereis("b") is None


def test_unknown_option_keys_are_rejected_when_the_agent_declares_its_options() -> None:
    from support_agents import Strict

    with pytest.raises(g.InvalidOption) as info:
        g.start_agent(Strict, name="s", backend="scripted", typo=1)
    assert "typo" in str(info.value)


@pytest.mark.parametrize("rule", [{"init": "raise"}, {"pre_run": "raise"}])
def test_a_failing_init_agent_or_pre_run_fails_the_start(
    tmp_path: Path, rule: dict[str, str]
) -> None:
    with pytest.raises(g.AgentStartFailed) as info:
        start(tmp_path, name="f", **rule)
    assert info.value.agent == "f"
    assert g.whereis("f") is None
    start(tmp_path, name="f")


def test_impl_must_be_a_genagent_subclass() -> None:
    from support_agents import NotAnAgent

    with pytest.raises(g.InvalidOption):
        g.start_agent(NotAnAgent, name="x", backend="scripted")  # type: ignore[arg-type]


def test_the_mailbox_is_bounded_and_rejects_with_agent_overloaded(tmp_path: Path) -> None:
    start(tmp_path, script=[Slow("a b", 30.0)], max_queued=2)
    g.tell("a", "running")
    g.tell("a", "queued 1")
    g.tell("a", "queued 2")
    with pytest.raises(g.AgentOverloaded) as info:
        g.tell("a", "one too many")
    assert info.value.limit == "count"
    assert g.status("a").queued == 2
    g.interrupt("a")
