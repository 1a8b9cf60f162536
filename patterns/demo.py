"""The end-to-end demo: a fleet does work, then survives two crashes on screen.

``run_demo()`` starts its own actor system (``multiprocTCPBase``) and plays three acts:

1. **Work**: a coordinator plans ``agents`` sub-tasks and fans them out to as many one-shot
   worker agents (each its own process); a line per result, the synthesis, and a check that
   every worker was stopped. On the scripted backend it needs no network and no key; with
   ``backend="claude"`` (or any other) this act runs against a real model.
2. **A worker killed mid-turn**: an agent's turn worker process is SIGKILLed while it
   streams; the turn fails with ``TurnCrashed``, the agent itself stays up (same pid) and
   its next turn runs on a fresh worker.
3. **A durable agent SIGKILLed**: with one turn in flight and two queued, the agent process
   itself is killed; its supervisor restarts it, it resumes the same provider session, and
   the queued prompts are answered, none lost and none run twice.

Acts 2 and 3 use scripted agents whatever the backend (a crash needs a turn that is still
running when it comes). The demo ends with what to try next, and shuts the system down.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Callable
from typing import Any

import genagent_thespian as g
from genagent_thespian import GenAgent, Response
from genagent_thespian.testing import Slow, descendants_of, wait_for_exit

from .supervisor import Supervisor

__all__ = ["DemoAgent", "run_demo"]

NEXT_STEPS = (
    "what next:",
    "  genagent node start                      a node that keeps agents between commands",
    "  genagent start genagent_thespian.cli:ScriptedAgent --name a --option script='[\"hi\"]'",
    "  genagent ask a 'hello'                   stream a turn; genagent top: the fleet, live",
    "  genagent console                         the web console (pip install '.[console]')",
    '  README.md Quick start                    your own agent class; backend="claude"',
    "  docs/supervision.md, docs/patterns/      restarts, durability, twelve patterns",
)


class DemoAgent(GenAgent):
    """The agent of the demo's crash acts: every option goes to the scripted backend."""

    def init_agent(self, options: Any) -> dict[str, Any]:
        """Every option goes to the backend."""
        return dict(options)

    def handle_response(self, ref: str, response: Response) -> None:
        """Nothing to decide: the demo reads results with ``poll``."""
        return None


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
        code = _follow(run, system, agents, out, started)
        if code == 0:
            code = _worker_killed(system, out)
        if code == 0:
            code = _durable_killed(system, out)
        if code == 0:
            out(f"demo: done in {time.monotonic() - started:.1f}s")
            for line in NEXT_STEPS:
                out(line)
        return code
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
    """Act 1: print the coordinator's progress as it publishes it, then check its end.

    It reads the published state rather than waiting on the result, so each worker's outcome shows
    as it happens. The act fails unless every worker agent stops after the run.
    """
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
    return 0 if gone == len(result.workers) else 1


def _until(condition: Callable[[], Any], timeout: float = 30.0) -> Any:
    """``condition()``'s first truthy value within ``timeout`` seconds, else ``None``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.02)
    return None


def _poll_done(name: str, ref: str, system: g.AgentSystem, timeout: float = 30.0) -> Any:
    """The outcome of ``ref`` once the agent has one, or ``None`` after ``timeout`` seconds."""
    return _until(lambda: (p := g.poll(name, ref, system=system)).done and p, timeout)


def _review_turn(prompt: str) -> Any:
    """The reviewer's scripted turns: the first review is long enough to be killed."""
    if prompt == "review the synthesis":
        return Slow("reviewing the synthesis line by line, claim by claim", 30.0)
    return "review done on a fresh worker: the synthesis holds"


def _journal_turn(prompt: str) -> Any:
    """The journal's scripted turns: entry one is still being written at the kill."""
    if prompt == "write entry one":
        return Slow("writing entry one, slowly", 30.0)
    return f"{prompt.removeprefix('write ')} written"


