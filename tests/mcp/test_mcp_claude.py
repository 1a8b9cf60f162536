"""The real ``claude`` CLI drives our fleet through ``genagent mcp``.

``FakeLLMServer`` plays the model: its first reply calls our ``ask`` tool
(``mcp__genagent__ask``), its second answers once the tool result is in. The test checks
both ends: our agent ran the prompt Claude chose, and Claude's next request to the model
carried our agent's answer.

Only on ``multiprocTCPBase`` (the ``agent_system`` fixture): ``claude`` starts ``genagent
mcp`` as another process, which attaches to the system by its admin port, and a
``simpleSystemBase`` system runs inside the test's process with no port.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("mcp")

from support_cli import quiet_env, require_cli

import genagent_thespian as g
from genagent_thespian._os.security import SECRET_FILE_ENV, secret_file
from genagent_thespian.cli import ScriptedAgent
from genagent_thespian.testing import FakeLLMServer
from genagent_thespian.testing._fake_llm_server import Reply, Text, ToolUse


@pytest.mark.cli
def test_claude_makes_our_agent_run_a_prompt_through_mcp(
    agent_system: g.AgentSystem, tmp_path: Path
) -> None:
    claude = require_cli("claude")
    g.start_agent(
        ScriptedAgent,
        name="worker",
        backend="scripted",
        default="42, from the genagent worker",
    )
    allow_list = tmp_path / "mcp.toml"
    allow_list.write_text("ask_wait = 60\n", "utf-8")
    secret = str(secret_file())
    server_args = ["-m", "genagent_thespian.cli", "mcp", "--port", str(agent_system.admin_port)]
    server_args += ["--config", str(allow_list)]
    mcp_config = tmp_path / "mcp.json"
    mcp_config.write_text(
        json.dumps(
            {
                "mcpServers": {
                    "genagent": {
                        "command": sys.executable,
                        "args": [*server_args],
                        # claude runs its servers with its own (fake) HOME: name the secret.
                        "env": {SECRET_FILE_ENV: secret, "PATH": os.environ["PATH"]},
                    }
                }
            }
        ),
        "utf-8",
    )
    home = tmp_path / "home"
    home.mkdir()
    with FakeLLMServer() as model:
        model.script(
            Reply(
                [
                    Text("I will ask the worker."),
                    ToolUse(
                        "mcp__genagent__ask",
                        {"agent": "worker", "prompt": "What is six times seven?"},
                        id="toolu_genagent_1",
                    ),
                ]
            ),
            Text("The worker says: 42."),
        )
        env = {
            **os.environ,
            **quiet_env(home),
            "ANTHROPIC_API_KEY": "sk-ant-test-not-a-real-key",
            "ANTHROPIC_BASE_URL": model.url,
        }
        command = [claude, "-p", "Ask the genagent worker what six times seven is."]
        command += ["--output-format", "json", "--mcp-config", str(mcp_config)]
        command += ["--strict-mcp-config", "--allowedTools", "mcp__genagent__ask"]
        done = subprocess.run(
            command,
            env=env,
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=180,
            check=False,
        )
        assert done.returncode == 0, done.stderr + done.stdout
        assert json.loads(done.stdout)["result"] == "The worker says: 42."
        history = g.backend_session("worker").history
        assert history == ("What is six times seven?",)  # our agent ran Claude's prompt
        follow_up = model.model_requests[-1]
        sent = json.dumps(follow_up.body.get("messages"))
        assert "toolu_genagent_1" in sent and "42, from the genagent worker" in sent
    assert g.status("worker").turns == 1
