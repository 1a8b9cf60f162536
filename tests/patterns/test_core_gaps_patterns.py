"""Core gaps found while building the pattern catalogue (issue 5). Each test is xfail(strict).

Each one states what a pattern needed, what the core does today and what was expected; the
patterns work around them as their modules document, and the lead fixes them on main.
"""

from __future__ import annotations

import pytest
from support_patterns import (
    DelayedRetryAgent,
    ImmediateRetryAgent,
    StateReportingAgent,
)

import genagent_thespian as g
from genagent_thespian.testing import Fail

needs_system = pytest.mark.usefixtures("any_agent_system")


@needs_system
def test_client_can_read_agent_state() -> None:
    g.start_agent(StateReportingAgent, name="s", backend="scripted", script=["one"])
    assert g.status("s").agent_state == {"turns_seen": 0}
    g.ask("s", "go")
    assert g.status("s").agent_state == {"turns_seen": 1}


@needs_system
def test_handle_error_can_retry_after_a_delay_under_the_same_ref() -> None:
    g.start_agent(
        DelayedRetryAgent, name="r", backend="scripted", script=[Fail("rate_limited"), "ok"]
    )
    assert g.ask("r", "task", timeout=10).text == "ok"


@needs_system
def test_same_ref_retry_without_delay_keeps_the_ask_waiting() -> None:
    """What the core does provide (the Retry pattern relies on it for zero delays)."""
    g.start_agent(
        ImmediateRetryAgent, name="r", backend="scripted", script=[Fail("rate_limited"), "ok"]
    )
    assert g.ask("r", "task", timeout=10).text == "ok"
