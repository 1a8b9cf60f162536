"""The end-to-end demo: a Supervisor fan-out, printing progress as workers finish.

``run_demo()`` starts its own actor system (``multiprocTCPBase``), runs a coordinator that
plans ``agents`` sub-tasks, fans them out to as many one-shot worker agents (each its own
process), prints a line as each result comes in, prints the synthesis, checks that every
worker was stopped, and shuts the system down. On the embedded scripted backend it needs
no network and no API key; with ``backend="claude"`` (or any other) the same graph runs
against a real model.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import genagent_thespian as g
from genagent_thespian.testing import Slow

from .supervisor import Supervisor

__all__ = ["run_demo"]

TOPIC = "why actor supervision suits long-running LLM agents"


def _scripted_worker(prompt: str) -> Any:
    """A worker's scripted turn: a short 'analysis' of its sub-task, streamed over 0.3 s."""
    return Slow(f"notes on {prompt.lower()}: isolated, restartable, observable", 0.3)


def _scripted_synthesis(prompt: str) -> str:
    """The coordinator's scripted synthesis: counts the results it was given."""
    results = [line for line in prompt.splitlines() if line.startswith("- ")]
    return f"Synthesis of {len(results)} results: each agent is one supervised process."


def run_demo(
    *, backend: Any = "scripted", agents: int = 3, out: Callable[[str], Any] = print
) -> int:
    """Run a Supervisor fan-out end to end; return 0 on success, 1 on failure.

    Args:
        backend: The backend of the coordinator and its workers (default: the embedded
            scripted one, no network).
        agents: How many worker agents to fan out to.
        out: Where progress lines go (``print`` by default).
    """
    if isinstance(agents, bool) or not isinstance(agents, int) or agents < 1:
        out(f"demo: agents must be a positive int, got {agents!r}")
        return 1
    scripted = backend == "scripted"
    coordinator_options: dict[str, Any] = {}
    worker_options: dict[str, Any] = {}
    if scripted:
        plan = "\n".join(f"Sub-task {i + 1} of the topic" for i in range(agents))
        coordinator_options["script"] = [plan, _scripted_synthesis]
        worker_options["default"] = _scripted_worker
    started = time.monotonic()
    out(f"demo: supervisor fan-out to {agents} worker agents on the {backend} backend")
    system = g.start_system(base="multiprocTCPBase")
    run: Supervisor | None = None
    try:
        run = Supervisor.start(
            TOPIC,
            backend=backend,
            name="demo-coordinator",
            max_workers=agents,
            worker_options=worker_options,
            worker_timeout=600.0,
            system=system,
            **coordinator_options,
        )
        return _follow(run, system, agents, out, started)
    except g.GenAgentError as exc:
        out(f"demo failed: {exc}")
        return 1
    finally:
        if run is not None:
            try:
                run.stop()
            except g.GenAgentError as exc:
                out(f"demo: stopping the coordinator failed: {exc}")
        g.shutdown_system(system)


def _follow(
    run: Supervisor, system: g.AgentSystem, agents: int, out: Callable[[str], Any], started: float
) -> int:
    shown_plan = False
    reported: set[int] = set()
    deadline = time.monotonic() + 900.0
    while time.monotonic() < deadline:
        state = run.state()
        if state.get("sub_tasks") and not shown_plan:
            shown_plan = True
            out(f"  planned {len(state['sub_tasks'])} sub-tasks; workers starting")
        workers = state.get("workers", [])
        for index, task, text in state.get("results", []):
            if index not in reported:
                reported.add(index)
                out(f"  [{len(reported)}/{agents}] {workers[index]} done: {task} -> {text}")
        for index, task, error in state.get("failures", []):
            if index not in reported:
                reported.add(index)
                out(f"  [{len(reported)}/{agents}] {workers[index]} FAILED: {task}: {error}")
        if state.get("phase") in ("done", "failed"):
            break
        time.sleep(0.02)
    result = run.result(timeout=5.0)
    if not result.ok:
        out(f"demo failed: {result.error}")
        return 1
    out(f"  synthesis: {result.final_output}")
    gone = _wait_workers_stopped(result.workers, system)
    out(f"  workers stopped: {gone}/{len(result.workers)}")
    out(f"demo: done in {time.monotonic() - started:.1f}s")
    return 0 if gone == len(result.workers) else 1


def _wait_workers_stopped(workers: list[str], system: g.AgentSystem) -> int:
    deadline = time.monotonic() + 30.0
    while True:
        alive = set(g.list_agents(system=system)).intersection(workers)
        if not alive or time.monotonic() > deadline:
            return len(workers) - len(alive)
        time.sleep(0.02)
