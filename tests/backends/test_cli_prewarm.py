"""Prewarmed sessions (``start_agent(..., prewarm=True)``) with the real CLIs.

The real ``claude`` and ``codex`` programs run against ``FakeLLMServer`` on
multiprocTCPBase, under a node cap (``max_live_sessions``): a prewarmed agent has its CLI
before any turn, its first turn runs on that very process, a prewarm takes only a free slot
(never a busy agent's), and a prewarmed CLI never outlives its agent's stop or hibernation.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from support_agents import Passthrough
from support_cli import quiet_env, require_cli

import genagent_thespian as g
from genagent_thespian import AgentSystem
from genagent_thespian.testing import (
    FakeLLMServer,
    Hang,
    TelemetryCapture,
    Text,
    system_processes,
    wait_until,
)

KEY = "sk-test-not-a-real-key"
APP = b"app-server"  # in the command line of codex's app-server

pytestmark = pytest.mark.cli


@pytest.fixture
def server() -> Iterator[FakeLLMServer]:
    with FakeLLMServer() as fake:
        yield fake


def start_capped(tmp_path: Path, cap: int) -> AgentSystem:
    return g.start_system(max_live_sessions=cap, store_path=str(tmp_path / "store.sqlite3"))


@pytest.fixture
def capped(tmp_path: Path) -> Iterator[AgentSystem]:
    system = start_capped(tmp_path, 2)
    try:
        yield system
    finally:
        g.shutdown_system(system)
        wait_until(lambda: not system_processes(system), message="processes survived shutdown")


@pytest.fixture
def capped_at_one(tmp_path: Path) -> Iterator[AgentSystem]:
    system = start_capped(tmp_path, 1)
    try:
        yield system
    finally:
        g.shutdown_system(system)
        wait_until(lambda: not system_processes(system), message="processes survived shutdown")


def project(tmp_path: Path, name: str) -> Path:
    folder = tmp_path / name
    folder.mkdir()
    return folder


def claude_options(server: FakeLLMServer, home: Path, workdir: Path) -> dict[str, Any]:
    env = {**quiet_env(home), "ANTHROPIC_API_KEY": KEY, "ANTHROPIC_BASE_URL": server.url}
    return {"binary": require_cli("claude"), "cwd": str(workdir), "env": env}


def codex_options(server: FakeLLMServer, home: Path, workdir: Path) -> dict[str, Any]:
    (home / ".codex").mkdir(parents=True, exist_ok=True)
    provider = {
        "name": "fake",
        "base_url": server.openai_base_url,
        "env_key": "GENAGENT_TEST_CODEX_KEY",
        "supports_websockets": False,
        "request_max_retries": 0,
        "stream_max_retries": 0,
    }
    return {
        "mode": "app_server",
        "binary": require_cli("codex"),
        "cwd": str(workdir),
        "env": {**quiet_env(home), "GENAGENT_TEST_CODEX_KEY": "sk-codex-test-not-real"},
        "model": "gpt-5.5",
        "sandbox": "danger-full-access",
        "provider": provider,
        "config": {
            "check_for_update_on_startup": False,
            "analytics.enabled": False,
            "feedback.enabled": False,
            "features.plugins": False,
            "features.apps": False,
        },
    }


def cli_leaders(workdir: Path, marker: bytes = b"") -> list[int]:
    """Pids of the live CLI processes (process group leaders) running in ``workdir``.

    ``marker``: only those whose command line has it, and whose parent's has not. Codex
    forks helpers into groups of their own (a shell that snapshots the environment): until
    the helper's exec, its command line is still its parent's ``codex app-server ...``."""
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
            with open(f"/proc/{pid}/cmdline", "rb") as cmdline:
                if marker not in cmdline.read():
                    continue
            if marker and marker in _cmdline(parent_of(pid)):
                continue  # a helper the CLI forked, not a CLI of its own
        except OSError:
            continue
        found.append(pid)
    return sorted(found)


def parent_of(pid: int) -> int:
    with open(f"/proc/{pid}/stat", "rb") as stat:
        return int(stat.read().rsplit(b")", 1)[1].split()[1])


def _cmdline(pid: int) -> bytes:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as cmdline:
            return cmdline.read()
    except OSError:
        return b""


def the_cli(workdir: Path, timeout: float = 30.0, marker: bytes = b"") -> int:
    """The one CLI process running in ``workdir`` (fails if none comes, or if there are two)."""
    leaders: list[int] = wait_until(
        lambda: cli_leaders(workdir, marker),
        timeout=timeout,
        message=f"a CLI process in {workdir}",
    )
    assert len(leaders) == 1, leaders
    return leaders[0]


class CliSampler:
    """Records every CLI process seen in ``workdir`` until stopped (a second process would show)."""

    def __init__(self, workdir: Path, marker: bytes = b"") -> None:
        self.seen: set[int] = set()
        self._marker = marker
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(workdir,), daemon=True)

    def _run(self, workdir: Path) -> None:
        while not self._stop.wait(0.005):
            self.seen.update(cli_leaders(workdir, self._marker))

    def __enter__(self) -> CliSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)


def no_cli(workdir: Path, what: str, marker: bytes = b"") -> None:
    wait_until(lambda: not cli_leaders(workdir, marker), timeout=30, message=what)


def sessions() -> Any:
    figures = g.sessions()
    assert figures is not None
    return figures


def start_claude(
    name: str, server: FakeLLMServer, tmp_path: Path, workdir: Path, **settings: Any
) -> None:
    g.start_agent(
        Passthrough,
        name=name,
        backend="claude",
        backend_options=claude_options(server, tmp_path / f"home-{name}", workdir),
        worker_idle_timeout=600.0,  # only what the test does retires a session here
        **settings,
    )


# -- claude ----------------------------------------------------------------------------------


@pytest.mark.timeout(240)
def test_a_prewarmed_claude_agent_has_its_cli_before_the_first_turn_which_runs_on_it(
    capped: AgentSystem, server: FakeLLMServer, tmp_path: Path
) -> None:
    workdir = project(tmp_path, "repo")
    server.script(Text("one"), Text("two"))
    with TelemetryCapture(["session.prewarm"]) as capture:
        start_claude("oncall", server, tmp_path, workdir, prewarm=True)
        warmed = the_cli(workdir)  # before any turn
        (_, metadata), *_ = capture.wait_for("session.prewarm", timeout=30)
    assert metadata["agent"] == "oncall" and metadata["outcome"] == "warm", metadata
    assert server.model_requests == []  # started, and nothing asked of the model
    status = g.status("oncall")
    assert (status.state, status.turns, status.waiting_for_session) == ("idle", 0, False)
    # The governor counts it as a live session, as it would after a turn (busy or idle is
    # not counted while no turn waits for a session).
    figures = sessions()
    assert (figures.live, figures.busy, figures.queued) == (1, None, 0)

    assert g.ask("oncall", "say one", timeout=120).text == "one"
    assert the_cli(workdir) == warmed  # the first turn ran on the prewarmed process
    assert "say one" in json.dumps(server.model_requests[-1].body)
    assert g.ask("oncall", "say two", timeout=120).text == "two"
    assert the_cli(workdir) == warmed
    assert "say one" in json.dumps(server.model_requests[-1].body)  # one conversation
    figures = sessions()
    assert (figures.live, figures.busy) == (1, None)  # busy: not counted while nobody waits

    g.stop("oncall")
    no_cli(workdir, "the prewarmed CLI to end with its agent")
    assert sessions().live == 0


@pytest.mark.timeout(240)
def test_a_prewarm_takes_no_busy_session_under_a_cap_of_one(
    capped_at_one: AgentSystem, server: FakeLLMServer, tmp_path: Path
) -> None:
    busy_dir, warm_dir = project(tmp_path, "busy"), project(tmp_path, "warm")
    server.script(Hang(then=Text("busy answer")), Text("warm answer"))
    start_claude("busy", server, tmp_path, busy_dir)
    ref = g.tell("busy", "hang on")
    server.wait_for_requests(1, timeout=120)
    busy_cli = the_cli(busy_dir)
    with TelemetryCapture(["session.prewarm"]) as capture:
        start_claude("warm", server, tmp_path, warm_dir, prewarm=True)
        (_, metadata), *_ = capture.wait_for("session.prewarm", timeout=30)
    assert metadata["outcome"] == "no_slot", metadata
    # The busy session kept its CLI and its slot; the prewarm started nothing.
    assert cli_leaders(busy_dir) == [busy_cli]
    assert cli_leaders(warm_dir) == []
    figures = sessions()
    assert (figures.live, figures.queued) == (1, 0)
    assert g.status("busy").state == "processing"

    # The prewarmed agent's first turn asks as usual: it waits for the busy turn, then the
    # governor retires the (then idle) session and this one gets the slot.
    warm_ref = g.tell("warm", "hello")
    wait_until(lambda: g.status("warm").waiting_for_session, timeout=30)
    server.release_hangs()
    done = wait_until(lambda: (p := g.poll("busy", ref)).done and p, timeout=60)
    assert done.error is None and done.response.text == "busy answer"
    answered = wait_until(lambda: (p := g.poll("warm", warm_ref)).done and p, timeout=120)
    assert answered.error is None and answered.response.text == "warm answer"
    no_cli(busy_dir, "the idle session to be retired for the waiting turn")
    assert len(cli_leaders(warm_dir)) == 1


@pytest.mark.timeout(300)
def test_a_prewarmed_durable_agent_that_hibernates_or_stops_leaves_no_process(
    capped: AgentSystem, server: FakeLLMServer, tmp_path: Path
) -> None:
    workdir = project(tmp_path, "sleepy")
    server.script(Text("awake"))
    with TelemetryCapture(["agent.hibernated", "session.prewarm"]) as capture:
        start_claude(
            "sleepy", server, tmp_path, workdir, prewarm=True, durable=True, hibernate_after=1.0
        )
        first = the_cli(workdir)
        capture.wait_for("agent.hibernated", timeout=60)
    no_cli(workdir, "the prewarmed CLI to end when its agent hibernates")
    assert g.status("sleepy").hibernated
    assert sessions().live == 0

    # A call wakes it: the wake-up prewarms again while the turn comes in; the turn runs
    # on one process (the prewarmed one, or its own if the prewarm came second), never two.
    assert g.ask("sleepy", "wake up", timeout=120).text == "awake"
    woken = the_cli(workdir)
    assert woken != first
    assert "wake up" in json.dumps(server.model_requests[-1].body)

    g.stop("sleepy")
    no_cli(workdir, "the CLI to end with its stopped agent")
    assert sessions().live == 0


@pytest.mark.timeout(240)
def test_a_prewarmed_claude_cli_retired_before_any_turn_leaves_the_session_usable(
    capped: AgentSystem, server: FakeLLMServer, tmp_path: Path
) -> None:
    workdir = project(tmp_path, "idle")
    server.script(Text("fresh"), Text("again"))
    g.start_agent(
        Passthrough,
        name="idle",
        backend="claude",
        backend_options=claude_options(server, tmp_path / "home-idle", workdir),
        worker_idle_timeout=1.0,
        prewarm=True,
    )
    the_cli(workdir)
    no_cli(workdir, "the unused prewarmed CLI to be retired after worker_idle_timeout")
    wait_until(lambda: sessions().live == 0, timeout=30, message="the slot given back")
    # claude recorded nothing for the unused process: the first turn starts the session.
    assert g.ask("idle", "first", timeout=120).text == "fresh"
    assert g.ask("idle", "second", timeout=120).text == "again"
    assert "first" in json.dumps(server.model_requests[-1].body)
    g.stop("idle")
    no_cli(workdir, "no CLI after stop")


# -- codex -----------------------------------------------------------------------------------


@pytest.mark.timeout(300)
def test_a_prewarmed_codex_agent_has_its_app_server_before_the_first_turn(
    capped: AgentSystem, server: FakeLLMServer, tmp_path: Path
) -> None:
    workdir = project(tmp_path, "cx")
    server.script(Text("one"), Text("two"))
    with TelemetryCapture(["session.prewarm"]) as capture:
        g.start_agent(
            Passthrough,
            name="cx",
            backend="codex",
            backend_options=codex_options(server, tmp_path / "home-cx", workdir),
            worker_idle_timeout=600.0,
            prewarm=True,
        )
        warmed = the_cli(workdir, marker=APP)
        (_, metadata), *_ = capture.wait_for("session.prewarm", timeout=90)
    assert metadata["outcome"] == "warm", metadata
    assert server.model_requests == []
    # The thread is open in the app-server, but not in the session until a turn ran on it.
    assert g.backend_session("cx").thread_id is None
    assert (sessions().live, sessions().busy) == (1, None)  # not counted while nobody waits

    assert g.ask("cx", "say one", timeout=120).text == "one"
    assert the_cli(workdir, marker=APP) == warmed
    thread = g.backend_session("cx").thread_id
    assert thread is not None
    assert g.ask("cx", "say two", timeout=120).text == "two"
    assert the_cli(workdir, marker=APP) == warmed
    assert g.backend_session("cx").thread_id == thread
    assert "say one" in json.dumps(server.model_requests[-1].body)  # one thread

    g.stop("cx")
    no_cli(workdir, "the app-server to end with its agent", APP)


@pytest.mark.timeout(300)
def test_a_prewarmed_codex_thread_retired_before_any_turn_is_not_lost(
    capped: AgentSystem, server: FakeLLMServer, tmp_path: Path
) -> None:
    workdir = project(tmp_path, "cx-idle")
    server.script(Text("fresh"))
    g.start_agent(
        Passthrough,
        name="cx-idle",
        backend="codex",
        backend_options=codex_options(server, tmp_path / "home-cx-idle", workdir),
        worker_idle_timeout=1.0,
        prewarm=True,
    )
    the_cli(workdir, timeout=60, marker=APP)
    no_cli(workdir, "the unused app-server to be retired after worker_idle_timeout", APP)
    # codex stored nothing for a thread without a turn: the session never named it, so
    # the first turn starts a thread of its own instead of failing with session_lost.
    assert g.ask("cx-idle", "first", timeout=120).text == "fresh"
    assert g.backend_session("cx-idle").thread_id is not None
    g.stop("cx-idle")
    no_cli(workdir, "no app-server after stop", APP)


@pytest.mark.timeout(300)
def test_a_turn_that_arrives_during_a_codex_prewarm_runs_on_the_one_app_server(
    capped: AgentSystem, server: FakeLLMServer, tmp_path: Path
) -> None:
    workdir = project(tmp_path, "cx-race")
    server.script(Text("at once"))
    with CliSampler(workdir, APP) as sampler:
        g.start_agent(
            Passthrough,
            name="cx-race",
            backend="codex",
            backend_options=codex_options(server, tmp_path / "home-cx-race", workdir),
            worker_idle_timeout=600.0,
            prewarm=True,
        )
        # Asked at once: the prewarm is still starting the app-server (its handshake takes
        # a while); the turn waits for it and uses it instead of starting another.
        assert g.ask("cx-race", "right now", timeout=120).text == "at once"
        running = the_cli(workdir, marker=APP)
    assert sampler.seen == {running}
    assert "right now" in json.dumps(server.model_requests[-1].body)
    g.stop("cx-race")
    no_cli(workdir, "no app-server after stop", APP)
