"""Acceptance tests of the Heartbeat pattern (reference §5.8), scripted, multiprocTCPBase."""

from __future__ import annotations

from pathlib import Path

import pytest
from genagent_thespian.patterns.heartbeat import Heartbeat

import genagent_thespian as g
from genagent_thespian.testing import Fail, Gate, open_gate, wait_until

# multiprocTCPBase only: this pattern's actors make progress on their own (self-chains,
# timers, workers) while the test waits with wait_until; simpleSystemBase runs actors only
# inside the calling thread's own requests, so the run never advances (measured: every test
# of this module that drives a run times out there).
pytestmark = pytest.mark.usefixtures("agent_system")


def test_ticks_skip_small_batches_and_summarize_full_ones() -> None:
    beat = Heartbeat.start(backend="scripted", interval=0.05, min_batch=3, script=["sum1"])
    beat.observe("o1")
    beat.observe("o2")
    state = beat.wait_for(lambda s: s["skipped"] >= 2 and len(s["observations"]) == 2, timeout=10)
    assert state["dispatched"] == 0
    beat.observe("o3")
    state = beat.wait_for(lambda s: s["summaries"], timeout=10)
    assert state["summaries"][0]["text"] == "sum1" and state["summaries"][0]["count"] == 3
    assert state["observations"] == [] and state["dispatched"] == 1
    assert "Recent observations (3)" in g.backend_session("heartbeat").history[0]
    beat.stop()


def test_a_tick_during_a_turn_is_decided_on_the_state_the_turn_left(tmp_path: Path) -> None:
    gate = tmp_path / "gate"
    beat = Heartbeat.start(
        backend="scripted", interval=0.05, min_batch=1, script=[Gate(str(gate), "s1"), "s2"]
    )
    beat.observe("first")
    wait_until(lambda: g.status("heartbeat").state == "processing", timeout=10)
    beat.observe("second")  # arrives during the turn; the next tick must pick it up
    open_gate(gate)
    state = beat.wait_for(lambda s: len(s["summaries"]) == 2, timeout=10)
    assert [s["count"] for s in state["summaries"]] == [1, 1]
    beat.stop()


def test_a_failed_summary_keeps_its_batch() -> None:
    beat = Heartbeat.start(
        backend="scripted", interval=0.05, min_batch=2, script=[Fail("server_error", "x"), "ok"]
    )
    beat.pause()
    beat.observe("a")
    beat.observe("b")
    beat.resume()
    state = beat.wait_for(lambda s: s["summaries"], timeout=10)
    assert len(state["failures"]) == 1 and state["summaries"][0]["count"] == 2
    history = g.backend_session("heartbeat").history
    assert history[0] == history[1]  # the same batch, summarized again
    beat.stop()


def test_halt_stops_the_ticker_and_the_ticker_dies_with_the_agent() -> None:
    beat = Heartbeat.start(backend="scripted", interval=0.05, min_batch=1, default="s")
    beat.wait_for(lambda s: s["ticks"] >= 2, timeout=10)
    g.halt("heartbeat")
    state = beat.wait_for(lambda s: not s["ticking"], timeout=10)
    beat.observe("while halted")
    after = beat.wait_for(lambda s: s["observations"] == ["while halted"], timeout=10)
    assert after["ticks"] == state["ticks"] and g.status("heartbeat").queued == 0
    beat.resume()  # unhalts and restarts the ticker: the pending observation is summarized
    resumed = beat.wait_for(lambda s: s["summaries"], timeout=10)
    assert resumed["ticking"] and resumed["summaries"][0]["count"] == 1
    beat.stop()
    again = Heartbeat.start(backend="scripted", interval=30.0, min_batch=1, default="s")
    again.observe("fresh")
    fresh = again.wait_for(lambda s: s["observations"] == ["fresh"], timeout=10)
    assert fresh["ticks"] == 0  # no tick of the old agent reaches the new one
    again.stop()
