"""Supervised restarts on multiprocTCPBase: restart types, intensity, durable resume, chaos.

Only multiprocTCPBase: every test kills an agent's process (SIGKILL) to make it exit, and
simpleSystemBase has no process per agent to kill.
"""

from __future__ import annotations

import functools
import os
import signal
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from support_agents import Counter, FailsOnRestart, Recorder, calls
from thespian.system.multiprocCommon import MultiProcReplicator

import genagent_thespian as g
from genagent_thespian import AgentSystem
from genagent_thespian._actors import supervisor as supervisor_module
from genagent_thespian.messages import PollState
from genagent_thespian.testing import (
    ChaosMonkey,
    Slow,
    TelemetryCapture,
    read_history,
    system_processes,
    wait_for_exit,
    wait_until,
)


@pytest.fixture
def system(tmp_path: Path) -> Iterator[AgentSystem]:
    system = g.start_system(store_path=str(tmp_path / "store.sqlite3"))
    try:
        yield system
    finally:
        g.shutdown_system(system)
        wait_until(lambda: not system_processes(system), message="processes survived shutdown")


def kill_agent(name: str) -> int:
    pid = g.status(name).pid
    os.kill(pid, 9)
    return pid


def wait_restarted(name: str, old_pid: int, timeout: float = 20.0) -> None:
    def back() -> bool:
        address = g.whereis(name)
        return address is not None and g.status(name).pid != old_pid

    wait_until(back, timeout=timeout, message=f"{name} did not come back")


def test_a_temporary_agent_is_not_restarted(system: AgentSystem, tmp_path: Path) -> None:
    g.start_agent(Recorder, name="t", backend="scripted")
    kill_agent("t")
    wait_until(lambda: g.whereis("t") is None)
    # Gone for good, like a stopped agent: AgentStopped until the name is reused (issue 14).
    with pytest.raises(g.AgentStopped):
        g.status("t")


def test_a_permanent_agent_is_restarted_fresh_under_its_name(
    system: AgentSystem, tmp_path: Path
) -> None:
    log = tmp_path / "p.log"
    g.start_agent(
        Recorder, name="p", backend="scripted", log=str(log), default="hi", restart="permanent"
    )
    assert g.ask("p", "before").text == "hi"
    with TelemetryCapture(["agent.restarted"]) as capture:
        old = kill_agent("p")
        wait_restarted("p", old)
        capture.wait_for("agent.restarted")
    assert g.ask("p", "after").text == "hi"
    assert g.status("p").restarts == 1
    assert [r["cb"] for r in calls(log, "init_agent")] == ["init_agent", "init_agent"]


def test_a_transient_agent_is_restarted_after_a_kill_but_not_after_stop(
    system: AgentSystem, tmp_path: Path
) -> None:
    g.start_agent(Recorder, name="tr", backend="scripted", default="x", restart="transient")
    old = kill_agent("tr")
    wait_restarted("tr", old)
    g.stop("tr")
    assert g.whereis("tr") is None


def test_an_agent_that_fails_every_restart_is_given_up_and_its_caller_answered(
    system: AgentSystem, tmp_path: Path
) -> None:
    g.start_agent(
        FailsOnRestart,
        name="doomed",
        backend="scripted",
        script=[Slow("never finishes", 60.0)],
        poison=str(tmp_path / "poison"),
        restart="permanent",
        max_restarts=3,
        restart_window=30.0,
    )
    outcome: list[BaseException] = []

    def caller() -> None:
        try:
            g.ask("doomed", "long")
        except BaseException as exc:
            outcome.append(exc)

    thread = threading.Thread(target=caller)
    with TelemetryCapture(["agent.gave_up", "agent.crashed"]) as capture:
        thread.start()
        wait_until(lambda: g.status("doomed").state == "processing")
        kill_agent("doomed")
        gave_up = capture.wait_for("agent.gave_up", timeout=30)
        thread.join(30)
        crashes = capture.named("agent.crashed")
    assert "restart" in str(gave_up[0][1]["reason"])
    assert len(crashes) == 4  # the kill, then three restarts that failed to start
    assert len(outcome) == 1 and isinstance(outcome[0], g.AgentStopped)
    assert g.whereis("doomed") is None


def test_a_durable_agent_resumes_its_session_state_and_queue_after_sigkill(
    system: AgentSystem, tmp_path: Path
) -> None:
    log, history = tmp_path / "d.log", tmp_path / "history.jsonl"
    g.start_agent(
        Counter,
        name="d",
        backend="scripted",
        log=str(log),
        script=["one", Slow("in flight", 60.0), "three", "four"],
        backend_options={"record_to": str(history)},
        durable=True,
        restart="permanent",
    )
    assert g.ask("d", "first").text == "one"
    outcome: list[BaseException | g.Response] = []

    def caller() -> None:
        try:
            outcome.append(g.ask("d", "second"))
        except BaseException as exc:
            outcome.append(exc)

    thread = threading.Thread(target=caller)
    thread.start()
    # Killed only once the in-flight turn has advanced the durable session (the scripted
    # session's position), so the restart resumes after "second" instead of replaying it.
    wait_until(lambda: g.backend_session("d").position == 2)
    queued = [g.tell("d", "third"), g.tell("d", "fourth")]
    old = kill_agent("d")
    thread.join(30)
    assert len(outcome) == 1 and isinstance(outcome[0], g.AgentRestarted)
    wait_restarted("d", old)
    results: list[g.PollResult] = [
        wait_until(functools.partial(_done, "d", ref), timeout=20) for ref in queued
    ]
    assert [r.response.text if r.response else None for r in results] == ["three", "four"]
    assert read_history(history) == ["first", "second", "third", "fourth"]  # nothing ran twice
    assert [r["value"] for r in calls(log, "count")] == [1, 2, 3]  # state survived the restart
    assert calls(log, "handle_error")[-1]["error"] == "AgentRestarted"
    session = g.backend_session("d")
    assert session.resumed and session.position == 4
    assert g.status("d").restarts == 1


