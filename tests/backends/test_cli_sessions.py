"""Real ``claude`` sessions through ``start_agent`` (multiprocTCPBase, FakeLLMServer): one CLI
process kept across turns, replaced only after an interrupt or a crash; durable sessions that
survive a kill at any moment; the session-lost policy.

Only multiprocTCPBase: the CLI process belongs to an agent (``turn_worker="auto"``) or worker
process and the tests kill those processes; simpleSystemBase has neither.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest
from support_agents import Passthrough
from support_backends import ErrorLogger
from support_cli import quiet_env, require_cli

import genagent_thespian as g
from genagent_thespian import AgentSystem
from genagent_thespian.testing import (
    FakeLLMServer,
    Hang,
    Text,
    ToolUse,
    system_processes,
    wait_until,
)

KEY = "sk-test-not-a-real-key"

pytestmark = pytest.mark.cli


@pytest.fixture
def server() -> Iterator[FakeLLMServer]:
    with FakeLLMServer() as fake:
        yield fake


@pytest.fixture
def system(tmp_path: Path) -> Iterator[AgentSystem]:
    system = g.start_system(store_path=str(tmp_path / "store.sqlite3"))
    try:
        yield system
    finally:
        g.shutdown_system(system)
        wait_until(lambda: not system_processes(system), message="processes survived shutdown")


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    project = tmp_path / "project"
    project.mkdir()
    return project


def claude_options(
    server: FakeLLMServer, home: Path, workdir: Path, **extra: Any
) -> dict[str, Any]:
    env = {**quiet_env(home), "ANTHROPIC_API_KEY": KEY, "ANTHROPIC_BASE_URL": server.url}
    return {"binary": require_cli("claude"), "cwd": str(workdir), "env": env, **extra}


def cli_leaders(workdir: Path) -> list[int]:
    """Pids of the live CLI processes (process group leaders) running in ``workdir``."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        pid = int(entry)
        try:
            if os.readlink(f"/proc/{pid}/cwd") != str(workdir) or os.getpgid(pid) != pid:
                continue
            with open(f"/proc/{pid}/stat", "rb") as stat:
                if stat.read().rsplit(b")", 1)[1].split()[0] in (b"Z", b"X"):
                    continue
        except OSError:
            continue
        found.append(pid)
    return sorted(found)


def the_cli(workdir: Path) -> int:
    """The one CLI process of the agent (fails if there is none or more than one)."""
    leaders: list[int] = wait_until(
        lambda: cli_leaders(workdir), timeout=20, message="a claude process"
    )
    assert len(leaders) == 1, leaders
    return leaders[0]


def parent_of(pid: int) -> int:
    with open(f"/proc/{pid}/stat", "rb") as stat:
        return int(stat.read().rsplit(b")", 1)[1].split()[1])


def conversation(request: Any) -> str:
    return json.dumps(request.body)


def interrupt_a_hung_turn(server: FakeLLMServer, name: str, *, requests: int) -> None:
    """Interrupt a turn whose model request hangs (the server's ``requests``-th), then check
    that the agent answers the next turn."""
    server.script(Hang(), Text("after the interrupt"))
    ref = g.tell(name, "this will hang")
    server.wait_for_requests(requests, timeout=60)
    g.interrupt(name, ref=ref)
    result = wait_until(lambda: (p := g.poll(name, ref)).done and p, timeout=30)
    assert isinstance(result.error, g.TurnInterrupted)
    server.release_hangs()
    assert g.ask(name, "go on").text == "after the interrupt"


def test_a_claude_agent_keeps_one_cli_process_until_an_interrupt_or_a_worker_crash(
    system: AgentSystem, server: FakeLLMServer, tmp_path: Path, workdir: Path
) -> None:
    options = claude_options(server, tmp_path / "home", workdir)
    server.script(Text("one"), Text("two"), Text("three"))
    g.start_agent(
        Passthrough, name="k", backend="claude", backend_options=options, turn_worker="process"
    )

    pids = []
    for word in ("one", "two", "three"):
        assert g.ask("k", f"say {word}").text == word
        pids.append(the_cli(workdir))
    assert pids[0] == pids[1] == pids[2], pids
    assert "say one" in conversation(server.model_requests[-1])  # one conversation

    # An interrupt ends the process; the next turn resumes the session in a new one.
    interrupt_a_hung_turn(server, "k", requests=4)
    after_interrupt = the_cli(workdir)
    assert after_interrupt != pids[0]

    # A CLI that crashed between turns is replaced by the next turn.
    os.kill(after_interrupt, signal.SIGKILL)
    server.script(Text("after the cli crash"))
    assert g.ask("k", "and now").text == "after the cli crash"
    after_cli_crash = the_cli(workdir)
    assert after_cli_crash != after_interrupt

    # So is one whose worker was killed; the conversation goes on in the same session.
    worker = parent_of(after_cli_crash)
    os.kill(worker, signal.SIGKILL)
    wait_until(lambda: after_cli_crash not in cli_leaders(workdir), timeout=20)
    server.script(Text("after the worker crash"))
    assert g.ask("k", "still there?").text == "after the worker crash"
    after_worker_crash = the_cli(workdir)
    assert after_worker_crash not in (after_cli_crash, after_interrupt)
    assert parent_of(after_worker_crash) != worker
    assert "say one" in conversation(server.model_requests[-1])
    g.stop("k")
    wait_until(lambda: not cli_leaders(workdir), timeout=20, message="claude survived stop")