def _worker_killed(system: g.AgentSystem, out: Callable[[str], Any]) -> int:
    """Act 2: SIGKILL a turn's worker process and show that the turn fails, the agent stays.

    The waiting caller gets an error naming what happened instead of hanging, and the same agent
    process (same pid) takes the next prompt on a fresh worker.
    """
    name = "demo-reviewer"
    out("act 2: a worker process killed in the middle of a turn")
    g.start_agent(
        DemoAgent,
        name=name,
        backend="scripted",
        restart="permanent",
        default=_review_turn,
        system=system,
    )
    ref = g.tell(name, "review the synthesis", system=system)
    if not _until(lambda: g.status(name, system=system).state == "processing"):
        out("demo failed: the review turn never started")
        return 1
    agent_pid = g.status(name, system=system).pid
    workers = _until(lambda: descendants_of(agent_pid), timeout=10.0) or []
    for pid in workers:
        os.kill(pid, signal.SIGKILL)
    out(f"  SIGKILL to {name}'s turn worker (pid {', '.join(map(str, workers))})")
    # On a loaded machine the kill can land before the new worker's start-up handshake; the
    # agent then learns of the death at the end of its worker start grace (30 s), not at once.
    outcome = _poll_done(name, ref, system, timeout=75.0)
    if outcome is None or outcome.error is None:
        out("demo failed: the killed turn did not fail")
        return 1
    out(f"  the turn failed, and said so: {type(outcome.error).__name__}")
    same = g.status(name, system=system).pid == agent_pid
    out(f"  the agent stayed up: pid {agent_pid} {'unchanged' if same else 'CHANGED'}")
    text = g.ask(name, "review it again", system=system).text
    out(f"  next turn, on a fresh worker: {text}")
    g.stop(name, system=system)
    return 0 if same else 1


def _durable_killed(system: g.AgentSystem, out: Callable[[str], Any]) -> int:
    """Act 3: SIGKILL a durable agent itself, with one turn in flight and two prompts queued.

    Passes when the supervisor restarts it, both queued prompts are answered, the prompt in flight
    is answered once (completed or failed, never run twice) and the backend session is resumed
    rather than started anew.
    """
    name = "demo-journal"
    out("act 3: a durable agent SIGKILLed with one turn in flight and two queued")
    g.start_agent(
        DemoAgent,
        name=name,
        backend="scripted",
        restart="permanent",
        durable=True,
        default=_journal_turn,
        system=system,
    )
    in_flight = g.tell(name, "write entry one", system=system)
    if not _until(lambda: g.status(name, system=system).state == "processing"):
        out("demo failed: the journal turn never started")
        return 1
    queued = [g.tell(name, f"write entry {n}", system=system) for n in ("two", "three")]
    before = g.backend_session(name, system=system)
    old_pid = g.status(name, system=system).pid
    os.kill(old_pid, signal.SIGKILL)
    wait_for_exit(old_pid, 10.0)
    out(f"  SIGKILL to {name} itself (pid {old_pid}); queue: {len(queued)} prompts")

    def back() -> Any:
        """The restarted agent's status, once a process other than the killed one answers."""
        if g.whereis(name, system=system) is None:
            return None
        with contextlib.suppress(g.GenAgentError):
            state = g.status(name, system=system)
            return state if state.pid != old_pid else None
        return None

    state = _until(back)
    if state is None:
        out("demo failed: the durable agent was not restarted")
        return 1
    out(f"  restarted by its supervisor: pid {old_pid} -> {state.pid}, restarts={state.restarts}")
    outcomes = [_poll_done(name, ref, system) for ref in queued]
    if any(o is None or o.response is None for o in outcomes):
        out("demo failed: a queued prompt was lost")
        return 1
    texts = [o.response.text for o in outcomes]
    out(f"  queue intact: {len(texts)} queued prompts answered after the restart: {texts}")
    first = _poll_done(name, in_flight, system)
    verdict = (
        "completed"
        if first and first.response
        else f"answered with {type(first.error).__name__ if first else 'nothing'}"
    )
    out(f"  the turn in flight at the kill was {verdict}: it is never run twice")
    after = g.backend_session(name, system=system)
    resumed = after.session_id == before.session_id and after.resumed
    out(f"  session {after.session_id} resumed: {'yes' if resumed else 'NO'}")
    g.stop(name, system=system)
    return 0 if resumed else 1


def _wait_workers_stopped(workers: list[str], system: g.AgentSystem) -> int:
    """How many of ``workers`` have stopped within 30 seconds."""
    deadline = time.monotonic() + 30.0
    while True:
        alive = set(g.list_agents(system=system)).intersection(workers)
        if not alive or time.monotonic() > deadline:
            return len(workers) - len(alive)
        time.sleep(0.02)
