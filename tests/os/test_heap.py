"""What an agent's processes hold: the inherited heap stays out of the collector's reach, and
the modules an agent and its worker run on leave the heavy layers out.

An agent and its turn worker are forked processes whose memory is mostly pages shared with
their parents. Two things decide how much of it stays shared, and both are checked here
without measuring memory (which depends on the machine's load): the objects each process
inherited are frozen (a full garbage collection would otherwise write to every one of them),
and importing the package with the agent's and worker's modules, which is what every actor
process inherits, does not pull in layers only the CLI, the console, MCP, telemetry export or
PostgreSQL need.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator

import pytest
from support_backends import HeapReporter

import genagent_thespian as g
from genagent_thespian import AgentSystem
from genagent_thespian.testing import system_processes, wait_until

# A process that imported the package holds tens of thousands of tracked objects; one that
# did not freeze them (or froze them after a collection emptied nothing) reports 0.
INHERITED_OBJECTS_AT_LEAST = 10_000

# What importing the package, an agent, a worker and the claude backend must not load: each
# is several MiB of heap that every actor process would inherit and that none of them uses.
HEAVY_MODULES = (
    "anthropic",
    "asyncio",
    "claude_agent_sdk",
    "genagent_thespian._mcp",
    "genagent_thespian.cli",
    "httpx",
    "mcp",
    "opentelemetry",
    "psycopg",
    "pydantic",
    "pygments",
    "pytest",
    "rich",
    "starlette",
    "structlog",
    "uvicorn",
)

AGENT_PROCESS_MODULES = (
    "genagent_thespian",
    "genagent_thespian._actors.agent",
    "genagent_thespian._actors.worker",
    "genagent_thespian._actors.supervisor",
    "genagent_thespian.backends.claude",
    # The test kit's fakes, as a benchmark or an example uses them outside pytest: the
    # process that starts the system passes its whole heap on to every actor process.
    "genagent_thespian.testing",
)


@pytest.fixture
def system() -> Iterator[AgentSystem]:
    system = g.start_system()
    try:
        yield system
    finally:
        g.shutdown_system(system)
        wait_until(lambda: not system_processes(system), message="processes survived shutdown")


def test_agent_and_worker_processes_freeze_what_they_inherited(system: AgentSystem) -> None:
    g.start_agent(HeapReporter, name="h", backend="support_backends:HeapReportingBackend")
    facts = json.loads(g.ask("h", "report").text)
    assert len({os.getpid(), facts["agent_pid"], facts["worker_pid"]}) == 3
    assert facts["agent_frozen"] >= INHERITED_OBJECTS_AT_LEAST
    assert facts["worker_frozen"] >= INHERITED_OBJECTS_AT_LEAST
    g.stop("h")


def test_an_agent_process_image_leaves_the_heavy_layers_out() -> None:
    # A fresh interpreter: this test process has imported pytest and more, and every actor
    # it started would inherit them.
    code = (
        "import json, sys\n"
        + "".join(f"import {name}\n" for name in AGENT_PROCESS_MODULES)
        + "print(json.dumps(sorted(sys.modules)))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], check=True, capture_output=True, text=True, timeout=120
    ).stdout
    loaded = set(json.loads(out))
    heavy = sorted(
        name for name in loaded if any(name == h or name.startswith(h + ".") for h in HEAVY_MODULES)
    )
    assert heavy == []
