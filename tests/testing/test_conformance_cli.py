"""The backend conformance suite, run for the claude (both modes) and codex backends.

The real programs answer through a :class:`FakeLLMServer`; the tests are skipped when the
programs are not installed (``.ci/install_clis.sh``). After each test no process may remain
whose working directory is the test's project directory.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from genagent_thespian.backends.claude import ClaudeBackend
from genagent_thespian.backends.codex import CodexBackend
from support_cli import quiet_env, require_cli, wait_until

from genagent_thespian.testing._conformance import FakeServerConformance
from genagent_thespian.testing._fake_llm_server import FakeLLMServer

pytestmark = [pytest.mark.cli, pytest.mark.timeout(300)]


def processes_in(directory: Path) -> list[int]:
    """Pids of live processes whose working directory is ``directory``."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            if os.readlink(f"/proc/{entry}/cwd") == str(directory):
                with open(f"/proc/{entry}/stat", "rb") as stat:
                    state = stat.read().rsplit(b")", 1)[1].split()[0]
                if state not in (b"Z", b"X"):
                    found.append(int(entry))
        except OSError:
            continue
    return found


class _CliConformance(FakeServerConformance):
    program = ""
    #: A real CLI's cold start (node loading its bundle) on a machine busy with another run
    #: of the suite can take most of a minute; the bound only says when a stuck turn fails.
    turn_timeout = 90.0

    @pytest.fixture
    def provider(self, tmp_path: Path) -> Iterator[Any]:
        binary = require_cli(self.program)
        with FakeLLMServer() as server:
            server.binary = binary  # type: ignore[attr-defined]
            server.home = tmp_path / "home"  # type: ignore[attr-defined]
            server.workdir = tmp_path / "project"  # type: ignore[attr-defined]
            server.home.mkdir()  # type: ignore[attr-defined]
            (server.home / ".codex").mkdir()  # type: ignore[attr-defined]
            server.workdir.mkdir()  # type: ignore[attr-defined]
            yield server
            wait_until(
                lambda: not processes_in(server.workdir),  # type: ignore[attr-defined]
                10,
                "every CLI process of the test to end",
            )

    @pytest.fixture
    def backend(self, provider: Any) -> Iterator[Any]:
        # Depends on the provider so that it is closed before the provider's process check.
        backend = self.make_backend()
        try:
            yield backend
        finally:
            backend.close()


class TestClaudeConformance(_CliConformance):
    program = "claude"
    mode = "stream"

    def make_backend(self) -> ClaudeBackend:
        return ClaudeBackend()

    def start_options(self, provider: Any) -> dict[str, Any]:
        env = {
            **quiet_env(provider.home),
            "ANTHROPIC_API_KEY": "sk-ant-conformance-dummy",
            "ANTHROPIC_BASE_URL": provider.url,
        }
        return {"binary": provider.binary, "cwd": provider.workdir, "env": env, "mode": self.mode}

    def assert_continues(self, provider: Any, first_prompt: str, first_answer: str) -> None:
        second = json.dumps(provider.model_requests[-1].body["messages"])
        assert first_prompt in second and first_answer in second


class TestClaudePerTurnConformance(TestClaudeConformance):
    mode = "per_turn"


class TestCodexConformance(_CliConformance):
    program = "codex"

    def make_backend(self) -> CodexBackend:
        return CodexBackend()

    def start_options(self, provider: Any) -> dict[str, Any]:
        return {
            "binary": provider.binary,
            "cwd": provider.workdir,
            "env": {**quiet_env(provider.home), "CONFORMANCE_CODEX_KEY": "sk-conformance"},
            "model": "gpt-5.5",
            "provider": {
                "name": "fake",
                "base_url": provider.openai_base_url,
                "env_key": "CONFORMANCE_CODEX_KEY",
                "supports_websockets": False,
                "request_max_retries": 0,
                "stream_max_retries": 0,
            },
            "config": {
                "check_for_update_on_startup": False,
                "analytics.enabled": False,
                "features.plugins": False,
                "features.apps": False,
            },
        }

    def assert_continues(self, provider: Any, first_prompt: str, first_answer: str) -> None:
        second = json.dumps(provider.model_requests[-1].body["input"])
        assert first_prompt in second and first_answer in second


class TestCodexExecConformance(TestCodexConformance):
    """The same suite with codex in its ``exec`` mode (one process per turn)."""

    def start_options(self, provider: Any) -> dict[str, Any]:
        return {**super().start_options(provider), "mode": "exec"}
