"""Acceptance tests of the Debate pattern (reference §5.3), scripted, multiprocTCPBase."""

from __future__ import annotations

import pytest
from genagent_thespian.patterns.debate import Debate

import genagent_thespian as g
from genagent_thespian.testing import Fail, wait_until

# multiprocTCPBase only: this pattern's actors make progress on their own (self-chains,
# timers, workers) while the test waits with wait_until; simpleSystemBase runs actors only
# inside the calling thread's own requests, so the run never advances (measured: every test
# of this module that drives a run times out there).
pytestmark = pytest.mark.usefixtures("agent_system")


def test_both_sides_speak_every_round_and_see_every_statement() -> None:
    debate = Debate.start(
        "tabs vs spaces",
        backend="scripted",
        max_rounds=3,
        a_options={"script": ["A1", "A2", "A3"]},
        b_options={"script": ["B1", "B2", "B3"]},
    )
    result = debate.result(timeout=20)
    order = [("debate-a", "A1"), ("debate-b", "B1"), ("debate-a", "A2"), ("debate-b", "B2")]
    order += [("debate-a", "A3"), ("debate-b", "B3")]
    assert result.phase == "done"
    assert result.transcript == order and result.transcript_b == order
    b_prompts = g.backend_session("debate-b").history
    assert [any(f'"{a}"' in p for p in b_prompts) for a in ("A1", "A2", "A3")] == [True] * 3
    a_prompts = g.backend_session("debate-a").history
    assert '"B2"' in a_prompts[2]
    wait_until(lambda: g.status("debate-a").halted and g.status("debate-b").halted, timeout=10)
    debate.stop()


def test_one_round() -> None:
    debate = Debate.start(
        "x",
        backend="scripted",
        max_rounds=1,
        a_options={"script": ["A1"]},
        b_options={"script": ["B1"]},
    )
    assert [t for _, t in debate.result(timeout=20).transcript] == ["A1", "B1"]
    debate.stop()


def test_a_failure_ends_the_debate_on_both_sides() -> None:
    debate = Debate.start(
        "x",
        backend="scripted",
        max_rounds=3,
        a_options={"script": ["A1", "A2"]},
        b_options={"script": ["B1", Fail("server_error", "b broke")]},
    )
    result = debate.result(timeout=20)
    assert result.phase == "failed" and "b broke" in (result.error or "")
    assert [t for _, t in result.transcript] == ["A1", "B1", "A2"]
    wait_until(lambda: g.status("debate-a").halted and g.status("debate-b").halted, timeout=10)
    debate.stop()
