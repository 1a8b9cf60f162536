"""Acceptance tests of the Retry pattern (reference §5.10), scripted, multiprocTCPBase."""

from __future__ import annotations

import time

import pytest
from genagent_thespian.patterns.retry import RetryRunner

import genagent_thespian as g
from genagent_thespian.testing import Fail, Slow, wait_until

# multiprocTCPBase only: this pattern's actors make progress on their own (self-chains,
# timers, workers) while the test waits with wait_until; simpleSystemBase runs actors only
# inside the calling thread's own requests, so the run never advances (measured: every test
# of this module that drives a run times out there).
pytestmark = pytest.mark.usefixtures("agent_system")

RATE_LIMITED = Fail("rate_limited", "429 slow down")


def test_transient_failures_are_retried_with_back_off_until_success() -> None:
    runner = RetryRunner.start(
        backend="scripted", delays=[0.05, 0.1], script=[RATE_LIMITED, RATE_LIMITED, "ok"]
    )
    outcome = runner.run("the task", timeout=20)
    assert outcome.ok and outcome.result == "ok" and outcome.attempts == 3
    assert len(outcome.errors) == 2 and outcome.delays == [0.05, 0.1]
    history = g.backend_session("retry").history
    assert history == ("the task",) + ("The previous attempt failed. Retry the task: the task",) * 2
    runner.stop()


def test_giving_up_after_max_attempts_reports_every_error() -> None:
    runner = RetryRunner.start(backend="scripted", delays=[0.01], default=RATE_LIMITED)
    outcome = runner.run("t", timeout=20)
    assert outcome.phase == "failed" and outcome.attempts == 3 and len(outcome.errors) == 3
    runner.stop()


def test_retry_after_is_honoured_and_permanent_errors_are_not_retried() -> None:
    runner = RetryRunner.start(
        backend="scripted",
        delays=[0.01],
        script=[Fail("rate_limited", "wait", retry_after=0.2), "ok", Fail("authentication")],
    )
    assert runner.run("a", timeout=20).delays == [0.2]
    outcome = runner.run("b", timeout=20)
    assert outcome.phase == "failed" and outcome.attempts == 1
    runner.stop()


def test_an_interrupted_attempt_is_not_retried() -> None:
    runner = RetryRunner.start(backend="scripted", delays=[0.01], script=[Slow("x " * 50, 30)])
    job = runner.submit("long")
    wait_until(lambda: g.status("retry").state == "processing", timeout=10)
    g.interrupt("retry")
    outcome = runner.result(job, timeout=20)
    assert outcome.phase == "failed" and "TurnInterrupted" in outcome.errors[0]
    runner.stop()


def test_the_back_off_never_blocks_the_agent_and_can_be_cancelled() -> None:
    runner = RetryRunner.start(backend="scripted", delays=[60.0], script=[RATE_LIMITED, "ok"])
    job = runner.submit("t")
    wait_until(lambda: (runner.job(job) or {}).get("phase") == "waiting", timeout=10)
    started = time.monotonic()
    status = g.status("retry")  # answered at once during a 60 s back-off
    assert status.state == "idle" and time.monotonic() - started < 5
    runner.cancel(job)
    assert runner.result(job, timeout=10).phase == "cancelled"
    assert g.backend_session("retry").remaining == 1  # the retry never ran
    started = time.monotonic()
    runner.stop()
    assert time.monotonic() - started < 10


def test_a_plain_ask_with_no_delay_keeps_waiting_for_the_final_outcome() -> None:
    runner = RetryRunner.start(backend="scripted", delays=[0], script=[RATE_LIMITED, "ok"])
    assert g.ask("retry", "the task", timeout=20).text == "ok"
    assert g.backend_session("retry").history == ("the task", "the task")
    runner.stop()