def test_by_default_a_claude_agent_runs_its_cli_itself_and_a_killed_agent_leaves_none(
    system: AgentSystem, server: FakeLLMServer, tmp_path: Path, workdir: Path
) -> None:
    """``turn_worker="auto"``: the CLI is the agent's own child (no worker process), kept
    across turns although each turn's thread ends; a killed agent takes it along, and the
    restarted (durable) agent goes on with the conversation in a CLI of its own."""
    options = claude_options(server, tmp_path / "home", workdir)
    server.script(Text("one"), Text("two"), Text("three"))
    g.start_agent(
        Passthrough,
        name="t",
        backend="claude",
        backend_options=options,
        durable=True,
        restart="permanent",
    )
    agent = g.status("t").pid
    pids = []
    for word in ("one", "two", "three"):
        assert g.ask("t", f"say {word}").text == word
        pids.append(the_cli(workdir))
    assert pids[0] == pids[1] == pids[2], pids
    assert parent_of(pids[0]) == agent
    assert [child.pid for child in psutil.Process(agent).children()] == [pids[0]]
    # Recorded for the reaper, which ends it should the whole node be killed.
    with sqlite3.connect(tmp_path / "store.sqlite3") as store:
        recorded = {pid for (pid,) in store.execute("SELECT pid FROM processes WHERE role='cli'")}
    assert pids[0] in recorded

    interrupt_a_hung_turn(server, "t", requests=4)
    after_interrupt = the_cli(workdir)
    assert after_interrupt != pids[0] and parent_of(after_interrupt) == agent

    os.kill(agent, signal.SIGKILL)
    wait_until(lambda: after_interrupt not in cli_leaders(workdir), timeout=20)
    wait_until(lambda: g.whereis("t") is not None and g.status("t").pid not in (0, agent))
    server.script(Text("after the agent crash"))
    assert g.ask("t", "still there?").text == "after the agent crash"
    restarted = the_cli(workdir)
    assert parent_of(restarted) == g.status("t").pid
    assert "say one" in conversation(server.model_requests[-1])
    g.stop("t")
    wait_until(lambda: not cli_leaders(workdir), timeout=20, message="claude survived stop")


def test_a_per_turn_claude_agent_lets_the_cli_exit_by_itself(
    system: AgentSystem, server: FakeLLMServer, tmp_path: Path, workdir: Path
) -> None:
    options = claude_options(server, tmp_path / "home", workdir, mode="per_turn")
    server.script(Text("one"), Text("two"))
    g.start_agent(Passthrough, name="p", backend="claude", backend_options=options)
    assert g.ask("p", "say one").text == "one"
    assert g.ask("p", "say two").text == "two"
    # A CLI stopped by a signal writes no clean end; one that exits by itself does, and the
    # second turn saw the first one's whole conversation.
    assert "say one" in conversation(server.model_requests[-1])
    wait_until(lambda: not cli_leaders(workdir), timeout=20, message="per-turn claude exited")
    g.stop("p")


def _ask_in_background(name: str, prompt: str, outcome: list[object]) -> threading.Thread:
    def caller() -> None:
        try:
            outcome.append(g.ask(name, prompt))
        except BaseException as exc:
            outcome.append(exc)

    thread = threading.Thread(target=caller)
    thread.start()
    return thread


def test_durable_claude_agent_killed_in_first_turn_resumes(
    system: AgentSystem, server: FakeLLMServer, tmp_path: Path, workdir: Path
) -> None:
    (workdir / "note.txt").write_text("PELICAN\n")
    options = claude_options(server, tmp_path / "home", workdir, allowed_tools=["Read"])
    # The first turn reads a file, so claude stores the session (its tool call) and then
    # asks the model again; that second request hangs and the agent is killed meanwhile.
    read = ToolUse("Read", {"file_path": str(workdir / "note.txt")}, id="toolu_read")
    server.script(read, Hang(), Text("The word was PELICAN."))
    g.start_agent(
        Passthrough,
        name="first",
        backend="claude",
        backend_options=options,
        durable=True,
        restart="permanent",
    )
    session_id = g.backend_session("first").session_id
    outcome: list[object] = []
    thread = _ask_in_background("first", "Remember the word PELICAN", outcome)
    server.wait_for_requests(2, timeout=60)  # claude stored the tool call and asked again
    old_pid = g.status("first").pid
    os.kill(old_pid, signal.SIGKILL)
    thread.join(60)
    server.release_hangs()
    assert len(outcome) == 1 and isinstance(outcome[0], g.AgentRestarted), outcome
    wait_until(lambda: g.whereis("first") is not None and g.status("first").pid != old_pid)
    wait_until(lambda: not cli_leaders(workdir), timeout=20, message="the old claude to end")
    # The cut turn was answered (AgentRestarted); the restarted agent resumes the session
    # claude stored (not a second --session-id, which claude refuses as "already in use").
    answer = g.ask("first", "Which word?")
    assert answer.text == "The word was PELICAN."
    assert "Remember the word PELICAN" in conversation(server.model_requests[-1])
    assert g.backend_session("first").session_id == session_id
    g.stop("first")


