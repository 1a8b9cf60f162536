"""Every backend runs full agent turns through ``start_agent``: the real CLIs and SDKs
against our FakeLLMServer, on multiprocTCPBase, and a durable Claude agent resumes its
session after its process is killed.

Only multiprocTCPBase: real CLI processes belong to worker processes, and the durable test
kills the agent's process.
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
from genagent_thespian.testing import FakeLLMServer, Hang, Text, system_processes, wait_until

KEY = "sk-test-not-a-real-key"


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


def claude_options(server: FakeLLMServer, home: Path, workdir: Path) -> dict[str, Any]:
    env = {**quiet_env(home), "ANTHROPIC_API_KEY": KEY, "ANTHROPIC_BASE_URL": server.url}
    return {"binary": require_cli("claude"), "cwd": str(workdir), "env": env}


def codex_options(server: FakeLLMServer, home: Path, workdir: Path) -> dict[str, Any]:
    provider = {
        "name": "fake",
        "base_url": server.openai_base_url,
        "env_key": "GENAGENT_TEST_CODEX_KEY",
        "supports_websockets": False,
        "request_max_retries": 0,
        "stream_max_retries": 0,
    }
    return {
        "binary": require_cli("codex"),
        "cwd": str(workdir),
        "env": {**quiet_env(home), "GENAGENT_TEST_CODEX_KEY": KEY},
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


def http_options(name: str, server: FakeLLMServer) -> dict[str, Any]:
    if name == "anthropic":
        return {"api_key": KEY, "base_url": server.url, "model": "claude-x"}
    return {"api_key": KEY, "base_url": server.openai_base_url, "model": "gpt-x"}


def conversation(request: Any) -> str:
    return json.dumps(request.body)


@pytest.mark.parametrize("backend", ["claude", "codex", "anthropic", "openai"])
def test_each_backend_runs_agent_turns_that_continue_the_conversation(
    backend: str, system: AgentSystem, server: FakeLLMServer, tmp_path: Path, workdir: Path
) -> None:
    if backend in ("claude", "codex"):
        (tmp_path / "home" / ".codex").mkdir(parents=True)
        make = claude_options if backend == "claude" else codex_options
        options = make(server, tmp_path / "home", workdir)
    else:
        options = http_options(backend, server)
    server.script(Text("First answer from the fake."), Text("Second answer."))
    g.start_agent(Passthrough, name=backend, backend=backend, backend_options=options)
    first = g.ask(backend, "Say something")
    assert first.text == "First answer from the fake."
    assert first.usage is not None and first.usage.output_tokens > 0
    second = g.ask(backend, "And more")
    assert second.text == "Second answer."
    later = server.model_requests[-1]
    assert "Say something" in conversation(later) or backend == "openai"
    if backend == "openai":
        assert later.body.get("previous_response_id")
    status = g.status(backend)
    assert (status.turns, status.backend) == (2, backend)
    g.stop(backend)


@pytest.mark.parametrize("backend", ["anthropic", "openai"])
def test_an_http_agent_keeps_its_connection_across_turns(
    backend: str, system: AgentSystem, server: FakeLLMServer
) -> None:
    """The turn-ending contract lets the producer hand its connection back to the pool."""
    server.script(Text("one"), Text("two"), Text("three"))
    g.start_agent(
        Passthrough, name=backend, backend=backend, backend_options=http_options(backend, server)
    )
    for word in ("one", "two", "three"):
        assert g.ask(backend, f"say {word}").text == word
    ports = {r.client_port for r in server.model_requests}
    assert len(ports) == 1, ports
    g.stop(backend)


@pytest.mark.cli
def test_interrupting_a_claude_agent_ends_the_turn_and_keeps_no_stray_process(
    system: AgentSystem, server: FakeLLMServer, tmp_path: Path, workdir: Path
) -> None:
    options = claude_options(server, tmp_path / "home", workdir)
    server.script(Hang(), Text("after the interrupt"))
    g.start_agent(Passthrough, name="c", backend="claude", backend_options=options)
    ref = g.tell("c", "this will hang")
    server.wait_for_requests(1, timeout=60, where=lambda r: r.is_model_request)
    g.interrupt("c", ref=ref)
    result = wait_until(lambda: (p := g.poll("c", ref)).done and p, timeout=30)
    assert isinstance(result.error, g.TurnInterrupted)
    server.release_hangs()
    assert g.ask("c", "go on").text == "after the interrupt"
    g.stop("c")
    wait_until(lambda: not _claude_processes(workdir), timeout=20, message="claude survived stop")


@pytest.mark.cli
def test_a_durable_claude_agent_killed_mid_session_resumes_the_same_session(
    system: AgentSystem, server: FakeLLMServer, tmp_path: Path, workdir: Path
) -> None:
    options = claude_options(server, tmp_path / "home", workdir)
    server.script(Text("I will remember the word PELICAN."), Hang(), Text("The word was PELICAN."))
    g.start_agent(
        Passthrough,
        name="dc",
        backend="claude",
        backend_options=options,
        durable=True,
        restart="permanent",
    )
    assert "PELICAN" in g.ask("dc", "Remember the word PELICAN").text
    session_id = g.backend_session("dc").session_id
    outcome: list[BaseException | g.Response] = []

    def caller() -> None:
        try:
            outcome.append(g.ask("dc", "this turn is cut short"))
        except BaseException as exc:
            outcome.append(exc)

    thread = threading.Thread(target=caller)
    thread.start()
    server.wait_for_requests(2, timeout=60, where=lambda r: r.is_model_request)
    old_pid = g.status("dc").pid
    os.kill(old_pid, 9)
    thread.join(60)
    server.release_hangs()
    assert len(outcome) == 1 and isinstance(outcome[0], g.AgentRestarted)
    wait_until(lambda: g.whereis("dc") is not None and g.status("dc").pid != old_pid, timeout=30)
    wait_until(lambda: not _claude_processes(workdir, exclude_session=None), timeout=20)
    answer = g.ask("dc", "Which word?")
    assert answer.text == "The word was PELICAN."
    resumed = _claude_processes(workdir)
    assert any(f"--resume={session_id}" in " ".join(cmd) for cmd in resumed), resumed
    last = server.model_requests[-1]
    assert "Remember the word PELICAN" in conversation(last)
    assert g.backend_session("dc").session_id == session_id


def _claude_processes(workdir: Path, exclude_session: Any = None) -> list[list[str]]:
    """Command lines of live processes whose working directory is ``workdir``."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            if os.readlink(f"/proc/{entry}/cwd") != str(workdir):
                continue
            with open(f"/proc/{entry}/cmdline", "rb") as cmdline:
                found.append([p.decode() for p in cmdline.read().split(b"\0") if p])
        except OSError:
            continue
    return found
