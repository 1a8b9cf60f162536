"""Benchmark 7, hibernation: many registered durable agents, all asleep, woken by an ask.

Raw floor first, in its own fresh system: ``createActor(Echo)`` + one ``ask`` to it, timed
together (what waking costs at the least: a new actor process and a round trip), then the
actor is told to exit. Then the framework, in a fresh system:

* **start**: ``count`` durable scripted agents with a short ``hibernate_after``, each asked
  once (so its client has its address cached, as a real caller would);
* **asleep**: once ``status`` says every one hibernated, the live processes of the system
  are counted against the system's own (registry, supervisor, hub...) and the PSS of all
  of them summed from ``/proc/<pid>/smaps_rollup``;
* **wake**: ``asks`` distinct random sleeping agents are asked once each, timed: the cached
  address is dead, the liveness check wakes the agent from its record, the ask is sent to
  the new process and answered;
* **wave**: ``wave`` other sleeping agents asked at once from ``_THREADS`` threads, against
  the same number of raw ``createActor`` + ask from as many threads (wake-ups per second).

Targets (issue 15): a wake-up ``ask`` p50 at most 5x the raw floor; no process per sleeping
agent.
"""

from __future__ import annotations

import random
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import genagent_thespian as g

from ._actors import BenchAgent, Echo
from ._common import (
    Figure,
    RawSystem,
    Result,
    agent_system,
    live_system_processes,
    pss_kib,
    summarize,
    wait_for,
)

__all__ = ["run"]

#: Idle seconds before the benchmark's agents hibernate.
_NAP = 1.0
#: Client threads of the wave of wake-ups (and of its raw floor).
_THREADS = 16


def _sizes(quick: bool) -> tuple[int, int, int, int]:
    """(agents, wake-up asks, floor samples, wave)."""
    return (20, 8, 20, 10) if quick else (300, 100, 200, 150)


def _raw_wave(count: int) -> float:
    """Seconds for ``count`` raw ``createActor(Echo)`` + ask, from ``_THREADS`` threads."""
    from thespian.actors import ActorExitRequest

    with RawSystem("multiprocTCPBase") as raw:

        def one(_: int) -> None:
            with raw.asys.private() as context:
                echo = context.createActor(Echo)
                if context.ask(echo, "x", 30.0) != "x":
                    raise RuntimeError("the echo actor did not answer")
                context.tell(echo, ActorExitRequest())

        started = time.perf_counter()
        with ThreadPoolExecutor(_THREADS) as pool:
            list(pool.map(one, range(count)))
        return time.perf_counter() - started


def _floor(samples: int) -> tuple[list[float], int]:
    """Seconds of ``createActor(Echo)`` + one ``ask``, ``samples`` times; one Echo's PSS (KiB)."""
    from thespian.actors import ActorExitRequest

    seconds: list[float] = []
    with RawSystem("multiprocTCPBase") as raw, raw.asys.private() as context:
        probe = raw.create(Echo)
        pid = int(context.ask(probe, ("pid",), 10.0)[1])
        echo_pss = pss_kib(pid) or 0
        context.tell(probe, ActorExitRequest())
        for _ in range(samples):
            started = time.perf_counter()
            echo = raw.create(Echo)
            if context.ask(echo, "x", 10.0) != "x":
                raise RuntimeError("the echo actor did not answer")
            seconds.append(time.perf_counter() - started)
            context.tell(echo, ActorExitRequest())
    return seconds, echo_pss


def _total_pss(pids: list[int]) -> int:
    return sum(pss_kib(pid) or 0 for pid in pids)


