"""Acceptance tests of the Research pattern (reference §5.2), scripted, multiprocTCPBase."""

from __future__ import annotations

import pytest
from genagent_thespian.patterns.research import Research

import genagent_thespian as g
from genagent_thespian.testing import Fail, wait_until

# multiprocTCPBase only: this pattern's actors make progress on their own (self-chains,
# timers, workers) while the test waits with wait_until; simpleSystemBase runs actors only
# inside the calling thread's own requests, so the run never advances (measured: every test
# of this module that drives a run times out there).
pytestmark = pytest.mark.usefixtures("agent_system")


def test_phases_self_chain_to_a_report() -> None:
    run = Research.start(
        "tides",
        backend="scripted",
        max_sub_questions=3,
        script=["Q1\n\n  Q2  \nQ3\nQ4", "A1", "A2", "A3", "REPORT"],
    )
    result = run.result(timeout=20)
    assert result.ok and result.phase == "done"
    assert result.sub_questions == ["Q1", "Q2", "Q3"]
    assert result.answered == [("Q1", "A1"), ("Q2", "A2"), ("Q3", "A3")]
    assert result.final_report == "REPORT"
    assert result.turns == 5
    history = g.backend_session("research").history
    assert history[1:4] == tuple(
        f"Answer this sub-question in 2-3 concise sentences: Q{i}" for i in (1, 2, 3)
    )
    assert "Q: Q2\nA: A2" in history[4]
    wait_until(lambda: g.status("research").halted, timeout=10)
    run.stop()


def test_failure_halts_in_failed_with_the_error() -> None:
    run = Research.start("x", backend="scripted", script=["Q1\nQ2", Fail("server_error", "boom")])
    result = run.result(timeout=20)
    assert result.phase == "failed" and result.failed_phase == "answering"
    assert "boom" in (result.last_error or "")
    assert g.status("research").halted
    run.stop()


def test_empty_listing_finishes_at_once() -> None:
    run = Research.start("x", backend="scripted", script=["   \n"])
    result = run.result(timeout=20)
    assert result.phase == "done" and result.sub_questions == [] and result.turns == 1
    run.stop()


def test_prompt_after_done_is_recorded_not_a_crash() -> None:
    run = Research.start("x", backend="scripted", script=["", "later"])
    run.result(timeout=20)
    g.resume("research")
    assert g.ask("research", "one more", timeout=10).text == "later"
    wait_until(lambda: run.state()["extra_turns"] == ["later"], timeout=10)
    assert run.state()["phase"] == "done"
    run.stop()
