"""Turns in a thread of the agent's own process (``turn_worker="thread"``), on multiprocTCPBase.

The CLI backends run this way by default (``turn_worker="auto"``); the scripted backend is
run the same way here, so that the mechanics are checked without a CLI: no worker process,
streaming while the turn runs, an interrupt, a turn that exits the "worker", a turn deaf to
cancellation, a stop while a turn runs, and the option's validation. The claude tests
(``tests/backends/test_cli_sessions.py``) check the same with the real program.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import psutil
import pytest
from support_agents import Recorder, calls, deaf_until_gate

import genagent_thespian as g
from genagent_thespian.testing import Exit, Gate, Slow, open_gate, wait_until

pytestmark = pytest.mark.usefixtures("agent_system")


def start(tmp_path: Path, name: str = "a", **options: Any) -> Path:
    log = tmp_path / f"{name}.log"
    g.start_agent(
        Recorder, name=name, backend="scripted", log=str(log), turn_worker="thread", **options
    )
    return log


def children(name: str) -> list[int]:
    """The live child processes of agent ``name``'s process."""
    agent = psutil.Process(g.status(name).pid)
    return [p.pid for p in agent.children() if p.status() != psutil.STATUS_ZOMBIE]


def test_turns_run_in_the_agent_process_and_no_worker_process_is_made(tmp_path: Path) -> None:
    start(tmp_path, script=["one", "two"])
    pid = g.status("a").pid
    assert g.ask("a", "q1").text == "one"
    assert g.ask("a", "q2").text == "two"
    assert g.status("a").pid == pid
    assert children("a") == []


def test_a_watched_turn_streams_while_it_runs(tmp_path: Path) -> None:
    gate = tmp_path / "gate"
    start(tmp_path, script=[Gate(str(gate), then="rest", before=(g.Event.text_delta("first "),))])
    items = g.stream("a", "q")
    first = next(items)
    while not (isinstance(first, g.Event) and first.kind == g.EventKind.TEXT_DELTA):
        first = next(items)
    assert first.data["text"] == "first "
    assert g.status("a").state == "processing"  # the turn cannot end before the gate opens
    open_gate(gate)
    response = list(items)[-1]
    assert isinstance(response, g.Response) and response.text == "rest"


def test_an_interrupted_turn_ends_and_the_next_one_runs(tmp_path: Path) -> None:
    log = start(tmp_path, script=[Slow("a b c d e f g h", 30.0), "next"])
    ref = g.tell("a", "long")
    wait_until(lambda: g.status("a").current_ref == ref and g.backend_session("a").position == 1)
    assert g.interrupt("a") == ref
    result = wait_until(lambda: (r := g.poll("a", ref)).done and r)
    assert isinstance(result.error, g.TurnInterrupted)
    assert calls(log, "handle_error")[0]["error"] == "TurnInterrupted"
    assert g.ask("a", "q").text == "next"


def test_a_turn_that_exits_its_worker_crashes_and_the_agent_process_lives_on(
    tmp_path: Path,
) -> None:
    start(tmp_path, script=[Exit(3), "after"])
    pid = g.status("a").pid
    with pytest.raises(g.TurnCrashed):
        g.ask("a", "q")
    assert g.ask("a", "again").text == "after"
    assert g.status("a").pid == pid


def test_a_turn_deaf_to_cancellation_is_abandoned_and_the_next_turn_runs(tmp_path: Path) -> None:
    gate = tmp_path / "gate"
    start(tmp_path, script=[deaf_until_gate, "after"])
    pid = g.status("a").pid
    ref = g.tell("a", str(gate))
    wait_until(lambda: g.status("a").current_ref == ref)
    g.interrupt("a", ref=ref)
    result = wait_until(lambda: (r := g.poll("a", ref)).done and r)
    assert isinstance(result.error, g.TurnInterrupted)
    # The next turn waits for the cancel grace, then runs beside the stuck thread.
    assert g.ask("a", "go on", timeout=60).text == "after"
    assert g.status("a").pid == pid
    open_gate(gate)  # lets the abandoned thread end


def test_stop_during_a_turn_answers_its_caller_and_ends_the_agent(tmp_path: Path) -> None:
    start(tmp_path, script=[Slow("a b c d e f g h", 30.0)])
    pid = g.status("a").pid
    outcome: list[object] = []

    def caller() -> None:
        try:
            outcome.append(g.ask("a", "long"))
        except BaseException as exc:
            outcome.append(exc)

    thread = threading.Thread(target=caller)
    thread.start()
    wait_until(lambda: g.status("a").state == "processing")
    g.stop("a")
    thread.join(30)
    assert len(outcome) == 1 and isinstance(outcome[0], g.AgentStopped), outcome
    wait_until(lambda: not psutil.pid_exists(pid) or psutil.Process(pid).status() == "zombie")


def test_turn_worker_is_validated_at_start(tmp_path: Path) -> None:
    with pytest.raises(g.InvalidOption, match="turn_worker must be one of"):
        g.start_agent(Recorder, name="bad", backend="scripted", turn_worker="fork")
    assert "bad" not in g.list_agents()
