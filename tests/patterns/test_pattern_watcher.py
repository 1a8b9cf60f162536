"""Acceptance tests of the Watcher pattern (reference §5.7), scripted, multiprocTCPBase."""

from __future__ import annotations

from pathlib import Path

import pytest
from genagent_thespian.patterns.watcher import Watcher

import genagent_thespian as g
from genagent_thespian.testing import Fail, Gate, open_gate, wait_until

# multiprocTCPBase only: this pattern's actors make progress on their own (self-chains,
# timers, workers) while the test waits with wait_until; simpleSystemBase runs actors only
# inside the calling thread's own requests, so the run never advances (measured: every test
# of this module that drives a run times out there).
pytestmark = pytest.mark.usefixtures("agent_system")


def test_boring_events_are_ignored_and_interesting_ones_dispatch() -> None:
    watcher = Watcher.start(backend="scripted", script=["diagnosis"])
    assert g.status("watcher").turns == 0  # nothing runs before an event
    watcher.feed(("ci_result", "passed"))
    watcher.feed(("timer", 1))
    watcher.feed("noise")
    wait_until(lambda: watcher.state()["ignored"] == 3, timeout=10)
    watcher.feed(("ci_result", "failed", "test_auth timed out"))
    [action] = watcher.wait_for_actions(1, timeout=10)
    assert action["status"] == "ok" and action["text"] == "diagnosis"
    assert "test_auth timed out" in g.backend_session("watcher").history[0]
    watcher.stop()


def test_events_during_a_turn_are_not_lost_and_run_in_order(tmp_path: Path) -> None:
    gate = tmp_path / "gate"
    watcher = Watcher.start(backend="scripted", script=[Gate(str(gate), "r1"), "r2", "r3"])
    watcher.feed(("pr_opened", "ann", "one"))
    wait_until(lambda: g.status("watcher").state == "processing", timeout=10)
    watcher.feed(("pr_opened", "bob", "two"))
    watcher.feed(("pr_opened", "cy", "three"))
    open_gate(gate)
    actions = watcher.wait_for_actions(3, timeout=15)
    assert [a["text"] for a in actions] == ["r1", "r2", "r3"]
    assert [who in a["event"] for who, a in zip(("ann", "bob", "cy"), actions, strict=True)] == [
        True
    ] * 3
    history = g.backend_session("watcher").history
    assert history[1] == 'bob just opened a PR titled: "two". Welcome them in one sentence.'
    watcher.stop()


def test_a_failed_turn_leaves_a_trace() -> None:
    watcher = Watcher.start(backend="scripted", script=[Fail("server_error", "down"), "ok"])
    watcher.feed(("pr_opened", "ann", "one"))
    watcher.feed(("pr_opened", "bob", "two"))
    actions = watcher.wait_for_actions(2, timeout=10)
    assert [a["status"] for a in actions] == ["failed", "ok"]
    assert "down" in actions[0]["error"] and "'ann'" in actions[0]["event"]
    watcher.stop()
