"""Agent classes and script callables used by the pattern tests (importable by actors)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from genagent_thespian import GenAgent, Response


class PlainAgent(GenAgent):
    """Passes every option to the backend and does nothing between turns."""

    def init_agent(self, options: Any) -> dict[str, Any]:
        return dict(options)

    def handle_response(self, ref: str, response: Response) -> None:
        return None


class StateReportingAgent(GenAgent):
    """Counts its turns; used to ask the core for an agent's own state (core gap)."""

    def init_agent(self, options: Any) -> dict[str, Any]:
        self.turns_seen = 0
        return dict(options)

    def handle_response(self, ref: str, response: Response) -> None:
        self.turns_seen += 1

    def agent_state(self) -> dict[str, Any]:
        return {"turns_seen": self.turns_seen}


class DelayedRetryAgent(GenAgent):
    """Asks the core to retry a failed ask after a pause, under the same ref (core gap)."""

    def init_agent(self, options: Any) -> dict[str, Any]:
        return dict(options)

    def handle_response(self, ref: str, response: Response) -> None:
        return None

    def handle_error(self, ref: str, error: Exception) -> Any:
        from genagent_thespian import Prompt

        return Prompt("retry", delay=0.05)


class ImmediateRetryAgent(GenAgent):
    """Retries a failed turn at once by returning ``Prompt`` from ``handle_error``."""

    def init_agent(self, options: Any) -> dict[str, Any]:
        return dict(options)

    def handle_response(self, ref: str, response: Response) -> None:
        return None

    def handle_error(self, ref: str, error: Exception) -> Any:
        from genagent_thespian import Prompt

        return Prompt("retry")


def echo_task(prompt: str) -> str:
    """Scripted item: a worker's result names its task."""
    return f"R[{prompt}]"


def echo_task_and_host(prompt: str) -> str:
    """Scripted item: a worker's result names its task and its host (its ``HOME``'s name).

    The namespace fleet (``tests/support_fleet.py``) gives each host its own ``HOME``, so
    the result tells on which host the worker ran.
    """
    return f"R[{prompt}]@{Path.home().name}"


def fail_t2(prompt: str) -> Any:
    """Scripted item: fails for the task ``t2``, echoes the others."""
    from genagent_thespian.testing import Fail

    return Fail("server_error", "t2 broke") if prompt == "t2" else f"R[{prompt}]"


def always_fail(prompt: str) -> Any:
    """Scripted item: every task fails."""
    from genagent_thespian.testing import Fail

    return Fail("server_error", "nope")


def hang_on_t2(prompt: str) -> Any:
    """Scripted item: ``t2`` streams for a minute (cancelled when stopped), others echo."""
    from genagent_thespian.testing import Slow

    return Slow("never " * 60, 60.0) if prompt == "t2" else f"R[{prompt}]"


def fail_task_4(prompt: str) -> Any:
    """Scripted item: ``task 4`` fails, the others echo."""
    from genagent_thespian.testing import Fail

    return Fail("server_error", "task 4 broke") if prompt == "task 4" else f"R[{prompt}]"
