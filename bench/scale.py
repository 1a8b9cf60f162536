"""Benchmark 3, scale: many idle agents on one machine.

Raw floor first, in its own fresh system: ``count`` ``Echo`` actors created from outside
(``createActor`` time each), their PSS, and the ``ask`` p50 to a random one with 1 and with
``count`` running. Then the framework, in a fresh system, the same way:

* **1 running**: one agent; each sample waits until its worker has retired (the agents run
  with a small ``worker_idle_timeout``), then asks twice: a *cold* ask (the turn starts a
  worker process) and a *warm* ask right after it (the worker is reused);
* **start**: ``count - 1`` more agents, ``start_agent`` timed each; if the machine runs out
  of something, the benchmark reports how far it got and the error;
* **idle**: once every worker has retired, the processes of the system are counted (the
  agents must hold no worker process) and the PSS of every agent process is read from
  ``/proc/<pid>/smaps_rollup``;
* **count running**: cold and warm asks to distinct random agents (never asked before, so
  the cold ask is really cold), each sample waiting until the previous one's worker has
  retired (as in the one-agent phase), then the idle check again.

Target: the warm ``ask`` p50 with ``count`` agents running at most 2x the one with 1 running.
"""

from __future__ import annotations

import contextlib
import os
import queue
import random
import threading
import time
from typing import Any

import genagent_thespian as g
from genagent_thespian import AgentSystem, GenAgentError

from ._actors import BenchAgent, Echo
from ._common import (
    Figure,
    RawSystem,
    Result,
    agent_system,
    live_system_processes,
    percentile,
    process_alive,
    pss_kib,
    summarize,
    wait_for,
)

__all__ = ["run"]

#: Seconds an agent's idle worker lives: small, so workers retire while we watch.
IDLE_TIMEOUT = 0.2


def _sizes(quick: bool) -> tuple[int, int]:
    """(agents, ask samples)."""
    return (10, 5) if quick else (500, 60)


def _ppids() -> dict[int, int]:
    """Map every live process to its parent, in one pass over ``/proc``."""
    parents = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if fields[0] not in ("Z", "X"):
            parents[int(entry)] = int(fields[1])
    return parents


def _workers_of(agent_pids: list[int]) -> list[int]:
    wanted = set(agent_pids)
    return [pid for pid, parent in _ppids().items() if parent in wanted]


def run(quick: bool = False) -> Result:
    """Start many agents and measure what they cost."""
    count, samples = _sizes(quick)
    result = Result("scale")
    raw = _raw(count, samples)
    framework = _framework(count, samples)
    result.details = {"count": count, "ask_samples": samples, "raw": raw, "framework": framework}
    reached = framework["started"]
    if reached < count:
        result.notes.append(
            f"only {reached} of {count} agents started: {framework.get('start_error')}"
        )
    result.add(
        Figure(
            key="pss_per_idle_agent",
            label=f"PSS per idle agent ({reached} running)",
            unit="MiB",
            value=framework["pss_mean_kib"] / 1024.0,
            floor=raw["pss_mean_kib"] / 1024.0,
            floor_label=f"PSS per idle raw actor ({count} running)",
            samples=framework["pss_samples"],
        )
    )
    result.add(
        Figure(
            key="start_per_agent",
            label="start_agent time per agent, p50",
            unit="ms",
            value=framework["start"]["p50_ms"],
            floor=raw["create"]["p50_ms"],
            floor_label="raw createActor p50",
            samples=int(framework["start"]["samples"]),
        )
    )
    result.add(
        Figure(
            key="ask_warm_many_vs_one",
            label=f"warm ask p50, {reached} agents running vs 1",
            unit="ms",
            value=framework["many"]["warm"]["p50_ms"],
            floor=framework["one"]["warm"]["p50_ms"],
            floor_label="warm ask p50 with 1 agent running",
            samples=int(framework["many"]["warm"]["samples"]),
            target="<= 2x",
            target_ratio=2.0,
        )
    )
    result.add(
        Figure(
            key="ask_cold_many_vs_one",
            label=f"cold ask p50 (starts a worker), {reached} running vs 1",
            unit="ms",
            value=framework["many"]["cold"]["p50_ms"],
            floor=framework["one"]["cold"]["p50_ms"],
            floor_label="cold ask p50 with 1 agent running",
            samples=int(framework["many"]["cold"]["samples"]),
        )
    )
    result.add(
        Figure(
            key="ask_warm_connected_client",
            label=f"warm ask p50 from a client that talked to all {reached} agents, vs 1 running",
            unit="ms",
            value=framework["many_from_connected_client"]["warm"]["p50_ms"],
            floor=framework["one"]["warm"]["p50_ms"],
            floor_label="warm ask p50 with 1 agent running",
            samples=int(framework["many_from_connected_client"]["warm"]["samples"]),
        )
    )
    result.add(
        Figure(
            key="raw_ask_connected_client",
            label=f"raw echo ask p50 from a client that talked to all {count}, vs 1 running",
            unit="ms",
            value=raw["many_from_connected_client"]["p50_ms"],
            floor=raw["one"]["p50_ms"],
            floor_label="raw echo ask p50 with 1 running",
            samples=int(raw["many_from_connected_client"]["samples"]),
        )
    )
    result.add(
        Figure(
            key="raw_ask_many_vs_one",
            label=f"raw echo ask p50, {count} actors running vs 1 (the floor's own scaling)",
            unit="ms",
            value=raw["many"]["p50_ms"],
            floor=raw["one"]["p50_ms"],
            floor_label="raw echo ask p50 with 1 running",
            samples=int(raw["many"]["samples"]),
        )
    )
    result.add(
        Figure(
            key="warm_ask_vs_raw_many",
            label=f"warm agent ask p50 vs raw echo ask p50, both with {count} running",
            unit="ms",
            value=framework["many"]["warm"]["p50_ms"],
            floor=raw["many"]["p50_ms"],
            floor_label=f"raw echo ask p50 with {count} running",
            samples=int(framework["many"]["warm"]["samples"]),
        )
    )
    result.add(
        Figure(
            key="processes_per_idle_agent",
            label="processes per idle agent (workers retired)",
            unit="processes",
            value=framework["processes_per_idle_agent"],
            floor=1.0,
            floor_label="one process per raw actor",
            samples=reached,
            target="= 1 (no worker process)",
            target_max=1.0,
        )
    )
    return result


