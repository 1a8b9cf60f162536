"""Prewarm through the agent and its worker, on every base (``Backend.warm`` at the seam).

``WarmingBackend`` logs its warm and its turns and marks the session it warmed with the
worker's pid, so these tests see what reached the worker and in which order. The real CLIs'
``warm`` is tested in ``tests/backends/test_cli_prewarm.py``.
"""

from __future__ import annotations

from pathlib import Path

from support_agents import Passthrough
from support_backends import WarmingBackend, read_turn_log

import genagent_thespian as g
from genagent_thespian.testing import TelemetryCapture


def start(name: str, log: Path, **backend_options: object) -> None:
    g.start_agent(
        Passthrough,
        name=name,
        backend=WarmingBackend,
        backend_options={"log": str(log), **backend_options},
        prewarm=True,
    )


def outcome_of(capture: TelemetryCapture, name: str) -> str:
    (_, metadata), *_ = capture.wait_for(
        "session.prewarm", lambda _m, md: md["agent"] == name, timeout=30
    )
    return str(metadata["outcome"])


def test_the_warmed_session_reaches_the_first_turn_on_the_same_worker(
    any_agent_system: g.AgentSystem, tmp_path: Path
) -> None:
    # (No waiting for telemetry here: simpleSystemBase runs its actors only inside calls.)
    log = tmp_path / "turns.jsonl"
    start("w", log)
    # The session warm returned reached the turn, on the worker that warmed it.
    assert g.ask("w", "hi").text == "warmed=True"
    assert [e["what"] for e in read_turn_log(log)] == ["warm-start", "warm-end", "start", "end"]
    assert g.status("w").turns == 1
    assert g.ask("w", "again").text == "warmed=True"  # the agent keeps the warmed session


def test_a_prewarm_is_reported_before_any_turn(agent_system: g.AgentSystem, tmp_path: Path) -> None:
    log = tmp_path / "turns.jsonl"
    with TelemetryCapture(["session.prewarm"]) as capture:
        start("early", log)
        assert outcome_of(capture, "early") == "warm"
    assert [e["what"] for e in read_turn_log(log)] == ["warm-start", "warm-end"]
    assert g.ask("early", "hi").text == "warmed=True"


def test_a_turn_that_arrives_during_a_warm_waits_for_it_and_never_overlaps(
    agent_system: g.AgentSystem, tmp_path: Path
) -> None:
    log = tmp_path / "turns.jsonl"
    start("slow", log, warm_s=1.0)
    assert g.ask("slow", "at once", timeout=30).text == "warmed=True"
    whats = [e["what"] for e in read_turn_log(log)]
    assert whats == ["warm-start", "warm-end", "start", "end"], whats


def test_a_warm_that_raises_costs_nobody_anything(
    agent_system: g.AgentSystem, tmp_path: Path
) -> None:
    log = tmp_path / "turns.jsonl"
    with TelemetryCapture(["session.prewarm"]) as capture:
        start("cold", log, warm_fails=True)
        assert outcome_of(capture, "cold") == "failed"
    assert g.ask("cold", "hi").text == "warmed=False"
    assert g.status("cold").failures == 0
