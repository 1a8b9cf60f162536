"""Acceptance tests of the Pipeline pattern (reference §5.4), scripted, multiprocTCPBase."""

from __future__ import annotations

from pathlib import Path

import pytest
from genagent_thespian.patterns.pipeline import Pipeline

import genagent_thespian as g
from genagent_thespian.testing import Fail, Gate, open_gate, wait_until

# multiprocTCPBase only: this pattern's actors make progress on their own (self-chains,
# timers, workers) while the test waits with wait_until; simpleSystemBase runs actors only
# inside the calling thread's own requests, so the run never advances (measured: every test
# of this module that drives a run times out there).
pytestmark = pytest.mark.usefixtures("agent_system")


def test_each_stage_feeds_the_next() -> None:
    run = Pipeline.run(
        "input",
        [
            {"name": "one", "script": ["S1"]},
            {"name": "two", "script": ["S2"]},
            {"name": "three", "script": ["S3"]},
        ],
        backend="scripted",
    )
    result = run.result(timeout=20)
    assert result.ok and result.output == "S3"
    assert [s["input"] for s in result.stages] == ["input", "S1", "S2"]
    assert [s["output"] for s in result.stages] == ["S1", "S2", "S3"]
    assert g.backend_session("pipe-1-two").history == ("S1",)
    assert g.backend_session("pipe-2-three").history == ("S2",)
    wait_until(lambda: all(g.status(n).halted for n in run.names), timeout=10)
    run.stop()


def test_role_and_instruction_shape_the_prompt() -> None:
    run = Pipeline.run(
        "notes",
        [{"name": "edit", "role": "an editor", "instruction": "Fix typos.", "script": ["ok"]}],
        backend="scripted",
    )
    assert run.result(timeout=20).output == "ok"
    assert g.backend_session("pipe-0-edit").history == ("You are an editor. Fix typos.\n\nnotes",)
    run.stop()


def test_a_failure_names_its_stage_and_later_stages_never_run() -> None:
    run = Pipeline.run(
        "input",
        [
            {"name": "one", "script": ["S1"]},
            {"name": "two", "script": [Fail("server_error", "x broke")]},
            {"name": "three", "script": ["S3"]},
        ],
        backend="scripted",
    )
    result = run.result(timeout=20)
    assert not result.ok and result.failed_stage == "two" and "x broke" in (result.error or "")
    assert [s["phase"] for s in result.stages] == ["done", "failed", "upstream_failed"]
    assert g.backend_session("pipe-2-three").history == ()
    run.stop()


def test_an_upstream_stage_that_exits_fails_the_pipeline(tmp_path: Path) -> None:
    gate = tmp_path / "gate"
    run = Pipeline.run(
        "input",
        [{"name": "one", "script": [Gate(str(gate), "S1")]}, {"name": "two", "script": ["S2"]}],
        backend="scripted",
    )
    wait_until(lambda: g.status("pipe-0-one").state == "processing", timeout=10)
    g.stop("pipe-0-one")
    result = run.result(timeout=20)
    assert result.failed_stage == "one" and "exited" in (result.error or "")
    open_gate(gate)
    run.stop()
