"""Acceptance tests of the Checkpointer pattern (reference §5.9), scripted, multiprocTCPBase."""

from __future__ import annotations

from pathlib import Path

import pytest
from genagent_thespian.patterns.checkpointer import Checkpointer

import genagent_thespian as g
from genagent_thespian.testing import Fail, Gate, open_gate, wait_until

# multiprocTCPBase only: this pattern's actors make progress on their own (self-chains,
# timers, workers) while the test waits with wait_until; simpleSystemBase runs actors only
# inside the calling thread's own requests, so the run never advances (measured: every test
# of this module that drives a run times out there).
pytestmark = pytest.mark.usefixtures("agent_system")


def test_pause_idle_for_review_then_approve_through_every_step() -> None:
    work = Checkpointer.start("plan", backend="scripted", script=["D1", "D2", "D3"])
    review = work.wait_for_review(timeout=10)
    assert (review.step, review.text) == (1, "D1")
    status = g.status("checkpointer")
    assert status.state == "idle" and not status.halted  # paused idle, not halted
    work.approve(review.draft_id)
    review = work.wait_for_review(after=review.draft_id, timeout=10)
    assert (review.step, review.text) == (2, "D2")
    work.approve(review.draft_id)
    review = work.wait_for_review(after=review.draft_id, timeout=10)
    assert "D2" in g.backend_session("checkpointer").history[2]  # builds on the approved draft
    work.approve(review.draft_id)
    result = work.result(timeout=10)
    assert [d["text"] for d in result.drafts] == ["D1", "D2", "D3"] and not result.finished_early
    wait_until(lambda: g.status("checkpointer").halted, timeout=10)
    work.stop()


def test_revise_redrafts_the_same_step_with_the_feedback() -> None:
    work = Checkpointer.start("plan", backend="scripted", script=["D1", "D1b"])
    first = work.wait_for_review(timeout=10)
    work.revise(first.draft_id, "shorter please")
    second = work.wait_for_review(after=first.draft_id, timeout=10)
    assert (second.step, second.text) == (1, "D1b")
    assert "shorter please" in g.backend_session("checkpointer").history[1]
    work.stop()


def test_finish_stops_early_and_leaves_the_script_unconsumed() -> None:
    work = Checkpointer.start("plan", backend="scripted", script=["D1", "D2", "D3"])
    review = work.wait_for_review(timeout=10)
    work.finish(review.draft_id)
    result = work.result(timeout=10)
    assert result.finished_early and result.final_draft == "D1"
    assert g.backend_session("checkpointer").remaining == 2
    work.stop()


def test_duplicate_and_late_reviews_never_apply_to_another_draft(tmp_path: Path) -> None:
    gate = tmp_path / "gate"
    work = Checkpointer.start("plan", backend="scripted", script=["D1", Gate(str(gate), "D2")])
    first = work.wait_for_review(timeout=10)
    work.approve(first.draft_id)
    work.approve(first.draft_id)  # a double click: arrives while step 2 is drafting
    open_gate(gate)
    second = work.wait_for_review(after=first.draft_id, timeout=10)
    assert (second.step, second.text) == (2, "D2")
    work.approve(first.draft_id)  # late: names a draft that is no longer awaiting review
    state = wait_until(lambda: len((s := work.state())["rejected_reviews"]) == 2 and s, timeout=10)
    assert state["phase"] == "awaiting_review" and state["current_step"] == 2
    assert [r["draft_id"] for r in state["rejected_reviews"]] == [first.draft_id] * 2
    work.stop()


def test_a_failed_turn_waits_for_a_retry() -> None:
    work = Checkpointer.start(
        "plan", backend="scripted", script=[Fail("server_error", "flaky"), "D1"]
    )
    failed = work.wait_for_review(timeout=10)
    assert failed.text is None and "flaky" in (failed.error or "")
    work.approve(failed.draft_id)  # nothing to approve: rejected
    work.retry(failed.draft_id)
    review = work.wait_for_review(after=failed.draft_id, timeout=10)
    assert (review.step, review.text) == (1, "D1")
    assert work.state()["rejected_reviews"][0]["decision"] == "approve"
    work.stop()
