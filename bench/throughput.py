"""Benchmark 2, throughput: many agents with queued tells, all completed, against raw messages.

* **framework**: ``agents`` idle agents (scripted backend answering at once), warmed by one
  ``ask`` each; then ``per_agent`` tells to every agent, round-robin, from one client
  thread; done when every tell's ``turn.stop`` telemetry event has arrived (counted by a
  handler attached in this process; afterwards every ref is polled to check it completed).
  Turns per second = tells / (last ``turn.stop`` - first tell).
* **raw floor**: ``agents`` raw ``Echo`` actors, warmed the same way; ``per_agent``
  messages to every one, round-robin, from one ``private()`` context; done when every
  echo has come back. Messages per second the same way.

Target: framework turns/s at least 25 % of raw messages/s.
"""

from __future__ import annotations

import os
import threading
import time
from typing import Any

import genagent_thespian as g

from ._actors import BenchAgent, Echo
from ._common import Figure, RawSystem, Result, agent_system, cpu_by_role, cpu_seconds

__all__ = ["run"]


def _sizes(quick: bool) -> tuple[int, int]:
    """(agents, tells per agent)."""
    return (10, 5) if quick else (50, 20)


def run(quick: bool = False) -> Result:
    """Measure turns per second against raw messages per second."""
    agents, per_agent = _sizes(quick)
    total = agents * per_agent
    result = Result("throughput")
    raw = _raw(agents, per_agent)
    framework = _framework(agents, per_agent)
    drained = _framework(agents, per_agent, queue_first=True)
    result.details = {
        "agents": agents,
        "per_agent": per_agent,
        "raw": raw,
        "framework": framework,
        "queued_then_resumed": drained,
    }
    result.add(
        Figure(
            key="turns_per_second",
            label=f"turns/s, {agents} agents x {per_agent} queued tells",
            unit="1/s",
            value=framework["per_second"],
            floor=raw["per_second"],
            floor_label=f"raw echo messages/s, {agents} actors x {per_agent}",
            samples=total,
            target=">= 25% of raw",
            target_min_ratio=0.25,
        )
    )
    result.add(
        Figure(
            key="tell_issue_per_second",
            label="tells accepted/s by the client loop (each tell is a round trip)",
            unit="1/s",
            value=framework["tells_per_second"],
            floor=raw["sends_per_second"],
            floor_label="raw tells sent/s by the client loop",
            samples=total,
        )
    )
    result.add(
        Figure(
            key="drain_turns_per_second",
            label="turns/s draining the same tells queued while halted (clock from resume)",
            unit="1/s",
            value=drained["per_second"],
            floor=raw["per_second"],
            floor_label=f"raw echo messages/s, {agents} actors x {per_agent}",
            samples=total,
        )
    )
    result.notes.append(
        "One client thread issues all tells round-robin; a framework tell is acknowledged "
        "(a round trip), a raw tell is one-way."
    )
    return result


def _raw(agents: int, per_agent: int) -> dict[str, Any]:
    total = agents * per_agent
    with RawSystem("multiprocTCPBase") as raw:
        echos = [raw.create(Echo) for _ in range(agents)]
        with raw.asys.private() as context:
            pids = []
            for echo in echos:
                if context.ask(echo, "warm", 10.0) != "warm":
                    raise RuntimeError("an echo actor did not answer its warm-up")
                pids.append(int(context.ask(echo, ("pid",), 10.0)[1]))
            cpu_before = sum(cpu_seconds(pid) for pid in pids), cpu_seconds(os.getpid())
            started = time.perf_counter()
            for index in range(per_agent):
                for echo in echos:
                    context.tell(echo, f"m{index}")
            sent = time.perf_counter()
            received = 0
            while received < total:
                if context.listen(30.0) is None:
                    raise RuntimeError(f"only {received} of {total} echoes came back")
                received += 1
            finished = time.perf_counter()
            cpu_after = sum(cpu_seconds(pid) for pid in pids), cpu_seconds(os.getpid())
    return {
        "cpu_ms_per_message": {
            "actors": round((cpu_after[0] - cpu_before[0]) * 1000.0 / total, 3),
            "client": round((cpu_after[1] - cpu_before[1]) * 1000.0 / total, 3),
        },
        "messages": total,
        "seconds": finished - started,
        "per_second": total / (finished - started),
        "sends_per_second": total / (sent - started),
    }


def _framework(agents: int, per_agent: int, *, queue_first: bool = False) -> dict[str, Any]:
    """Run ``agents x per_agent`` tells and time them to the last ``turn.stop``.

    With ``queue_first`` every agent is halted while the tells are queued and the clock
    starts at the first ``resume``: the agents' own draining rate, without the client's
    tell loop in the way.
    """
    total = agents * per_agent
    names = [f"agent-{index}" for index in range(agents)]
    done = threading.Condition()
    stopped: dict[str, float] = {}

    def on_turn_stop(name: str, measurements: dict[str, Any], metadata: dict[str, Any]) -> None:
        with done:
            stopped[metadata["ref"]] = time.perf_counter()
            done.notify_all()

    with agent_system("multiprocTCPBase") as system:
        for name in names:
            g.start_agent(
                BenchAgent,
                name=name,
                backend="scripted",
                default="ok",
                worker_idle_timeout=600.0,
                max_queued=per_agent + 10,
                system=system,
            )
        for name in names:
            g.ask(name, "warm", timeout=10.0, system=system)
        agent_pids = [g.status(name, system=system).pid for name in names]
        if queue_first:
            for name in names:
                g.halt(name, system=system)
        handler_id = f"bench-throughput-{id(stopped)}"
        g.attach(handler_id, ["turn.stop"], on_turn_stop, system=system)
        try:
            refs: list[tuple[str, str]] = []
            cpu_before = cpu_by_role(system, agent_pids)
            started = time.perf_counter()
            for _ in range(per_agent):
                for name in names:
                    refs.append((name, g.tell(name, "work", system=system)))
            issued = time.perf_counter()
            if queue_first:
                started = time.perf_counter()
                for name in names:
                    g.resume(name, system=system)
            wanted = {ref for _, ref in refs}
            with done:
                if not done.wait_for(lambda: wanted <= stopped.keys(), timeout=300.0):
                    missing = len(wanted - stopped.keys())
                    raise RuntimeError(f"{missing} of {total} tells never completed")
            finished = max(stopped[ref] for ref in wanted)
            cpu_after = cpu_by_role(system, agent_pids)
        finally:
            g.detach(handler_id, system=system)
        failed = [
            ref for name, ref in refs if g.poll(name, ref, system=system).state != "completed"
        ]
        if failed:
            raise RuntimeError(f"{len(failed)} tells did not complete successfully")
    return {
        "turns": total,
        "seconds": finished - started,
        "per_second": total / (finished - started),
        "tells_per_second": total / (issued - started) if not queue_first else None,
        "cpu_ms_per_turn": {
            role: round((cpu_after[role] - cpu_before[role]) * 1000.0 / total, 3)
            for role in cpu_before
        },
    }
