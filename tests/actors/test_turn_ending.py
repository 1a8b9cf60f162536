"""The worker/backend contract for ending a turn's stream, on multiprocTCPBase: the reply goes
out at the terminal event, the backend's own clean-up runs to its end before the next turn
calls the backend, and a turn's watchdog starts only when its backend call does.

Only multiprocTCPBase: the contract is between a worker process and the agent while the
backend's clean-up still runs; on simpleSystemBase the worker shares the test's thread.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from support_agents import Passthrough
from support_backends import read_turn_log

import genagent_thespian as g
from genagent_thespian import AgentSystem
from genagent_thespian.testing import system_processes, wait_until

BACKEND = "support_backends:SlowEndingBackend"


@pytest.fixture
def system() -> Iterator[AgentSystem]:
    system = g.start_system()
    try:
        yield system
    finally:
        g.shutdown_system(system)
        wait_until(lambda: not system_processes(system), message="processes survived shutdown")


def test_the_next_turn_waits_for_the_previous_streams_clean_up(
    system: AgentSystem, tmp_path: Path
) -> None:
    log = tmp_path / "turns.jsonl"
    options = {"log": str(log), "cleanup_s": 0.3}
    g.start_agent(Passthrough, name="s", backend=BACKEND, backend_options=options)
    for n in range(3):
        assert g.ask("s", f"turn {n}").text == f"done: turn {n}"
    wait_until(lambda: len(read_turn_log(log)) == 6, timeout=10, message="three turns logged")
    entries = read_turn_log(log)
    # Each turn's clean-up ran (it was not cut by close()) and ended before the next began.
    assert [(e["what"], e["prompt"]) for e in entries] == [
        (what, f"turn {n}") for n in range(3) for what in ("start", "end")
    ]
    for end, start in zip(entries[1::2], entries[2::2], strict=False):
        assert start["t"] >= end["t"]
    g.stop("s")


def test_a_turn_waiting_behind_a_cancelling_worker_keeps_its_whole_watchdog(
    system: AgentSystem, tmp_path: Path
) -> None:
    log = tmp_path / "turns.jsonl"
    # Stopping the cancelled turn takes 2.5 s: longer than the 2 s watchdog of the next turn.
    options = {"log": str(log), "cancel_s": 2.5}
    g.start_agent(Passthrough, name="w", backend=BACKEND, backend_options=options, watchdog=2.0)
    first = g.tell("w", "hang")
    wait_until(lambda: log.exists() and read_turn_log(log), timeout=10, message="turn 1 ran")
    g.interrupt("w", ref=first)
    second = g.tell("w", "quick")
    result = wait_until(lambda: (p := g.poll("w", second)).done and p, timeout=20)
    assert result.error is None, result.error
    assert result.response.text == "done: quick"
    assert isinstance(g.poll("w", first).error, g.TurnInterrupted)
    g.stop("w")
