"""Gaps in the core runtime found while building the operator's tools (strict xfails).

Each test states the behaviour the tools need; it fails today, and turns into an XPASS
(a failure under ``strict=True``) once the core is fixed, so the marker gets removed.
"""

from __future__ import annotations

import contextlib
import os
import signal

import pytest
from support_operator import Scripted

import genagent_thespian as g
from genagent_thespian._api.system import AgentSystem, free_port
from genagent_thespian.testing import TelemetryCapture


def test_attach_to_a_port_without_a_node_raises() -> None:
    port = free_port()
    try:
        system = AgentSystem.attach(port)
    except g.SystemNotRunning:
        return
    # Clean up the system the attach started, then report the gap.
    pgid = system.pgid
    system.asys.shutdown()
    if pgid is not None and pgid != os.getpgid(0):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, signal.SIGKILL)
    pytest.fail(f"attach({port}) started a new actor system instead of failing")


def test_turn_start_telemetry_names_the_backend(any_agent_system: AgentSystem) -> None:
    with TelemetryCapture(["turn.start"], system=any_agent_system) as capture:
        g.start_agent(Scripted, name="a", backend="scripted", script=["hi"])
        g.ask("a", "hello")
        capture.wait_for("turn.start", timeout=10.0)
    _, metadata = capture.named("turn.start")[0]
    assert metadata.get("backend") == "scripted"
