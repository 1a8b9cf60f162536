"""Acceptance tests of the Workspace pattern (reference §5.11), scripted, multiprocTCPBase."""

from __future__ import annotations

import os
import stat
import subprocess
from pathlib import Path

import pytest
from genagent_thespian.patterns.workspace import Workspace, WorkspaceGitError, run_git

import genagent_thespian as g
from genagent_thespian.testing import TelemetryCapture, wait_until

# multiprocTCPBase only: this pattern's actors make progress on their own (self-chains,
# timers, workers) while the test waits with wait_until; simpleSystemBase runs actors only
# inside the calling thread's own requests, so the run never advances (measured: every test
# of this module that drives a run times out there).
pytestmark = pytest.mark.usefixtures("agent_system")


def _repo(path: Path) -> str:
    os.makedirs(path)
    run_git(["init", "-q", "-b", "main"], cwd=str(path))
    run_git(["commit", "-q", "--allow-empty", "-m", "root"], cwd=str(path))
    return str(path)


def test_four_hooks_commit_each_turn_on_the_agent_branch() -> None:
    with TelemetryCapture(["prompt.start"]) as capture:
        run = Workspace.start(
            "tides", backend="scripted", session_id="s1", script=["P1", "P2", "P3"]
        )
        result = run.result(timeout=30)
        starts = capture.wait_for("prompt.start", count=3)
    assert result.phase == "finished" and result.branch == "agent/s1"
    assert [c["filename"] for c in result.commits] == [f"paragraph_{i}.md" for i in (1, 2, 3)]
    log = run_git(["log", "--format=%s", result.branch], cwd=result.workspace).splitlines()
    assert log == ["turn 3: paragraph 3", "turn 2: paragraph 2", "turn 1: paragraph 1", "init"]
    assert len(result.log) == 4 and result.post_run_calls == 1
    assert Path(result.workspace, "paragraph_2.md").read_text() == "P2\n"
    head = run_git(["rev-parse", "--abbrev-ref", "HEAD"], cwd=result.workspace).strip()
    assert head == "agent/s1"
    assert all(metadata["rewritten"] for _, metadata in starts)
    history = g.backend_session("workspace").history
    assert history[0] == "Topic: tides\n\nThis is paragraph 1 of 3."
    assert "P1" in history[1] and "Now write paragraph 2 of 3" in history[1]
    wait_until(lambda: g.status("workspace").halted, timeout=10)
    run.stop()
    run.cleanup()
    assert not os.path.exists(result.workspace)


def test_a_worktree_of_an_existing_repository(tmp_path: Path) -> None:
    repo = _repo(tmp_path / "repo")
    run = Workspace.start(
        "x", backend="scripted", session_id="s2", repo=repo, num_turns=1, script=["only"]
    )
    result = run.result(timeout=30)
    branches = run_git(["branch", "--list", "agent/*"], cwd=repo)
    assert "agent/s2" in branches and result.phase == "finished"
    run.stop()
    run.cleanup()
    assert "worktree" not in run_git(["worktree", "list"], cwd=repo).split("\n", 1)[-1]


def test_git_failure_at_start_is_reported(tmp_path: Path) -> None:
    not_a_repo = tmp_path / "plain"
    not_a_repo.mkdir()
    base = tmp_path / "base"
    base.mkdir()
    with pytest.raises(WorkspaceGitError, match=r"git worktree add .* not a git repository"):
        Workspace.start(
            "x", backend="scripted", session_id="s3", repo=str(not_a_repo), base_dir=str(base)
        )
    assert "workspace" not in g.list_agents()
    assert list(base.iterdir()) == []  # the half-made workspace directory was removed


def test_a_start_that_fails_before_pre_run_leaves_no_directory(tmp_path: Path) -> None:
    with pytest.raises(g.InvalidOption):
        Workspace.start("x", backend="scripted", session_id="s5", base_dir=str(tmp_path), bogus=1)
    assert list(tmp_path.iterdir()) == []


def test_a_failing_commit_is_reported_and_stops_the_run(tmp_path: Path) -> None:
    repo = _repo(tmp_path / "repo")
    hook = tmp_path / "repo" / ".git" / "hooks" / "pre-commit"
    hook.write_text("#!/bin/sh\necho 'commits are frozen' >&2\nexit 1\n")
    hook.chmod(hook.stat().st_mode | stat.S_IXUSR)
    run = Workspace.start(
        "x", backend="scripted", session_id="s4", repo=repo, script=["P1", "P2", "P3"]
    )
    result = run.result(timeout=30)
    assert result.phase == "failed" and "commits are frozen" in (result.error or "")
    assert result.commits == [] and result.paragraphs == ["P1"]
    outcome = g.poll("workspace", run.ref)
    assert outcome.state == "failed" and isinstance(outcome.error, g.CallbackError)
    assert g.backend_session("workspace").remaining == 2  # no turn after the failure
    run.stop()
    run.cleanup()


def test_session_id_is_validated() -> None:
    with pytest.raises(g.InvalidOption, match="session_id"):
        Workspace.start("x", backend="scripted", session_id="../escape")


def test_git_is_real() -> None:
    assert subprocess.run(["git", "--version"], capture_output=True, check=True).stdout