def test_a_durable_claude_agent_carries_its_transcript_to_a_host_that_lacks_it(
    system: AgentSystem, server: FakeLLMServer, tmp_path: Path, workdir: Path
) -> None:
    """The agent restarts where claude has no record of the session (as on another host):
    the transcript saved to the store after the turn is restored before ``--resume``."""
    home = tmp_path / "home"
    g.start_agent(
        Passthrough,
        name="mover",
        backend="claude",
        backend_options=claude_options(server, home, workdir),
        durable=True,
        restart="permanent",
    )
    server.script(Text("Noted: PELICAN."), Text("The word was PELICAN."))
    assert g.ask("mover", "Remember the word PELICAN").text == "Noted: PELICAN."
    session_id = g.backend_session("mover").session_id
    transcripts = list((home / ".claude" / "projects").glob(f"*/{session_id}.jsonl"))
    assert len(transcripts) == 1
    old_pid = g.status("mover").pid
    _lose_the_session(workdir, home)  # the new "host" has no transcript...
    os.kill(old_pid, signal.SIGKILL)  # ...and the agent restarts there
    wait_until(lambda: g.whereis("mover") is not None and g.status("mover").pid != old_pid)
    assert transcripts[0].exists()  # restored from the store before --resume

    answer = g.ask("mover", "Which word?")
    assert answer.text == "The word was PELICAN."
    assert "Remember the word PELICAN" in conversation(server.model_requests[-1])
    assert g.backend_session("mover").session_id == session_id
    assert transcripts[0].stat().st_mode & 0o777 == 0o600
    g.stop("mover")


def _lose_the_session(workdir: Path, home: Path) -> None:
    """Make claude forget every session (as a wiped HOME would) and end the live CLI."""
    for transcript in (home / ".claude" / "projects").glob("*/*.jsonl"):
        transcript.unlink()
    for pid in cli_leaders(workdir):
        os.kill(pid, signal.SIGKILL)
    wait_until(lambda: not cli_leaders(workdir), timeout=20, message="the CLI to end")


@pytest.mark.parametrize("policy", ["fail", "fresh"])
def test_a_lost_claude_session_fails_once_then_follows_the_policy(
    system: AgentSystem, server: FakeLLMServer, tmp_path: Path, workdir: Path, policy: str
) -> None:
    home = tmp_path / "home"
    log = tmp_path / "errors.jsonl"
    seen: list[dict[str, Any]] = []
    g.attach(f"lost-{policy}", ["session.lost"], lambda name, m, meta: seen.append(meta))
    try:
        g.start_agent(
            ErrorLogger,
            name="lost",
            backend="claude",
            backend_options=claude_options(server, home, workdir),
            log=str(log),
            on_session_lost=policy,
        )
        server.script(Text("first answer"))
        assert g.ask("lost", "the first question").text == "first answer"
        old_id = g.backend_session("lost").session_id
        _lose_the_session(workdir, home)

        with pytest.raises(g.BackendError) as lost:
            g.ask("lost", "do you remember?")
        assert lost.value.kind == "session_lost"
        assert "No conversation found" in str(lost.value)
        errors = [json.loads(line) for line in log.read_text().splitlines()]
        assert [e["kind"] for e in errors] == ["session_lost"]  # handle_error was told
        wait_until(lambda: seen, timeout=10, message="session.lost telemetry")
        assert seen[0]["policy"] == policy and seen[0]["session_id"] == old_id
        requests = len(server.model_requests)

        if policy == "fail":
            for _ in range(2):
                with pytest.raises(g.BackendError) as again:
                    g.ask("lost", "and now?")
                assert again.value.kind == "session_lost"
            assert len(server.model_requests) == requests  # no blank session was started
            assert "lost" in (g.status("lost").session_lost or "")
        else:
            server.script(Text("a fresh start"))
            assert g.ask("lost", "start over").text == "a fresh start"
            assert g.backend_session("lost").session_id != old_id
            assert "the first question" not in conversation(server.model_requests[-1])
            assert g.status("lost").session_lost is None
        g.stop("lost")
    finally:
        g.detach(f"lost-{policy}")


def test_on_session_lost_is_validated_at_start(system: AgentSystem) -> None:
    with pytest.raises(g.InvalidOption, match="on_session_lost"):
        g.start_agent(Passthrough, name="bad", backend="scripted", on_session_lost="retry")
