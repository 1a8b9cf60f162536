"""Every stop finishes: ``stop``, ``shutdown_system`` and ``StopAll`` answer every caller.

The tests that stop agents while callers wait in other threads run only on
``multiprocTCPBase`` (the ``agent_system`` fixture): ``simpleSystemBase`` serializes calls
with one lock, so the stop would wait behind the very callers it must answer.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest
from support_agents import Recorder

import genagent_thespian as g
from genagent_thespian.testing import Gate, read_history, system_processes, wait_until


def _ask_in_thread(name: str, prompt: str) -> tuple[threading.Thread, dict[str, Any]]:
    outcome: dict[str, Any] = {}

    def run() -> None:
        try:
            outcome["reply"] = g.ask(name, prompt)
        except BaseException as exc:  # the test asserts on exactly what the caller got
            outcome["error"] = exc

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, outcome


@pytest.mark.parametrize("durable", [False, True], ids=["plain", "durable"])
def test_shutdown_system_answers_callers_waiting_in_ask_with_agent_stopped(
    agent_system: g.AgentSystem, tmp_path: Path, durable: bool
) -> None:
    history = tmp_path / "history"
    g.start_agent(
        Recorder,
        name="busy",
        backend="scripted",
        durable=durable,
        script=[Gate(str(tmp_path / "never"), "late"), "queued"],
        backend_options={"record_to": str(history)},
    )
    active, active_outcome = _ask_in_thread("busy", "the active turn")
    wait_until(lambda: read_history(history) == ["the active turn"], timeout=30.0)
    queued, queued_outcome = _ask_in_thread("busy", "a queued turn")
    wait_until(lambda: g.status("busy").queued == 1, timeout=30.0)

    g.shutdown_system(agent_system)

    for thread in (active, queued):
        thread.join(timeout=60.0)
        assert not thread.is_alive(), "a caller was left waiting after shutdown"
    assert isinstance(active_outcome.get("error"), g.AgentStopped), active_outcome
    assert isinstance(queued_outcome.get("error"), g.AgentStopped), queued_outcome
    wait_until(lambda: not system_processes(agent_system), timeout=30.0)


def test_calls_after_shutdown_are_refused_clearly(any_agent_system: g.AgentSystem) -> None:
    g.shutdown_system(any_agent_system)
    with pytest.raises(g.SystemNotRunning):
        g.ask("anyone", "hello", system=any_agent_system)


def test_stop_under_load_always_finishes(agent_system: g.AgentSystem) -> None:
    """Many start/ask/stop cycles at once: every stop answers (none waits for a timeout)."""
    failures: list[BaseException] = []

    def cycles(worker: int) -> None:
        for cycle in range(25):
            name = f"load-{worker}-{cycle % 3}"
            try:
                g.start_agent(Recorder, name=name, backend="scripted", default="ok")
                assert g.ask(name, "hi", timeout=30.0).text == "ok"
                g.stop(name, timeout=30.0)
            except BaseException as exc:
                failures.append(exc)
                return

    threads = [threading.Thread(target=cycles, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=110.0)
    assert not any(t.is_alive() for t in threads), "a cycle hung"
    assert failures == []
    assert g.list_agents() == []
