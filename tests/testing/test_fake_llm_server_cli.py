"""FakeLLMServer drives the real claude and codex programs (skipped when they are absent).

The programs are looked up in ``GENAGENT_CLAUDE_BIN`` / ``GENAGENT_CODEX_BIN``, then in the
npm folder ``.ci/run`` installs (``.ci/tools/node_modules/.bin``), then on ``PATH``.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from genagent_thespian.testing._fake_llm_server import (
    FakeLLMServer,
    HTTPError,
    Reply,
    Text,
    Thinking,
    ToolUse,
)

pytestmark = pytest.mark.cli

REPO = Path(__file__).resolve().parents[2]


def find_program(name: str) -> str | None:
    explicit = os.environ.get(f"GENAGENT_{name.upper()}_BIN")
    if explicit:
        return explicit
    local = REPO / ".ci" / "tools" / "node_modules" / ".bin" / name
    if local.exists():
        return str(local)
    return shutil.which(name)


def run_program(
    argv: list[str], *, cwd: Path, env: dict[str, str], timeout: float = 120
) -> tuple[int, list[dict[str, Any]], str]:
    """Run ``argv`` in its own process group; kill the group on timeout; assert none is left."""
    process = subprocess.Popen(
        argv,
        cwd=cwd,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        stdout, stderr = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.communicate()
        raise
    finally:
        # The program may leave helpers in its group: end them, then wait until none is left.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
    assert group_gone(process.pid, timeout=10), f"processes of group {process.pid} remain"
    lines = [json.loads(line) for line in stdout.splitlines() if line.startswith("{")]
    return process.returncode, lines, stderr


def group_gone(pgid: int, *, timeout: float) -> bool:
    """Wait until no process (zombies included) is left in the group ``pgid``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return True
        threading.Event().wait(0.05)
    return False


@pytest.fixture
def claude_bin() -> str:
    program = find_program("claude")
    if program is None:
        pytest.skip("the claude program is not installed")
    return program


@pytest.fixture
def codex_bin() -> str:
    program = find_program("codex")
    if program is None:
        pytest.skip("the codex program is not installed")
    return program


def test_real_claude_streams_a_text_reply(claude_bin: str, tmp_path: Path) -> None:
    home, project = tmp_path / "home", tmp_path / "project"
    home.mkdir()
    project.mkdir()
    with FakeLLMServer() as server:
        server.script(Reply([Text("Hello from the fake", chunks=3)]))
        env = {
            "HOME": str(home),
            "PATH": os.environ.get("PATH", ""),
            "ANTHROPIC_API_KEY": "sk-ant-api03-cli-test-key",
            "ANTHROPIC_BASE_URL": server.url,
            "CLAUDE_CODE_MAX_RETRIES": "0",
            "DISABLE_AUTOUPDATER": "1",
        }
        argv = [claude_bin, "-p", "hi", "--output-format", "stream-json", "--verbose"]
        argv += ["--include-partial-messages", "--model", "claude-sonnet-4-5"]
        rc, lines, stderr = run_program(argv, cwd=project, env=env)
        assert rc == 0, stderr
        result = lines[-1]
        assert result["type"] == "result"
        assert result["is_error"] is False
        assert result["result"] == "Hello from the fake"
        deltas = [
            line["event"]["delta"]["text"]
            for line in lines
            if line["type"] == "stream_event" and line["event"]["type"] == "content_block_delta"
        ]
        assert "".join(deltas) == "Hello from the fake"
        (request,) = server.model_requests
        assert request.path == "/v1/messages"
        assert request.stream
        assert request.auth_fingerprint == FakeLLMServer.fingerprint("sk-ant-api03-cli-test-key")


def codex_argv(program: str, server: FakeLLMServer, prompt: str) -> list[str]:
    provider = {
        "name": '"fake"',
        "base_url": f'"{server.openai_base_url}"',
        "env_key": '"CODEX_API_KEY"',
        "wire_api": '"responses"',
        "supports_websockets": "false",
        "request_max_retries": "0",
        "stream_max_retries": "0",
    }
    argv = [program, "exec", "--json", "--skip-git-repo-check", "-c", 'model_provider="fake"']
    for key, value in provider.items():
        argv += ["-c", f"model_providers.fake.{key}={value}"]
    return [*argv, "-m", "gpt-5.5", prompt]


def codex_env(tmp_path: Path) -> dict[str, str]:
    codex_home = tmp_path / "home" / ".codex"
    codex_home.mkdir(parents=True)
    return {
        "HOME": str(tmp_path / "home"),
        "CODEX_HOME": str(codex_home),
        "PATH": os.environ.get("PATH", ""),
        "CODEX_API_KEY": "sk-codex-cli-test-key",
    }


def test_real_codex_runs_a_function_call(codex_bin: str, tmp_path: Path) -> None:
    project = tmp_path / "project"
    project.mkdir()
    with FakeLLMServer() as server:
        server.script(
            Reply([Thinking("plan"), ToolUse("exec_command", {"cmd": "echo hi-from-tool"})]),
            Text("The tool said hi."),
        )
        argv = codex_argv(codex_bin, server, "run the tool")
        rc, lines, stderr = run_program(argv, cwd=project, env=codex_env(tmp_path))
        assert rc == 0, stderr
        kinds = [line["type"] for line in lines]
        assert kinds[0] == "thread.started"
        assert kinds[-1] == "turn.completed"
        command = next(
            line["item"]
            for line in lines
            if line["type"] == "item.completed" and line["item"]["type"] == "command_execution"
        )
        assert command["aggregated_output"] == "hi-from-tool\n"
        messages = [
            line["item"]["text"]
            for line in lines
            if line["type"] == "item.completed" and line["item"]["type"] == "agent_message"
        ]
        assert messages == ["The tool said hi."]
        first, second = server.model_requests
        assert first.path == "/v1/responses"
        outputs = [i for i in second.body["input"] if i.get("type") == "function_call_output"]
        assert len(outputs) == 1
        assert "hi-from-tool" in json.dumps(outputs[0])


def test_real_codex_reports_a_rate_limit(codex_bin: str, tmp_path: Path) -> None:
    project = tmp_path / "project"
    project.mkdir()
    with FakeLLMServer(default=HTTPError(429, retry_after=0)) as server:
        rc, lines, _ = run_program(
            codex_argv(codex_bin, server, "hi"), cwd=project, env=codex_env(tmp_path)
        )
        assert rc == 1
        assert lines[-1]["type"] == "turn.failed"
        assert "429" in lines[-1]["error"]["message"]
        assert all(r.status == 429 for r in server.model_requests)
