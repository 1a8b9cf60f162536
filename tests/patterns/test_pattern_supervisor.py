"""Acceptance tests of the Supervisor pattern (reference §5.5), scripted, multiprocTCPBase."""

from __future__ import annotations

import os
import signal
from typing import Any

import pytest
from genagent_thespian.patterns.supervisor import Supervisor
from support_patterns import always_fail, echo_task, fail_t2, hang_on_t2

import genagent_thespian as g
from genagent_thespian.testing import Fail, wait_until

# multiprocTCPBase only: this pattern's actors make progress on their own (self-chains,
# timers, workers) while the test waits with wait_until; simpleSystemBase runs actors only
# inside the calling thread's own requests, so the run never advances (measured: every test
# of this module that drives a run times out there).
pytestmark = pytest.mark.usefixtures("agent_system")


def _workers_gone(result: Any) -> bool:  # Any: the pattern's result object
    names = set(g.list_agents())
    return not names.intersection(result.workers)


def test_fan_out_fan_in_synthesis_and_workers_stopped() -> None:
    run = Supervisor.start(
        "topic",
        backend="scripted",
        script=["t1\nt2\nt3\nt4", "FINAL"],
        max_workers=3,
        worker_options={"script": [echo_task]},
    )
    result = run.result(timeout=30)
    assert result.ok and result.final_output == "FINAL"
    assert result.sub_tasks == ["t1", "t2", "t3"]
    assert result.results == {"t1": "R[t1]", "t2": "R[t2]", "t3": "R[t3]"}
    synthesis = g.backend_session("supervisor").history[1]
    assert all(f"R[t{i}]" in synthesis for i in (1, 2, 3))
    wait_until(lambda: _workers_gone(result), timeout=15)
    run.stop()


def test_a_failing_worker_still_synthesizes() -> None:
    run = Supervisor.start(
        "topic",
        backend="scripted",
        script=["t1\nt2\nt3", "FINAL"],
        worker_options={"script": [fail_t2]},
    )
    result = run.result(timeout=30)
    assert result.ok and set(result.results) == {"t1", "t3"}
    assert "t2 broke" in result.failures["t2"]
    run.stop()


def test_all_workers_failing_and_empty_plan_fail_the_run() -> None:
    run = Supervisor.start(
        "topic", backend="scripted", script=["t1\nt2"], worker_options={"script": [always_fail]}
    )
    result = run.result(timeout=30)
    assert result.phase == "failed" and result.error == "all_workers_failed"
    wait_until(lambda: _workers_gone(result), timeout=15)
    run.stop()
    empty = Supervisor.start("topic", backend="scripted", name="empty", script=["  \n"])
    assert empty.result(timeout=30).error == "no_sub_tasks"
    empty.stop()


def test_a_hung_worker_times_out_and_is_stopped() -> None:
    run = Supervisor.start(
        "topic",
        backend="scripted",
        script=["t1\nt2", "FINAL"],
        worker_options={"script": [hang_on_t2]},
        worker_timeout=4.0,  # generous: t1 must answer in time even on a loaded machine
    )
    result = run.result(timeout=30)
    assert result.ok and result.results == {"t1": "R[t1]"}
    assert "did not answer" in result.failures["t2"]
    wait_until(lambda: _workers_gone(result), timeout=15)
    run.stop()


def test_a_worker_that_dies_is_noticed_without_waiting_for_the_timeout() -> None:
    run = Supervisor.start(
        "topic",
        backend="scripted",
        script=["t1\nt2", "FINAL"],
        worker_options={"script": [hang_on_t2]},
        worker_timeout=600.0,
    )
    hung = wait_until(
        lambda: next(
            (w for w in run.state().get("workers", []) if w.endswith("w1") and _busy(w)), None
        ),
        timeout=15,
    )
    os.kill(g.status(hung).pid, signal.SIGKILL)
    result = run.result(timeout=30)
    assert result.ok and "exited" in result.failures["t2"]
    run.stop()


def test_a_failed_plan_fails_the_run_and_second_run_reuses_nothing() -> None:
    run = Supervisor.start("topic", backend="scripted", script=[Fail("server_error", "no plan")])
    result = run.result(timeout=30)
    assert result.phase == "failed" and "no plan" in (result.error or "")
    run.stop()


def _busy(name: str) -> bool:
    try:
        return g.status(name).state == "processing"
    except g.AgentNotFound:
        return False


def test_workers_that_cannot_start_are_failures() -> None:
    run = Supervisor.start(
        "topic", backend="scripted", script=["t1\nt2"], worker_options={"bogus_option": 1}
    )
    result = run.result(timeout=30)
    assert result.phase == "failed" and result.error == "all_workers_failed"
    assert all("did not start" in error for error in result.failures.values())
    run.stop()