def test_stop_removes_a_durable_agents_record(system: AgentSystem, tmp_path: Path) -> None:
    history = tmp_path / "h.jsonl"
    options: dict[str, Any] = {"backend_options": {"record_to": str(history)}, "durable": True}
    g.start_agent(Recorder, name="r", backend="scripted", script=["a", "b"], **options)
    assert g.ask("r", "q").text == "a"
    g.stop("r")
    g.start_agent(Recorder, name="r", backend="scripted", script=["fresh"], **options)
    assert g.ask("r", "q").text == "fresh"
    assert g.status("r").restarts == 0


def test_chaos_twenty_durable_agents_lose_nothing_and_run_nothing_twice(
    system: AgentSystem, tmp_path: Path
) -> None:
    names = [f"c{i}" for i in range(20)]
    for name in names:
        g.start_agent(
            Recorder,
            name=name,
            backend="scripted",
            default=Slow("working on it", 0.15),
            backend_options={"record_to": str(tmp_path / f"{name}.jsonl")},
            durable=True,
            restart="permanent",
            max_restarts=100,
            restart_window=5.0,
        )
    refs = {name: [g.tell(name, f"{name}-task-{i}") for i in range(10)] for name in names}

    def candidates() -> list[int]:
        pids = []
        for name in names:
            try:
                pid = g.status(name).pid
            except g.GenAgentError:
                continue
            pids.append(pid)
            pids.extend(p for p in system_processes(system) if _parent(p) == pid)
        return pids

    monkey = ChaosMonkey(candidates, interval=0.2, duration=5.0, seed=7)
    monkey.start()
    assert monkey.wait(30), "the chaos monkey did not stop by itself"
    assert monkey.killed_pids, "the chaos monkey killed nothing"
    assert not monkey.errors

    def settled() -> dict[str, g.PollResult] | None:
        outcomes: dict[str, g.PollResult] = {}
        for name, agent_refs in refs.items():
            for ref in agent_refs:
                try:
                    result = g.poll(name, ref)
                except g.GenAgentError:
                    return None
                if not result.done:
                    return None
                outcomes[ref] = result
        return outcomes

    outcomes = wait_until(
        settled, timeout=120, interval=0.2, message="tells still pending after chaos"
    )
    assert all(r.state in (PollState.COMPLETED, PollState.FAILED) for r in outcomes.values())
    failed = [r.error for r in outcomes.values() if r.state is PollState.FAILED]
    assert all(isinstance(e, g.AgentRestarted | g.TurnCrashed) for e in failed), failed
    for name in names:
        history = read_history(tmp_path / f"{name}.jsonl")
        assert len(history) == len(set(history)), f"{name} ran a prompt twice: {history}"
        assert g.ask(name, "still there?").text == "working on it"


def test_an_agent_whose_exit_thespian_never_announces_is_restarted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Thespian 4.0.1 loses the exit notice of a child that dies while another child's notice
    is handled (``_childExited`` drops every dead child from its list, so its SIGCHLD handler
    finds nothing left to announce). Seen in the claude chaos run: the agent stayed
    registered at its dead address, and every call to it waited for ever.

    That race is made certain here: the supervisor's Thespian (forked from this process)
    drops the notice of the pid written to ``lost``, exactly as the race does. The one-shot
    birth check is pushed out of the way, so only the supervisor's own look after the next
    notice can find the agent gone.
    """
    lost = tmp_path / "lost-notice"
    original = MultiProcReplicator.childDied

    def drop_lost_notice(replicator: Any, *args: Any) -> Any:
        doomed = lost.read_text() if lost.exists() else ""
        children = getattr(replicator, "_child_procs", [])
        replicator._child_procs = [
            c for c in children if str(c.childProc.pid) != doomed or c.childProc.is_alive()
        ]
        return original(replicator, *args)

    monkeypatch.setattr(MultiProcReplicator, "childDied", drop_lost_notice)
    monkeypatch.setattr(supervisor_module, "_BIRTH_REPORT_SECONDS", 3600.0)
    system = g.start_system(store_path=str(tmp_path / "store.sqlite3"))
    try:
        for name in ("unannounced", "announced"):
            g.start_agent(
                Recorder, name=name, backend="scripted", default="hi", restart="permanent"
            )
        lost_pid = g.status("unannounced").pid
        lost.write_text(str(lost_pid))
        os.kill(lost_pid, signal.SIGKILL)
        assert wait_for_exit(lost_pid, timeout=10)
        old = kill_agent("announced")  # its notice is announced: the supervisor looks again
        wait_restarted("announced", old)
        wait_restarted("unannounced", lost_pid)
        assert g.ask("unannounced", "back?").text == "hi"
        assert g.status("unannounced").restarts == 1
    finally:
        g.shutdown_system(system)
        wait_until(lambda: not system_processes(system), message="processes survived shutdown")


def _done(name: str, ref: str) -> g.PollResult | None:
    """The poll result of ``ref`` once it is done, else ``None`` (for ``wait_until``)."""
    result = g.poll(name, ref)
    return result if result.done else None


def _parent(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
            return int(stat.read().rsplit(")", 1)[1].split()[1])
    except OSError:
        return -1
