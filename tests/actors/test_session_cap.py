"""The node's cap on live sessions (``max_live_sessions``) on multiprocTCPBase.

An agent's live session is its turn worker (with the CLI a CLI backend keeps in it between
turns). The scripted backend records every prompt it receives (``record_to``), so a test
can check that an agent's conversation continued across evictions.
"""

from __future__ import annotations

import json
import os
import signal
import threading
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
from security_support import find_listener_pid
from support_agents import Passthrough, Recorder
from thespian.actors import ActorSystem
from transport_attacks import port_of

import genagent_thespian as g
from genagent_thespian import AgentSystem
from genagent_thespian._core.protocol import _GovernorAt, _WhereIsGovernor
from genagent_thespian.testing import (
    Slow,
    TelemetryCapture,
    read_history,
    system_processes,
    wait_until,
)


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


def governor_pid(system: AgentSystem) -> int:
    """The pid of the node's governor actor, found by the port of its address."""
    client = ActorSystem("multiprocTCPBase", g.client_capabilities(), transientUnique=True)
    try:
        where = client.ask(system.supervisor, _WhereIsGovernor(), 10)
    finally:
        client.shutdown()
    assert isinstance(where, _GovernorAt) and where.address is not None
    pid = find_listener_pid(port_of(where.address))
    assert pid is not None
    return pid


def test_a_turn_on_a_live_session_does_not_wait_for_the_governor(
    capped: AgentSystem, tmp_path: Path
) -> None:
    history = start("warm", tmp_path, script=["ok", "ok", Slow("long", 60.0)])
    assert g.ask("warm", "cold").text == "ok"  # no live session: granted by the governor
    governor = governor_pid(capped)
    os.kill(governor, signal.SIGSTOP)
    try:
        # The session is live: the turn runs with the governor unable to answer anything.
        assert g.ask("warm", "warm", timeout=20).text == "ok"
    finally:
        os.kill(governor, signal.SIGCONT)
    assert read_history(history) == ["cold", "warm"]
    # Nobody waits for a session: the governor does not hear of warm turns at all (no
    # message per turn), so it counts the session live without telling busy from idle.
    figures = g.sessions()
    assert figures is not None and (figures.live, figures.busy, figures.queued) == (1, None, 0)


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
        seen_figures: list[g.GovernorStatus] = []
        with pytest.raises(g.SessionUnavailable) as caught:

            def watch() -> None:
                seen_waiting.append(
                    bool(wait_until(lambda: g.status("late").waiting_for_session, timeout=5))
                )
                figures = g.sessions()
                assert figures is not None
                seen_figures.append(figures)

            watcher = threading.Thread(target=watch)
            watcher.start()
            try:
                g.ask("late", "anyone there?")
            finally:
                watcher.join(10)
        assert isinstance(caught.value, TimeoutError) and caught.value.agent == "late"
        assert seen_waiting == [True]  # visible in status while it waited
        waiting = seen_figures[0]  # and in the governor's figures (the header of top)
        assert (waiting.max_live_sessions, waiting.live, waiting.busy) == (1, 1, 1)
        assert waiting.queued == 1 and waiting.oldest_wait is not None
        assert not g.status("late").waiting_for_session
        thread.join(30)
        assert outcome == ["long"]
        assert g.ask("late", "now?").text == "ok"  # busy's idle session was retired for it
    finally:
        g.shutdown_system(system)
        wait_until(lambda: not system_processes(system), message="processes survived shutdown")


@pytest.mark.parametrize(
    ("cap", "idle"),
    [(-1, None), ("many", None), (2, -1.0), (None, 5.0), (0, 5.0), (True, None)],
)
def test_bad_session_settings_are_refused_before_anything_starts(cap: object, idle: object) -> None:
    with pytest.raises(g.InvalidOption):
        g.start_system(max_live_sessions=cap, session_idle_timeout=idle)  # type: ignore[arg-type]


@pytest.mark.parametrize("setting", ["default", 0, None])
def test_every_node_has_a_governor_sized_from_its_memory_unless_turned_off(
    setting: object,
) -> None:
    from genagent_thespian._core.governor import node_session_cap

    system = g.start_system() if setting == "default" else start_capped(setting)  # type: ignore[arg-type]
    try:
        figures = g.sessions()
        if setting == "default":
            assert isinstance(figures, g.GovernorStatus)
            assert figures.max_live_sessions == node_session_cap("auto")
            assert figures.max_live_sessions >= 1
            assert (figures.live, figures.busy, figures.queued) == (0, None, 0)
        else:
            assert figures is None  # no governor
    finally:
        g.shutdown_system(system)
        wait_until(lambda: not system_processes(system), message="processes survived shutdown")


