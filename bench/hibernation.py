"""Benchmark 7, hibernation: many registered durable agents, all asleep, woken by an ask.

The raw floor, in its own fresh system: ``createActor(Echo)`` + one ``ask`` to it, timed
together (what waking costs at the least: a new actor process and a round trip), then the
actor is told to exit. Its samples are taken between the wake-up samples (two after each),
so both see the same machine: measured first, on a machine whose load changed during the
ten minutes of registering, the floor flattered or penalised the ratio. The framework, in
a fresh system:

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

``python -m bench.hibernation --count 10000`` runs the issue's large size: the agents are
started from ``_STARTERS`` threads without the first ask (each start already waits for
the agent's process to be up), and go to sleep ``first_nap(_NAP)`` seconds after their
start, so registering them never holds more than a few seconds' worth of live processes
(the peak is sampled and reported); the wave is 1,000 agents. It also checks that
``status`` of a sleeping agent answers ``hibernated`` without starting a process.
"""

from __future__ import annotations

import argparse
import contextlib
import random
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
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
#: Threads starting the agents of a large run (``--count`` above ``_LARGE``).
_STARTERS = 4
#: From this many agents on, a run is *large*: no first ask, a wave of 1,000.
_LARGE = 1000


def _sizes(quick: bool, count: int | None) -> tuple[int, int, int, int]:
    """(agents, wake-up asks, floor samples, wave)."""
    if count is not None:
        asks = max(1, min(100, count // 4))
        return (count, asks, 200, max(1, min(1000 if count > _LARGE else count // 2, count - asks)))
    return (20, 8, 20, 10) if quick else (300, 100, 200, 150)


class _PeakProcesses(threading.Thread):
    """Samples the number of live processes of ``system`` twice a second, until stopped."""

    def __init__(self, system: g.AgentSystem) -> None:
        super().__init__(name="peak-processes", daemon=True)
        self._system = system
        self._halt = threading.Event()
        self.peak = 0

    def run(self) -> None:
        while not self._halt.is_set():
            self.peak = max(self.peak, len(live_system_processes(self._system)))
            self._halt.wait(0.5)

    def stop(self) -> int:
        self._halt.set()
        self.join(30)
        return self.peak


def _start_all(system: g.AgentSystem, names: list[str], first_ask: bool) -> None:
    """Start every agent (and ask it once when ``first_ask``), from ``_STARTERS`` threads."""

    def start(name: str) -> None:
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
        if first_ask:
            g.ask(name, "hi", timeout=30.0, system=system)

    if first_ask:  # the small run, as measured since it exists: one thread
        for name in names:
            start(name)
        return
    began = time.perf_counter()
    with ThreadPoolExecutor(_STARTERS) as pool:
        for done, _ in enumerate(pool.map(start, names), 1):
            if done % 500 == 0:  # a large run takes minutes: show that it moves
                print(f"  {done} agents started in {time.perf_counter() - began:.0f} s", flush=True)


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


class _Floor:
    """The raw floor's system, kept open so its samples can be taken between others.

    ``sample()`` times one ``createActor(Echo)`` + ``ask`` and tells the actor to exit;
    ``echo_pss`` is one Echo process's PSS (KiB), read when the system opens."""

    def __init__(self) -> None:
        self.seconds: list[float] = []
        self.echo_pss = 0
        self._stack = contextlib.ExitStack()

    def __enter__(self) -> _Floor:
        from thespian.actors import ActorExitRequest

        raw = self._stack.enter_context(RawSystem("multiprocTCPBase"))
        self._raw, self._context = raw, self._stack.enter_context(raw.asys.private())
        probe = raw.create(Echo)
        pid = int(self._context.ask(probe, ("pid",), 10.0)[1])
        self.echo_pss = pss_kib(pid) or 0
        self._context.tell(probe, ActorExitRequest())
        return self

    def __exit__(self, *exc: object) -> None:
        self._stack.close()

    def sample(self) -> None:
        from thespian.actors import ActorExitRequest

        started = time.perf_counter()
        echo = self._raw.create(Echo)
        if self._context.ask(echo, "x", 10.0) != "x":
            raise RuntimeError("the echo actor did not answer")
        self.seconds.append(time.perf_counter() - started)
        self._context.tell(echo, ActorExitRequest())


def _total_pss(pids: list[int]) -> int:
    return sum(pss_kib(pid) or 0 for pid in pids)


def _status_wakes(system: g.AgentSystem, names: list[str], processes: int) -> int:
    """How many of ``names`` (asleep) were woken by a ``status``: must be none."""
    for name in names:
        if not g.status(name, system=system).hibernated:
            raise RuntimeError(f"status of the sleeping {name} does not say hibernated")
    time.sleep(0.5)  # a wake-up would have started a process by now (measured: 25-70 ms)
    still_asleep = sum(1 for name in names if g.status(name, system=system).hibernated)
    return max(len(live_system_processes(system)) - processes, len(names) - still_asleep)


def main(argv: list[str] | None = None) -> int:
    """``python -m bench.hibernation --count N``: one run at N agents, printed and saved."""
    from .run import ROOT, print_table

    parser = argparse.ArgumentParser(description="hibernation benchmark at a chosen size")
    parser.add_argument("--count", type=int, default=10_000)
    parser.add_argument("--results-dir", type=Path, default=ROOT / "bench" / "results")
    args = parser.parse_args(argv)
    began = time.perf_counter()
    result = run(count=args.count)
    result.seconds = time.perf_counter() - began
    result.name = f"hibernation_{args.count}"
    path = result.write(quick=False, directory=args.results_dir)
    print_table(
        f"{result.name} ({result.seconds:.1f} s) -> {path}", result.as_json(quick=False)["figures"]
    )
    for note in result.notes:
        print(f"  note: {note}")
    return 0


def run(quick: bool = False, count: int | None = None) -> Result:
    """Measure what a sleeping agent costs, and what waking it costs (``count`` agents)."""
    count, asks, floor_samples, wave = _sizes(quick, count)
    large = count > _LARGE
    result = Result("hibernation")
    raw_wave = _raw_wave(wave)
    floor_per_wake = max(1, floor_samples // max(1, asks))
    with agent_system("multiprocTCPBase") as system, _Floor() as raw_floor:
        echo_pss = raw_floor.echo_pss
        base_pids = live_system_processes(system)
        base_pss = _total_pss(base_pids)
        names = [f"sleeper-{i}" for i in range(count)]
        started = time.perf_counter()
        peak = _PeakProcesses(system)
        peak.start()
        try:
            _start_all(system, names, first_ask=not large)
        finally:
            peak_while_starting = peak.stop()
        start_seconds = time.perf_counter() - started

        def all_asleep() -> bool:
            return all(g.status(name, system=system).hibernated for name in checked)

        # Every process gone is the proof for all; status is asked of a sample when large.
        checked = random.Random(3).sample(names, min(count, 300)) if large else names
        wait_for(  # (the supervisor's spare agent process stays: + 1)
            lambda: len(live_system_processes(system)) <= len(base_pids) + 1,
            timeout=60.0 + count * 0.05,
            interval=0.2,
            what="every agent process gone",
        )
        wait_for(all_asleep, timeout=60.0 + count * 0.2, interval=0.2, what="every agent asleep")
        asleep_pids = live_system_processes(system)
        asleep_pss = _total_pss(asleep_pids)
        registered = len(g.list_agents(system=system))
        status_woke = _status_wakes(system, random.Random(5).sample(names, 20), len(asleep_pids))

        shuffled = random.Random(7).sample(names, asks + wave)
        chosen, waved = shuffled[:asks], shuffled[asks:]
        wake: list[float] = []
        for name in chosen:
            began = time.perf_counter()
            answer: Any = g.ask(name, "wake up", timeout=60.0, system=system)
            wake.append(time.perf_counter() - began)
            if answer.text != "ok":
                raise RuntimeError(f"{name} answered {answer.text!r}")
            for _ in range(floor_per_wake):
                raw_floor.sample()
        floor = raw_floor.seconds

        if large:  # what is measured so far, in case the wave fails
            print(
                f"  asleep: {len(asleep_pids)} processes, {asleep_pss // 1024} MiB "
                f"(before: {len(base_pids)}, {base_pss // 1024} MiB); wake {summarize(wake)}; "
                f"floor {summarize(floor)}",
                flush=True,
            )

        def wake_one(name: str) -> str:
            try:
                return str(g.ask(name, "wave", timeout=120.0, system=system).text)
            except Exception as error:  # counted and reported below
                return f"{type(error).__name__}: {error}"

        began = time.perf_counter()
        with ThreadPoolExecutor(_THREADS) as pool:
            answers = list(pool.map(wake_one, waved))
        wave_seconds = time.perf_counter() - began
        failed = [answer for answer in answers if answer != "ok"]
    if failed:
        result.notes.append(f"{len(failed)} of {wave} wave asks failed, e.g. {failed[0]}")
    wake_summary, floor_summary = summarize(wake), summarize(floor)
    result.details = {
        "agents": count,
        "registered": registered,
        "start_seconds" if large else "start_and_first_ask_seconds": round(start_seconds, 2),
        "starters": _STARTERS if large else 1,
        "peak_live_processes_while_starting": peak_while_starting,
        "status_of_a_sleeping_agent_woke_it": status_woke,
        "system_processes_before": len(base_pids),
        "system_processes_all_asleep": len(asleep_pids),
        "system_pss_kib_before": base_pss,
        "system_pss_kib_all_asleep": asleep_pss,
        "wake_ask": wake_summary,
        "raw_create_and_ask": floor_summary,
        "raw_echo_pss_kib": echo_pss,
        "wave": {
            "agents": wave,
            "threads": _THREADS,
            "seconds": round(wave_seconds, 2),
            "failed": len(failed),
        },
        "raw_wave_seconds": round(raw_wave, 2),
    }
    result.add(
        Figure(
            key="processes_all_asleep",
            label=f"live processes of the system with {count} agents asleep",
            unit="processes",
            value=float(len(asleep_pids)),
            # A system whose agents sleep keeps one agent process started ahead for the next
            # wake-up (the supervisor's spare): a process of the system, not of an agent.
            floor=float(len(base_pids) + 1),
            floor_label="the same system before any agent started, plus its spare agent process",
            samples=count,
            target="no process per sleeping agent",
            target_ratio=1.0,
        )
    )
    if large:
        result.add(
            Figure(
                key="system_pss_all_asleep",
                label=f"PSS of the whole system with {count} agents asleep",
                unit="MiB",
                value=asleep_pss / 1024,
                floor=base_pss / 1024,
                floor_label="the same system before any agent started",
                samples=len(asleep_pids),
                target="< 1 GiB",
                target_max=1024.0,
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
        "The wake-up ask sends the agent's spec to an agent process started ahead (the "
        "supervisor's spare), which takes its SQLite record over (one write: lease, fence, "
        "process) and runs a turn on a new worker process: one process creation and the "
        "record's read and writes, against the floor's one process creation."
    )
    return result


if __name__ == "__main__":
    raise SystemExit(main())
