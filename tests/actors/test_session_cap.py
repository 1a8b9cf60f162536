"""The node's cap on live sessions (``max_live_sessions``) on multiprocTCPBase.

An agent's live session is its turn worker (with the CLI a CLI backend keeps in it between
turns). The scripted backend records every prompt it receives (``record_to``), so a test
can check that an agent's conversation continued across evictions.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
from support_agents import Recorder

import genagent_thespian as g
from genagent_thespian import AgentSystem
from genagent_thespian.testing import Slow, read_history, system_processes, wait_until


def start_capped(cap: int, **settings: object) -> AgentSystem:
    return g.start_system(max_live_sessions=cap, **settings)  # type: ignore[arg-type]


@pytest.fixture
def capped() -> Iterator[AgentSystem]:
    system = start_capped(2)
    try:
        yield system
    finally:
        g.shutdown_system(system)
        wait_until(lambda: not system_processes(system), message="processes survived shutdown")


def live(system: AgentSystem) -> set[int]:
    alive = set()
    for pid in system_processes(system):
        try:
            if psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                alive.add(pid)
        except psutil.NoSuchProcess:
            continue
    return alive


def start(name: str, tmp_path: Path, **settings: object) -> Path:
    history = tmp_path / f"{name}.jsonl"
    g.start_agent(
        Recorder,
        name=name,
        backend="scripted",
        default="ok",
        backend_options={"record_to": str(history)},
        worker_idle_timeout=600.0,  # only the governor retires workers here
        **settings,  # type: ignore[arg-type]
    )
    return history


def test_never_more_live_sessions_than_the_cap_and_conversations_continue(
    capped: AgentSystem, tmp_path: Path
) -> None:
    names = ["a", "b", "c", "d"]
    histories = {name: start(name, tmp_path) for name in names}
    without_workers = live(capped)
    peak = 0
    for round_ in (1, 2):
        for name in names:
            assert g.ask(name, f"{name}{round_}").text == "ok"
            workers = live(capped) - without_workers
            peak = max(peak, len(workers))
    assert peak == 2  # the cap was used, never exceeded
    for name in names:
        assert read_history(histories[name]) == [f"{name}1", f"{name}2"]
        assert g.backend_session(name).position == 2  # the same session went on


def test_a_turn_waits_for_a_session_and_fails_typed_after_its_watchdog(tmp_path: Path) -> None:
    system = start_capped(1)
    try:
        start("busy", tmp_path, script=[Slow("long", 8.0)])
        start("late", tmp_path, watchdog=3.0)
        outcome: list[object] = []
        thread = threading.Thread(target=lambda: outcome.append(g.ask("busy", "go").text))
        thread.start()
        wait_until(lambda: g.status("busy").state == "processing")
        seen_waiting: list[bool] = []
        with pytest.raises(g.SessionUnavailable) as caught:

            def watch() -> None:
                seen_waiting.append(
                    bool(wait_until(lambda: g.status("late").waiting_for_session, timeout=5))
                )

            watcher = threading.Thread(target=watch)
            watcher.start()
            try:
                g.ask("late", "anyone there?")
            finally:
                watcher.join(10)
        assert isinstance(caught.value, TimeoutError) and caught.value.agent == "late"
        assert seen_waiting == [True]  # visible in status while it waited
        assert not g.status("late").waiting_for_session
        thread.join(30)
        assert outcome == ["long"]
        assert g.ask("late", "now?").text == "ok"  # busy's idle session was retired for it
    finally:
        g.shutdown_system(system)
        wait_until(lambda: not system_processes(system), message="processes survived shutdown")


@pytest.mark.parametrize(
    ("cap", "idle"), [(0, None), ("many", None), (2, -1.0), (None, 5.0), (True, None)]
)
def test_bad_session_settings_are_refused_before_anything_starts(cap: object, idle: object) -> None:
    with pytest.raises(g.InvalidOption):
        g.start_system(max_live_sessions=cap, session_idle_timeout=idle)  # type: ignore[arg-type]