def run(quick: bool = False) -> Result:
    """Measure what a sleeping agent costs, and what waking it costs."""
    count, asks, floor_samples, wave = _sizes(quick)
    result = Result("hibernation")
    floor, echo_pss = _floor(floor_samples)
    raw_wave = _raw_wave(wave)
    with agent_system("multiprocTCPBase") as system:
        base_pids = live_system_processes(system)
        base_pss = _total_pss(base_pids)
        names = [f"sleeper-{i}" for i in range(count)]
        started = time.perf_counter()
        for name in names:
            g.start_agent(
                BenchAgent,
                name=name,
                backend="scripted",
                default="ok",
                durable=True,
                hibernate_after=_NAP,
                worker_idle_timeout=_NAP / 2,
                system=system,
            )
            g.ask(name, "hi", timeout=30.0, system=system)
        start_seconds = time.perf_counter() - started

        def all_asleep() -> bool:
            return all(g.status(name, system=system).hibernated for name in names)

        wait_for(all_asleep, timeout=60.0 + count * 0.2, interval=0.2, what="every agent asleep")
        wait_for(
            lambda: len(live_system_processes(system)) <= len(base_pids),
            timeout=30.0,
            interval=0.05,
            what="every agent process gone",
        )
        asleep_pids = live_system_processes(system)
        asleep_pss = _total_pss(asleep_pids)

        shuffled = random.Random(7).sample(names, asks + wave)
        chosen, waved = shuffled[:asks], shuffled[asks:]
        wake: list[float] = []
        for name in chosen:
            began = time.perf_counter()
            answer: Any = g.ask(name, "wake up", timeout=60.0, system=system)
            wake.append(time.perf_counter() - began)
            if answer.text != "ok":
                raise RuntimeError(f"{name} answered {answer.text!r}")

        def wake_one(name: str) -> str:
            return str(g.ask(name, "wave", timeout=120.0, system=system).text)

        began = time.perf_counter()
        with ThreadPoolExecutor(_THREADS) as pool:
            answers = list(pool.map(wake_one, waved))
        wave_seconds = time.perf_counter() - began
        if answers != ["ok"] * wave:
            raise RuntimeError(f"the wave got {answers!r}")
    wake_summary, floor_summary = summarize(wake), summarize(floor)
    result.details = {
        "agents": count,
        "start_and_first_ask_seconds": round(start_seconds, 2),
        "system_processes_before": len(base_pids),
        "system_processes_all_asleep": len(asleep_pids),
        "system_pss_kib_before": base_pss,
        "system_pss_kib_all_asleep": asleep_pss,
        "wake_ask": wake_summary,
        "raw_create_and_ask": floor_summary,
        "raw_echo_pss_kib": echo_pss,
        "wave": {"agents": wave, "threads": _THREADS, "seconds": round(wave_seconds, 2)},
        "raw_wave_seconds": round(raw_wave, 2),
    }
    result.add(
        Figure(
            key="processes_all_asleep",
            label=f"live processes of the system with {count} agents asleep",
            unit="processes",
            value=float(len(asleep_pids)),
            floor=float(len(base_pids)),
            floor_label="the same system before any agent started",
            samples=count,
            target="no process per sleeping agent",
            target_ratio=1.0,
        )
    )
    result.add(
        Figure(
            key="pss_per_sleeping_agent",
            label="system PSS added per hibernated agent",
            unit="KiB",
            value=max(1.0, (asleep_pss - base_pss) / count),
            floor=float(echo_pss),
            floor_label="PSS of one raw Echo actor process",
            samples=count,
        )
    )
    for quantile, target in (("p50", 5.0), ("p99", None)):
        result.add(
            Figure(
                key=f"wake_ask_{quantile}",
                label=f"ask to a hibernated agent {quantile} vs raw createActor + ask {quantile}",
                unit="ms",
                value=wake_summary[f"{quantile}_ms"],
                floor=floor_summary[f"{quantile}_ms"],
                floor_label=f"raw createActor(Echo) + ask {quantile}",
                samples=len(wake),
                target="<= 5x floor" if target else "",
                target_ratio=target,
            )
        )
    result.add(
        Figure(
            key="wake_wave_per_second",
            label=f"wake-up asks per second, {wave} sleeping agents from {_THREADS} threads",
            unit="/s",
            value=wave / wave_seconds,
            floor=wave / raw_wave,
            floor_label=f"raw createActor + ask per second, {_THREADS} threads",
            samples=wave,
        )
    )
    result.notes.append(
        "The wake-up ask starts a new agent process, re-opens its SQLite record (lease, "
        "state, session) and runs a turn on a new worker process: two processes and a "
        "store read against the floor's one process."
    )
    return result