@pytest.mark.cli
def test_real_claude_sessions_are_retired_at_the_cap_and_resumed_with_their_history(
    tmp_path: Path,
) -> None:
    from support_cli import quiet_env, require_cli

    from genagent_thespian.testing import FakeLLMServer, Text

    binary = require_cli("claude")
    system = start_capped(1)
    try:
        with FakeLLMServer() as server:
            workdirs = {name: tmp_path / name for name in ("a", "b")}
            for name, workdir in workdirs.items():
                workdir.mkdir()
                env = {
                    **quiet_env(tmp_path / f"home-{name}"),
                    "ANTHROPIC_API_KEY": "sk-test-not-a-real-key",
                    "ANTHROPIC_BASE_URL": server.url,
                }
                g.start_agent(
                    Passthrough,
                    name=name,
                    backend="claude",
                    backend_options={"binary": binary, "cwd": str(workdir), "env": env},
                    worker_idle_timeout=600.0,
                )
            server.script(Text("Noted: PELICAN."), Text("Hello from b."), Text("It was PELICAN."))
            assert "PELICAN" in g.ask("a", "Remember the word PELICAN").text
            session_id = g.backend_session("a").session_id
            assert len(claude_processes(workdirs["a"])) >= 1  # a's CLI stays up between turns
            assert g.ask("b", "Say hello").text == "Hello from b."
            assert claude_processes(workdirs["a"]) == []  # retired to make room for b
            answer = g.ask("a", "Which word?")
            assert answer.text == "It was PELICAN."
            assert claude_processes(workdirs["b"]) == []  # b's in turn
            resumed = claude_processes(workdirs["a"])
            assert any(f"--resume={session_id}" in " ".join(cmd) for cmd in resumed), resumed
            assert "Remember the word PELICAN" in json.dumps(server.model_requests[-1].body)
    finally:
        g.shutdown_system(system)
        wait_until(lambda: not system_processes(system), message="processes survived shutdown")
    assert all(claude_processes(workdir) == [] for workdir in workdirs.values())


def claude_processes(workdir: Path) -> list[list[str]]:
    """Command lines of the live processes whose working directory is ``workdir``."""
    found = []
    for process in psutil.process_iter(["cwd", "cmdline", "status"]):
        info = process.info
        if info["cwd"] == str(workdir) and info["status"] != psutil.STATUS_ZOMBIE:
            found.append(list(info["cmdline"] or []))
    return found


def test_a_prewarm_takes_only_a_free_slot_and_its_first_turn_is_warm(
    capped: AgentSystem, tmp_path: Path
) -> None:
    def prewarmed(name: str) -> str:
        (_, metadata), *_ = capture.wait_for(
            "session.prewarm", lambda _m, md: md["agent"] == name, timeout=30
        )
        return str(metadata["outcome"])

    with TelemetryCapture(["session.prewarm"]) as capture:
        histories = {name: start(name, tmp_path, prewarm=True) for name in ("a", "b")}
        assert (prewarmed("a"), prewarmed("b")) == ("warm", "warm")
        histories["c"] = start("c", tmp_path, prewarm=True)
        assert prewarmed("c") == "no_slot"  # the cap is reached: nothing evicted for it
    figures = g.sessions()
    assert figures is not None
    assert (figures.live, figures.retiring, figures.queued) == (2, 0, 0)
    assert [g.status(name).turns for name in "abc"] == [0, 0, 0]

    # The prewarmed session is live: a's first turn runs without the governor's answer.
    governor = governor_pid(capped)
    os.kill(governor, signal.SIGSTOP)
    try:
        assert g.ask("a", "first", timeout=20).text == "ok"
    finally:
        os.kill(governor, signal.SIGCONT)
    # c's first turn asks as usual: the least recently used idle session (b's) makes room.
    assert g.ask("c", "hello", timeout=20).text == "ok"
    assert g.ask("a", "second", timeout=20).text == "ok"  # a's session was not the one retired
    assert read_history(histories["a"]) == ["first", "second"]
    assert read_history(histories["c"]) == ["hello"]
    figures = g.sessions()
    assert figures is not None and figures.live == 2


@pytest.mark.parametrize("value", ["yes", 1, None])
def test_a_bad_prewarm_is_refused_naming_the_option(capped: AgentSystem, value: object) -> None:
    with pytest.raises(g.InvalidOption, match="prewarm"):
        g.start_agent(Recorder, name="bad", backend="scripted", prewarm=value)  # type: ignore[arg-type]
    assert "bad" not in g.list_agents()


def test_an_ungoverned_node_prewarms_without_asking(tmp_path: Path) -> None:
    system = start_capped(0)  # max_live_sessions=0: no governor at all
    try:
        with TelemetryCapture(["session.prewarm"]) as capture:
            history = start("free", tmp_path, prewarm=True)
            (_, metadata), *_ = capture.wait_for("session.prewarm", timeout=30)
        assert metadata["outcome"] == "warm"
        assert g.sessions() is None
        assert g.ask("free", "hi", timeout=20).text == "ok"
        assert read_history(history) == ["hi"]
    finally:
        g.shutdown_system(system)
        wait_until(lambda: not system_processes(system), message="processes survived shutdown")


def test_below_the_cap_turns_are_not_reported_and_at_it_the_longest_idle_session_goes(
    capped: AgentSystem, tmp_path: Path
) -> None:
    def workers(name: str) -> list[psutil.Process]:
        children: list[psutil.Process] = psutil.Process(g.status(name).pid).children()
        return children

    for name in "abc":
        start(name, tmp_path)
    assert g.ask("a", "a1").text == "ok"
    assert g.ask("b", "b1").text == "ok"
    assert g.ask("a", "a2").text == "ok"  # a warm turn: a is now the more recently used
    # Nobody waited: the agents told the governor nothing of their turns.
    figures = g.sessions()
    assert figures is not None and (figures.live, figures.busy) == (2, None)
    # c waits at the cap: the governor asks a and b how long they have been idle, and
    # retires b's session, idle for longer, not the first to answer.
    assert g.ask("c", "c1").text == "ok"
    wait_until(lambda: not workers("b"), timeout=10, message="b's session retired")
    assert len(workers("a")) == 1
    # The node stays full, so the agents go on reporting: both sessions are idle.
    figures = wait_until(lambda: (f := g.sessions()) is not None and f.busy == 0 and f)
    assert figures and figures.live == 2
    assert g.ask("b", "b2").text == "ok"  # b asks again: a's session, idle longest, goes
    wait_until(lambda: not workers("a"), timeout=10, message="a's session retired")
    assert g.backend_session("b").position == 2  # b's conversation went on
