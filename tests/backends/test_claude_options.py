"""The claude backend's options next to the official SDK's, and network failures.

Option parity (issue 11): every option of ``ClaudeAgentOptions`` that maps to a CLI flag has
an equivalent here; the argv is asserted for each, and the real ``claude`` 2.1.331 shows for
a few that the flag does what the SDK's does (against :class:`FakeLLMServer`). Network
failures: a CLI that cannot reach its API ends the turn with ``kind="transport"`` within the
retry budget the backend sets, and its retries arrive as ``retry`` events.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from genagent_thespian.backends.claude import ClaudeBackend, ClaudeSession, ClaudeTurnTranslator
from support_agents import Passthrough
from support_cli import (
    Tracker,
    assert_groups_gone,
    fake_cli,
    quiet_env,
    require_cli,
    run_turn,
    terminal,
)

import genagent_thespian as g
from genagent_thespian import BackendError, BackendErrorKind, Event, EventKind, InvalidOption
from genagent_thespian._os.ports import free_port
from genagent_thespian.cli import retry_line
from genagent_thespian.testing import FakeLLMServer, Hang, Text, system_processes, wait_until

CAPTURES = Path(__file__).resolve().parent.parent / "data" / "captures"
KEY = "sk-ant-test-not-a-real-key"
pytestmark = pytest.mark.timeout(90)


@pytest.fixture
def fake_binary(tmp_path: Path) -> str:
    return fake_cli(tmp_path, "print('never run')\n", name="claude")


def error_of(event: Event) -> BackendError:
    assert event.kind == EventKind.ERROR, event
    error = event.data["error"]
    assert isinstance(error, BackendError)
    return error


def flag_value(argv: list[str], flag: str) -> str:
    return argv[argv.index(flag) + 1]


# -- option parity: argv -----------------------------------------------------------------


def test_sdk_options_become_the_cli_flags_the_sdk_passes(tmp_path: Path, fake_binary: str) -> None:
    servers = {"files": {"type": "stdio", "command": "mcp-files", "args": ["--root", "/srv"]}}
    backend = ClaudeBackend()
    session = backend.start_session(
        {
            "cli_path": fake_binary,
            "cwd": tmp_path,
            "mcp_servers": servers,
            "settings": {"model": "claude-x"},
            "setting_sources": ["user", "project"],
            "extra_args": {"strict-mcp-config": None, "name": "night shift"},
            "append_system_prompt": "Answer in French.",
            "permission_prompt_tool": "mcp__perm__ask",
            "max_budget_usd": 0.25,
        }
    )
    assert session.binary == fake_binary  # cli_path is the SDK's name of binary
    argv = backend.command(session, prompt=None)
    assert json.loads(flag_value(argv, "--mcp-config")) == {"mcpServers": servers}
    assert json.loads(flag_value(argv, "--settings")) == {"model": "claude-x"}
    assert flag_value(argv, "--setting-sources") == "user,project"
    assert flag_value(argv, "--append-system-prompt") == "Answer in French."
    assert flag_value(argv, "--permission-prompt-tool") == "mcp__perm__ask"
    assert flag_value(argv, "--max-budget-usd") == "0.25"
    assert flag_value(argv, "--name") == "night shift"
    assert "--strict-mcp-config" in argv
    assert "--system-prompt" not in argv  # appending never replaces Claude Code's prompt
    assert argv[-1] == f"--session-id={session.session_id}"  # the backend's flags come last

    # Paths and JSON text are passed as given; an empty source list loads no settings.
    config = tmp_path / "mcp.json"
    config.write_text('{"mcpServers": {}}')
    by_path = backend.start_session(
        {
            "binary": fake_binary,
            "mcp_servers": str(config),
            "settings": '{"model": "m"}',
            "setting_sources": [],
        }
    )
    argv = backend.command(by_path, prompt="hi")
    assert flag_value(argv, "--mcp-config") == str(config)
    assert flag_value(argv, "--settings") == '{"model": "m"}'
    assert flag_value(argv, "--setting-sources") == ""


def test_fork_session_resumes_the_parent_once_then_its_own_id(
    tmp_path: Path, fake_binary: str
) -> None:
    backend = ClaudeBackend()
    parent = str(uuid.uuid4())
    fork = backend.start_session(
        {"binary": fake_binary, "session_id": parent, "resume": True, "fork_session": True}
    )
    assert fork.session_id != parent and not fork.started
    argv = backend.command(fork, prompt=None)
    assert argv[-3:] == [f"--resume={parent}", "--fork-session", f"--session-id={fork.session_id}"]
    started = backend.update_session(fork, Event(EventKind.SESSION_STARTED, {}))
    assert backend.command(started, prompt=None)[-1] == f"--resume={fork.session_id}"
    assert "--fork-session" not in backend.command(started, prompt=None)
    renewed = backend.renew_session(started)
    assert backend.command(renewed, prompt=None)[-1] == f"--session-id={renewed.session_id}"
    assert "--fork-session" not in backend.command(renewed, prompt=None)


def test_the_retry_budget_goes_to_the_cli_environment(fake_binary: str) -> None:
    backend = ClaudeBackend()
    session = backend.start_session({"binary": fake_binary, "max_retries": 0, "api_timeout_s": 2.5})
    env = backend.environment(session)
    assert (env["CLAUDE_CODE_MAX_RETRIES"], env["API_TIMEOUT_MS"]) == ("0", "2500")


@pytest.mark.parametrize(
    ("options", "named"),
    [
        ({"mcp_servers": 3}, "mcp_servers"),
        ({"mcp_servers": {"x": "not a mapping"}}, "mcp_servers"),
        ({"mcp_servers": {"x": {"command": object()}}}, "mcp_servers"),
        ({"settings": ""}, "settings"),
        ({"setting_sources": ["user", "global"]}, "setting_sources"),
        ({"extra_args": ["--debug"]}, "extra_args"),
        ({"extra_args": {"--debug": None}}, "extra_args"),
        ({"extra_args": {"resume": "x"}}, "extra_args"),
        ({"extra_args": {"output-format": "text"}}, "extra_args"),
        ({"extra_args": {"debug": 1}}, "extra_args"),
        ({"fork_session": True}, "fork_session"),
        ({"fork_session": "yes"}, "fork_session"),
        ({"permission_prompt_tool": ""}, "permission_prompt_tool"),
        ({"max_budget_usd": 0}, "max_budget_usd"),
        ({"max_retries": -1}, "max_retries"),
        ({"max_retries": 16}, "max_retries"),
        ({"max_retries": 1, "env": {"CLAUDE_CODE_MAX_RETRIES": "3"}}, "max_retries"),
        ({"api_timeout_s": 0}, "api_timeout_s"),
        ({"cli_path": "/bin/sh", "binary": "/bin/sh"}, "cli_path"),
        ({"append_system_prompt": 7}, "append_system_prompt"),
        ({"append_system_prompt": ""}, "append_system_prompt"),
        ({"system_prompt": 7}, "system_prompt"),
    ],
)
def test_bad_options_are_refused_by_name(
    fake_binary: str, options: dict[str, Any], named: str
) -> None:
    with pytest.raises(InvalidOption, match=named):
        ClaudeBackend().start_session({"binary": fake_binary, **options})


# -- network failures: translator, from the real capture ----------------------------------


def test_an_unreachable_api_is_a_transport_error_after_its_retries() -> None:
    translator = ClaudeTurnTranslator()
    events: list[Event] = []
    for line in (CAPTURES / "claude_unreachable.jsonl").read_bytes().splitlines():
        events += translator.feed_line(line)
    (retry,) = [e for e in events if e.kind == EventKind.RETRY]
    assert (retry.data["attempt"], retry.data["max_retries"]) == (1, 1)
    assert retry_line(retry).startswith("[retry 1/1 in ")
    final = terminal(events)
    error = error_of(final)
    assert (error.kind, error.retryable, error.status_code) == ("transport", True, None)
    assert final.data["code"] == "connection_failed"
    assert "ECONNREFUSED" in error.message


# -- the real claude program ----------------------------------------------------------------


class Harness:
    """The real claude against a fake server, with its process groups tracked."""

    def __init__(self, tmp_path: Path) -> None:
        self.binary = require_cli("claude")
        self.home = tmp_path / "home"
        self.workdir = tmp_path / "project"
        self.workdir.mkdir()
        self.tracker = Tracker()
        self.backend = ClaudeBackend()

    def session(self, url: str, env: dict[str, str] | None = None, **extra: Any) -> ClaudeSession:
        base = {**quiet_env(self.home), "ANTHROPIC_API_KEY": KEY, "ANTHROPIC_BASE_URL": url}
        if "max_retries" in extra:
            del base["CLAUDE_CODE_MAX_RETRIES"]  # set through the option under test
        return self.backend.start_session(
            {"binary": self.binary, "cwd": self.workdir, "env": {**base, **(env or {})}, **extra}
        )

    def turn(self, session: Any, prompt: str) -> tuple[list[Event], Any]:
        return run_turn(self.backend, session, prompt, self.tracker.context())


@pytest.fixture
def real(tmp_path: Path) -> Iterator[Harness]:
    harness = Harness(tmp_path)
    yield harness
    harness.backend.close()
    assert_groups_gone(harness.tracker.groups)


@pytest.fixture
def server() -> Iterator[FakeLLMServer]:
    with FakeLLMServer() as fake:
        yield fake


def closed_port() -> int:
    """A loopback port nothing listens on, from below the ephemeral range (nobody draws it)."""
    return free_port()


@pytest.mark.cli
def test_real_append_system_prompt_keeps_claude_codes_prompt(
    real: Harness, server: FakeLLMServer
) -> None:
    server.script(Text("oui"))
    session = real.session(server.url, append_system_prompt="Always answer in French.")
    events, _ = real.turn(session, "hello")
    assert terminal(events).data["text"] == "oui"
    system = json.dumps(server.model_requests[-1].body.get("system"))
    assert "Always answer in French." in system
    assert "Claude Code" in system  # appended to, not replaced


@pytest.mark.cli
def test_real_empty_system_prompt_replaces_claude_codes_prompt(
    real: Harness, server: FakeLLMServer
) -> None:
    """``system_prompt=""`` is the SDK's default: Claude Code's own prompt is not sent."""
    server.script(Text("default"), Text("bare"))
    events, _ = real.turn(real.session(server.url), "hello")
    assert terminal(events).data["text"] == "default"
    events, _ = real.turn(real.session(server.url, system_prompt=""), "hello")
    assert terminal(events).data["text"] == "bare"
    default, empty = (json.dumps(r.body.get("system")) for r in server.model_requests[-2:])
    assert len(empty) < len(default) / 10  # the CLI's own instructions are not sent


@pytest.mark.cli
def test_real_settings_and_extra_args_reach_the_cli(real: Harness, server: FakeLLMServer) -> None:
    server.script(Text("from settings"))
    session = real.session(
        server.url,
        settings={"model": "claude-from-settings-1"},
        setting_sources=[],
        extra_args={"strict-mcp-config": None},
    )
    events, _ = real.turn(session, "hello")
    assert terminal(events).data["text"] == "from settings"
    assert server.model_requests[-1].model == "claude-from-settings-1"


@pytest.mark.cli
def test_real_fork_session_continues_the_parent_under_a_new_id(
    real: Harness, server: FakeLLMServer
) -> None:
    server.script(Text("noted"), Text("It was HERON."))
    parent = real.session(server.url)
    events, parent = real.turn(parent, "Remember the word HERON")
    assert terminal(events).kind == EventKind.RESULT
    real.backend.terminate_session(parent)
    fork = real.session(server.url, session_id=parent.session_id, resume=True, fork_session=True)
    events, fork = real.turn(fork, "Which word?")
    final = terminal(events)
    assert final.data["text"] == "It was HERON."
    assert final.data["session_id"] == fork.session_id != parent.session_id
    assert "Remember the word HERON" in json.dumps(server.model_requests[-1].body)


@pytest.mark.cli
@pytest.mark.parametrize("retries", [0, 2])
def test_real_unreachable_api_is_a_transport_error_within_the_budget(
    real: Harness, retries: int
) -> None:
    session = real.session(f"http://127.0.0.1:{closed_port()}", max_retries=retries)
    started = time.monotonic()
    events, session = real.turn(session, "hello?")
    elapsed = time.monotonic() - started
    error = error_of(terminal(events))
    assert (error.kind, error.retryable) == (BackendErrorKind.TRANSPORT, True), error
    retries_seen = [e for e in events if e.kind == EventKind.RETRY]
    assert [e.data["attempt"] for e in retries_seen] == list(range(1, retries + 1))
    assert all(e.data["max_retries"] == retries for e in retries_seen)
    # The budget bounds the wait: the announced back-off delays plus start-up slack.
    delays = sum(e.data["delay_ms"] for e in retries_seen) / 1000
    assert elapsed < delays + 30, (elapsed, delays)


@pytest.mark.cli
def test_real_api_that_times_out_then_answers_streams_retries_then_the_result(
    real: Harness, server: FakeLLMServer
) -> None:
    server.script(Hang(), Text("second try"))
    session = real.session(server.url, max_retries=2, api_timeout_s=1.5)
    events, _ = real.turn(session, "hello")
    kinds = [e.kind for e in events]
    assert terminal(events).data["text"] == "second try"
    assert EventKind.RETRY in kinds and kinds.index(EventKind.RETRY) < kinds.index(EventKind.RESULT)
    server.release_hangs()


@pytest.mark.cli
def test_real_api_that_never_answers_is_a_transport_error(
    real: Harness, server: FakeLLMServer
) -> None:
    server.script(Hang(), Hang(), Hang())
    session = real.session(server.url, max_retries=0, api_timeout_s=1.0)
    events, _ = real.turn(session, "hello")
    error = error_of(terminal(events))
    assert error.kind == BackendErrorKind.TRANSPORT, error
    assert "API_TIMEOUT_MS" in error.message  # claude's own advice is kept
    server.release_hangs()


# -- validated at start_agent ----------------------------------------------------------------


@pytest.fixture
def system(tmp_path: Path) -> Iterator[Any]:
    system = g.start_system()
    try:
        yield system
    finally:
        g.shutdown_system(system)
        wait_until(lambda: not system_processes(system), message="processes survived shutdown")


def test_start_agent_names_the_bad_claude_option(system: Any, fake_binary: str) -> None:
    options = {"binary": fake_binary, "setting_sources": ["everywhere"]}
    with pytest.raises(InvalidOption, match="setting_sources"):
        g.start_agent(Passthrough, name="bad", backend="claude", backend_options=options)
    assert g.whereis("bad") is None


@pytest.mark.cli
def test_real_mcp_servers_are_started_by_the_cli(
    real: Harness, server: FakeLLMServer, tmp_path: Path
) -> None:
    marker = tmp_path / "mcp-started"
    script = fake_cli(
        tmp_path,
        f"import sys\nopen({str(marker)!r}, 'w').write(' '.join(sys.argv[1:]))\n",
        name="fake-mcp-server",
    )
    server.script(Text("done"))
    servers = {"probe": {"type": "stdio", "command": script, "args": ["--from-config"]}}
    session = real.session(server.url, mcp_servers=servers)
    events, _ = real.turn(session, "hello")
    assert terminal(events).data["text"] == "done"
    wait_until(marker.exists, timeout=10, message="claude to start the MCP server")
    assert marker.read_text() == "--from-config"
