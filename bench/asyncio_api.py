"""Benchmark: 1,000 concurrent ``await aio.ask`` from one event loop against the sync API.

* **aio**: ``agents`` idle agents (scripted backend answering at once), warmed by one ask
  each; then ``asks`` coroutines ``aio.ask`` round-robin over the agents, all started at
  once with ``asyncio.gather`` on one event loop. Counts the threads the run adds: the
  asyncio API must add exactly one (its transport), not one per call.
* **floor, the sync API**: the same asks from ``agents`` threads (one per agent), each
  running its share of ``g.ask`` back to back.
* **raw Thespian**: the same number of round trips to ``agents`` raw ``Echo`` actors from
  ``agents`` threads, each with its own ``private()`` context (what both APIs build on).

The two framework variants alternate for ``rounds`` rounds on the same agents (which one
goes first alternates too), so a burst of noise on the shared machine hits both alike;
asks per second are totals over all rounds.

Target (issue 16): aio asks/s >= the sync API's with 50 threads, on one transport thread.

Run: ``python -m bench.asyncio_api [--quick]`` (writes ``bench/results/asyncio_api.json``).
"""

from __future__ import annotations

import argparse
import asyncio
import threading
import time
from typing import Any

import genagent_thespian as g
from genagent_thespian import aio

from ._actors import BenchAgent, Echo
from ._common import Figure, RawSystem, Result, agent_system

__all__ = ["run"]


def _sizes(quick: bool) -> tuple[int, int, int]:
    """(agents, concurrent asks, rounds)."""
    return (10, 200, 2) if quick else (50, 1000, 4)


def run(quick: bool = False) -> Result:
    """Measure aio asks/s (one loop, one transport thread) against the sync API's."""
    agents, asks, rounds = _sizes(quick)
    result = Result("asyncio_api")
    raw = _raw(agents, asks)
    sync_seconds = aio_seconds = 0.0
    added_threads: list[list[str]] = []
    per_round: list[dict[str, float]] = []
    with agent_system("multiprocTCPBase") as system:
        names = [f"agent-{index}" for index in range(agents)]
        for name in names:
            g.start_agent(
                BenchAgent,
                name=name,
                backend="scripted",
                default="ok",
                worker_idle_timeout=600.0,
                max_queued=asks,
                system=system,
            )
        for name in names:
            g.ask(name, "warm", timeout=30.0, system=system)
        for index in range(rounds):
            # Alternate which goes first: the shared machine's load drifts within a round.
            if index % 2:
                seconds, added = _aio_round(system, names, asks)
                sync_round = _sync_round(system, names, asks)
            else:
                sync_round = _sync_round(system, names, asks)
                seconds, added = _aio_round(system, names, asks)
            sync_seconds += sync_round
            aio_seconds += seconds
            per_round.append({"sync_per_s": asks / sync_round, "aio_per_s": asks / seconds})
            added_threads.append(added)
    total = asks * rounds
    result.details = {
        "agents": agents,
        "concurrent_asks": asks,
        "rounds": rounds,
        "threads_added_by_aio_per_round": added_threads,
        "rounds_detail": per_round,
        "raw": raw,
    }
    result.add(
        Figure(
            key="aio_asks_per_second",
            label=f"aio asks/s, {asks} concurrent from one loop to {agents} agents",
            unit="1/s",
            value=total / aio_seconds,
            floor=total / sync_seconds,
            floor_label=f"sync g.ask/s from {agents} threads",
            samples=total,
            target=">= the sync API",
            target_min_ratio=1.0,
        )
    )
    result.add(
        Figure(
            key="aio_vs_raw_round_trips",
            label="aio asks/s against raw Thespian round trips/s",
            unit="1/s",
            value=total / aio_seconds,
            floor=raw["per_second"],
            floor_label=f"raw echo asks/s, {agents} threads x private()",
            samples=total,
        )
    )
    result.notes.append(
        "threads added by each aio round: "
        + ", ".join(str(len(added)) for added in added_threads)
        + " (the transport thread, made once; later rounds reuse it)"
    )
    return result


def _sync_round(system: g.AgentSystem, names: list[str], asks: int) -> float:
    per_thread = asks // len(names)
    failures: list[BaseException] = []

    def worker(name: str) -> None:
        try:
            for _ in range(per_thread):
                if g.ask(name, "work", timeout=120.0, system=system).text != "ok":
                    raise RuntimeError("unexpected answer")
        except BaseException as exc:
            failures.append(exc)

    threads = [threading.Thread(target=worker, args=(name,)) for name in names]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    seconds = time.perf_counter() - started
    if failures:
        raise RuntimeError(f"{len(failures)} sync asks failed: {failures[0]!r}")
    return seconds


def _aio_round(system: g.AgentSystem, names: list[str], asks: int) -> tuple[float, list[str]]:
    before = {thread.ident for thread in threading.enumerate()}

    async def main() -> float:
        started = time.perf_counter()
        responses = await asyncio.gather(
            *(
                aio.ask(names[index % len(names)], "work", timeout=120.0, system=system)
                for index in range(asks)
            )
        )
        seconds = time.perf_counter() - started
        if any(response.text != "ok" for response in responses):
            raise RuntimeError("unexpected answer")
        return seconds

    seconds = asyncio.run(main())
    added = [t.name for t in threading.enumerate() if t.ident not in before]
    return seconds, added


def _raw(agents: int, asks: int) -> dict[str, Any]:
    per_thread = asks // agents
    with RawSystem("multiprocTCPBase") as raw:
        echos = [raw.create(Echo) for _ in range(agents)]

        def worker(echo: Any) -> None:
            with raw.asys.private() as context:
                for index in range(per_thread):
                    if context.ask(echo, index, 30.0) != index:
                        raise RuntimeError("an echo did not come back")

        for echo in echos:
            worker(echo)  # warm every connection
        threads = [threading.Thread(target=worker, args=(echo,)) for echo in echos]
        started = time.perf_counter()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        seconds = time.perf_counter() - started
    return {"round_trips": per_thread * agents, "seconds": seconds, "per_second": asks / seconds}


def main() -> None:
    """Run the benchmark, print its figures and write its JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, one round")
    args = parser.parse_args()
    result = run(quick=args.quick)
    path = result.write(quick=args.quick)
    for figure in result.figures:
        ratio = f"{figure.ratio:.2f}x" if figure.ratio is not None else "-"
        print(
            f"{figure.label}: {figure.value:.0f} {figure.unit} | floor {figure.floor:.0f} "
            f"({figure.floor_label}) | ratio {ratio} | {figure.target or ''}"
        )
    for note in result.notes:
        print("note:", note)
    print("wrote", path)


if __name__ == "__main__":
    main()
