"""``genagent mcp`` driven by the ``mcp`` package's own client, over stdio and over HTTP.

The server is the real command (``python -m genagent_thespian.cli mcp``) attached to a
real ``multiprocTCPBase`` system of this test; the client is ``mcp.Client``. Not on
``simpleSystemBase``: the server is another process, attached by the admin port, and that
base runs inside the test's process with no port.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("mcp")

import httpx2
from mcp import Client
from mcp.client.stdio import StdioServerParameters
from mcp.client.streamable_http import streamable_http_client
from support_agents import Recorder

import genagent_thespian as g
from genagent_thespian._api.system import free_port
from genagent_thespian.testing import Gate, open_gate, wait_until

CLI = ["-m", "genagent_thespian.cli"]
TOOLS = {
    "list_agents",
    "start_agent",
    "ask",
    "tell",
    "poll",
    "notify",
    "interrupt",
    "halt",
    "resume",
    "status",
    "stop",
}


def write_config(tmp_path: Path, ask_wait: float = 30.0) -> str:
    config = tmp_path / "mcp.toml"
    config.write_text(
        textwrap.dedent(
            f"""
            ask_wait = {ask_wait}

            [profiles.scripted]
            class = "genagent_thespian.cli:ScriptedAgent"
            backend = "scripted"
            options = {{ default = "hello from the fleet" }}
            """
        ),
        "utf-8",
    )
    return str(config)


def stdio_server(system: g.AgentSystem, config: str) -> StdioServerParameters:
    return StdioServerParameters(
        command=sys.executable,
        args=[*CLI, "mcp", "--port", str(system.admin_port), "--config", config],
        env=dict(os.environ),
    )


def listening(port: int) -> bool:
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) == 0


def structured(result: Any) -> Any:
    assert not result.is_error, result.content
    if result.structured_content is not None:
        value = result.structured_content
        return value.get("result", value) if set(value) == {"result"} else value
    return json.loads(result.content[0].text)


def error_text(result: Any) -> str:
    """The tool error's text after the SDK's "Error executing tool <name>: " prefix."""
    assert result.is_error
    return str(result.content[0].text.split(": ", 1)[1])


def test_stdio_every_tool_against_a_real_fleet(agent_system: g.AgentSystem, tmp_path: Path) -> None:
    config = write_config(tmp_path)

    async def main() -> None:
        async with Client(stdio_server(agent_system, config)) as client:
            tools = {tool.name for tool in (await client.list_tools()).tools}
            assert tools == TOOLS
            started = structured(
                await client.call_tool("start_agent", {"profile": "scripted", "name": "a"})
            )
            assert started["name"] == "a"
            listed = structured(await client.call_tool("list_agents", {}))
            assert [row["name"] for row in listed] == ["a"]
            updates: list[tuple[float, str | None]] = []

            async def on_progress(
                progress: float, total: float | None, message: str | None
            ) -> None:
                updates.append((progress, message))

            answer = structured(
                await client.call_tool(
                    "ask", {"agent": "a", "prompt": "hi"}, progress_callback=on_progress
                )
            )
            assert (answer["status"], answer["text"]) == ("completed", "hello from the fleet")
            assert updates and updates[0][1] == "hello from the fleet"
            told = structured(await client.call_tool("tell", {"agent": "a", "prompt": "again"}))
            ref = told["request_id"]
            assert wait_until(lambda: g.poll("a", ref).done)
            polled = structured(await client.call_tool("poll", {"agent": "a", "request_id": ref}))
            assert polled["status"] == "completed"
            for tool in ("halt", "resume"):
                structured(await client.call_tool(tool, {"agent": "a"}))
            structured(await client.call_tool("notify", {"agent": "a", "event": '{"x": 1}'}))
            status = structured(await client.call_tool("status", {"agent": "a"}))
            assert (status["state"], status["turns"]) == ("idle", 2)
            missing = await client.call_tool("interrupt", {"agent": "a"})
            assert error_text(missing).startswith("RequestNotFound:")
            structured(await client.call_tool("stop", {"agent": "a"}))
            gone = await client.call_tool("status", {"agent": "a"})
            assert error_text(gone).startswith("AgentStopped:")  # a name it stopped, not unknown

    asyncio.run(main())
    assert g.list_agents() == []


def test_start_agent_only_from_the_allow_list(agent_system: g.AgentSystem, tmp_path: Path) -> None:
    config = write_config(tmp_path)

    async def main() -> None:
        async with Client(stdio_server(agent_system, config)) as client:
            refused = await client.call_tool(
                "start_agent", {"profile": "os:system", "name": "evil"}
            )
            assert error_text(refused).startswith("InvalidOption: no profile 'os:system'")
            cwd = await client.call_tool(
                "start_agent", {"profile": "scripted", "name": "b", "cwd": "/etc"}
            )
            assert error_text(cwd).startswith("InvalidOption:")

    asyncio.run(main())
    assert g.list_agents() == []


def test_a_long_ask_returns_a_request_id_to_poll(
    agent_system: g.AgentSystem, tmp_path: Path
) -> None:
    config = write_config(tmp_path, ask_wait=0.5)
    gate = tmp_path / "gate"
    g.start_agent(
        Recorder,
        name="slow",
        backend="scripted",
        script=[Gate(str(gate), then="finally")],
    )

    async def main() -> None:
        async with Client(stdio_server(agent_system, config)) as client:
            pending = structured(await client.call_tool("ask", {"agent": "slow", "prompt": "q"}))
            assert pending["status"] == "pending"
            open_gate(gate)
            ref = pending["request_id"]
            wait_until(lambda: g.poll("slow", ref).done)
            done = structured(await client.call_tool("poll", {"agent": "slow", "request_id": ref}))
            assert (done["status"], done["text"]) == ("completed", "finally")

    asyncio.run(main())


def test_http_needs_the_bearer_token_and_serves_the_same_tools(
    agent_system: g.AgentSystem, tmp_path: Path
) -> None:
    config = write_config(tmp_path)
    port = free_port()
    token = "t" * 40
    command = [sys.executable, *CLI, "mcp", "--port", str(agent_system.admin_port)]
    command += ["--config", config, "--transport", "http", "--http-port", str(port)]
    server = subprocess.Popen(
        command,
        env=dict(os.environ, GENAGENT_MCP_TOKEN=token),
        stderr=subprocess.PIPE,
        text=True,
    )
    url = f"http://127.0.0.1:{port}/mcp"
    try:
        assert server.stderr is not None
        assert "serving" in server.stderr.readline()
        wait_until(lambda: listening(port), timeout=20.0)

        def refused(headers: dict[str, str]) -> int:
            return httpx2.post(url, json={}, headers=headers, timeout=10).status_code

        assert refused({}) == 401
        assert refused({"Authorization": "Bearer wrong"}) == 401

        async def main() -> None:
            http = httpx2.AsyncClient(headers={"Authorization": f"Bearer {token}"}, timeout=60)
            async with http, Client(streamable_http_client(url, http_client=http)) as client:
                assert {t.name for t in (await client.list_tools()).tools} == TOOLS
                structured(
                    await client.call_tool("start_agent", {"profile": "scripted", "name": "h"})
                )
                answer = structured(await client.call_tool("ask", {"agent": "h", "prompt": "hi"}))
                assert answer["text"] == "hello from the fleet"

        asyncio.run(main())
    finally:
        server.terminate()
        server.wait(timeout=20)
    assert g.list_agents() == ["h"]