# ============================================================================ raw


def _raw(count: int, samples: int) -> dict[str, Any]:
    clock = time.perf_counter
    with (
        RawSystem("multiprocTCPBase") as raw,
        raw.asys.private() as context,
        raw.asys.private() as everyone,
    ):
        created: list[float] = []
        echos = []
        for index in range(count):
            started = clock()
            echos.append(context.createActor(Echo))
            created.append(clock() - started)
            if index == 0:
                one = _raw_asks(context, echos, samples)
        # A second context talks to every actor (to read the pids): Thespian's transport
        # then watches all those sockets on every loop; asks are measured from both.
        pids = [int(everyone.ask(echo, ("pid",), 10.0)[1]) for echo in echos]
        pss = [value for value in (pss_kib(pid) for pid in pids) if value is not None]
        chosen = random.sample(echos, min(samples + 2, len(echos)))
        many = _raw_asks(context, chosen, samples)
        many_connected = _raw_asks(everyone, chosen, samples)
    tenth = max(1, len(created) // 10)
    return {
        "create": summarize(created),
        "create_first_tenth_p50_ms": percentile(created[:tenth], 50) * 1000.0,
        "create_last_tenth_p50_ms": percentile(created[-tenth:], 50) * 1000.0,
        "one": one,
        "many": many,
        "many_from_connected_client": many_connected,
        "pss_mean_kib": sum(pss) / len(pss),
        "pss_samples": len(pss),
    }


def _raw_asks(context: Any, echos: list[Any], samples: int) -> dict[str, float]:
    """Ask each of ``echos`` (cycling) twice in a row; time the second ask."""
    times = []
    for index in range(samples + 2):
        echo = echos[index % len(echos)]
        context.ask(echo, "first", 10.0)
        started = time.perf_counter()
        if context.ask(echo, "x", 10.0) != "x":
            raise RuntimeError("an echo actor did not answer")
        times.append(time.perf_counter() - started)
    return summarize(times[2:])


# ============================================================================ framework


def _start(system: AgentSystem, index: int) -> float:
    started = time.perf_counter()
    g.start_agent(
        BenchAgent,
        name=f"agent-{index}",
        backend="scripted",
        default="ok",
        worker_idle_timeout=IDLE_TIMEOUT,
        system=system,
    )
    return time.perf_counter() - started


def _cold_then_warm(system: AgentSystem, name: str) -> tuple[float, float]:
    clock = time.perf_counter
    started = clock()
    g.ask(name, "cold", timeout=30.0, system=system)
    cold = clock() - started
    started = clock()
    g.ask(name, "warm", timeout=30.0, system=system)
    return cold, clock() - started


class _Client:
    """A thread of its own (so a Thespian endpoint of its own) that runs calls on request."""

    def __init__(self, system: AgentSystem) -> None:
        self._system = system
        self._requests: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._serve, name="bench-client", daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while True:
            request = self._requests.get()
            if request is None:
                return
            function, replies = request
            try:
                replies.put((True, function()))
            except BaseException as exc:
                replies.put((False, exc))

    def call(self, function: Any) -> Any:
        """Run ``function()`` on the client's thread and return its result (or raise)."""
        replies: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._requests.put((function, replies))
        ok, value = replies.get(timeout=600.0)
        if not ok:
            raise value
        return value

    def close(self) -> None:
        """End the thread."""
        self._requests.put(None)
        self._thread.join(10.0)


def _framework(count: int, samples: int) -> dict[str, Any]:
    details: dict[str, Any] = {}
    with agent_system("multiprocTCPBase") as system:
        base_processes = len(live_system_processes(system))
        starts = [_start(system, 0)]
        first_pid = g.status("agent-0", system=system).pid
        cold: list[float] = []
        warm: list[float] = []
        for _ in range(samples + 2):
            wait_for(lambda: not _workers_of([first_pid]), timeout=10.0, what="worker retired")
            one_cold, one_warm = _cold_then_warm(system, "agent-0")
            cold.append(one_cold)
            warm.append(one_warm)
        details["one"] = {"cold": summarize(cold[2:]), "warm": summarize(warm[2:])}

        started = 1
        began = time.perf_counter()
        for index in range(1, count):
            try:
                starts.append(_start(system, index))
            except (GenAgentError, OSError) as exc:
                details["start_error"] = f"agent {index}: {type(exc).__name__}: {exc}"
                break
            started += 1
        details["start_all_seconds"] = time.perf_counter() - began
        details["started"] = started
        details["start"] = summarize(starts)
        tenth = max(1, len(starts) // 10)
        details["start_first_tenth_p50_ms"] = percentile(starts[:tenth], 50) * 1000.0
        details["start_last_tenth_p50_ms"] = percentile(starts[-tenth:], 50) * 1000.0
        names = [f"agent-{index}" for index in range(started)]
        # Another thread (so another Thespian endpoint) reads every agent's pid: this
        # thread's endpoint then only knows the agents it asks, as a client usually does.
        everyone = _Client(system)
        pids = everyone.call(lambda: [g.status(name, system=system).pid for name in names])

        details.update(_idle_check(system, pids, base_processes, "before_asks"))
        pss = [value for value in (pss_kib(pid) for pid in pids) if value is not None]
        details["pss_mean_kib"] = sum(pss) / len(pss)
        details["pss_p50_kib"] = percentile([float(v) for v in pss], 50)
        details["pss_samples"] = len(pss)

        cold, warm = [], []
        chosen = random.sample(names[1:], min(samples + 2, len(names) - 1)) or names
        pid_of = dict(zip(names, pids, strict=True))

        def quiet(name: str) -> None:
            # As in the one-agent phase: the previous sample's worker has retired, so no
            # worker is exiting in the background while this sample runs.
            wait_for(lambda: not _workers_of([pid_of[name]]), timeout=10.0, what="retired")

        for name in chosen:
            many_cold, many_warm = _cold_then_warm(system, name)
            cold.append(many_cold)
            warm.append(many_warm)
            quiet(name)
        details["many"] = {"cold": summarize(cold[2:]), "warm": summarize(warm[2:])}

        def from_connected_client() -> list[float]:
            times = []
            for name in chosen:
                times.append(_cold_then_warm(system, name)[1])
                quiet(name)
            return times

        connected = everyone.call(from_connected_client)
        everyone.close()
        details["many_from_connected_client"] = {"warm": summarize(connected[2:])}
        details.update(_idle_check(system, pids, base_processes, "after_asks"))
        details["processes_per_idle_agent"] = details["after_asks"]["per_agent"]
        shutdown_started = time.perf_counter()
    details["shutdown_seconds"] = time.perf_counter() - shutdown_started
    return details


def _idle_check(
    system: AgentSystem, pids: list[int], base_processes: int, label: str
) -> dict[str, Any]:
    """Wait until no agent holds a worker, then count the system's processes."""
    with contextlib.suppress(TimeoutError):
        wait_for(lambda: not _workers_of(pids), timeout=IDLE_TIMEOUT * 10 + 10.0, interval=0.05)
    workers = _workers_of(pids)
    processes = len(live_system_processes(system))
    alive = sum(1 for pid in pids if process_alive(pid))
    return {
        label: {
            "agents_alive": alive,
            "workers": len(workers),
            "system_processes": processes,
            "base_processes": base_processes,
            "per_agent": (processes - base_processes) / max(1, len(pids)),
        }
    }
