"""Benchmark 1, turn overhead: ``ask`` on an idle agent against the raw echo round trip.

On multiprocTCPBase, in one fresh framework system and one fresh raw system, interleaved:

* **raw**: ``ask`` of an ``Echo`` actor from a ``private()`` context, the floor;
* **design floor**: the same request through a raw relay actor and a threaded child that
  hands its answer back through a pipe and ``ThespianWatch``: the four hops and the thread
  hand-off a turn needs by design (client -> agent -> worker -> agent -> client), with no
  framework code on the way;
* **agent (scripted)**: ``genagent_thespian.ask`` of an idle agent whose scripted backend
  answers at once (``default="ok"``), the headline figure;
* **agent (instant)**: the same with a backend whose session never changes (the scripted
  session records every prompt, so its pickled size grows by a few bytes per turn);
* **agent (instant, governed)**: the same backend with ``live_session = True``, so every
  turn first asks the session governor (on by default): what a CLI backend's turn pays for
  the cap on live sessions.

On simpleSystemBase (everything in this process) the raw echo ask and the scripted agent
ask are measured the same way. Target: on multiprocTCPBase the agent's p50 is at most 3x the
raw p50.
"""

from __future__ import annotations

import itertools
import time
from typing import Any

import genagent_thespian as g

from ._actors import BenchAgent, Echo, GovernedInstantBackend, InstantBackend, Relay
from ._common import (
    Figure,
    RawSystem,
    Result,
    agent_system,
    interleaved,
    percentile,
    summarize,
)

__all__ = ["run"]


def _sizes(quick: bool) -> tuple[int, int, int]:
    """(rounds, per_round, warmup)."""
    return (2, 20, 10) if quick else (10, 100, 50)


def _checked(reply: Any, expected: Any) -> None:
    if reply != expected:
        raise RuntimeError(f"unexpected reply {reply!r:.80} (wanted {expected!r:.40})")


def run(quick: bool = False) -> Result:
    """Measure the turn overhead on both bases."""
    result = Result("overhead")
    rounds, per_round, warmup = _sizes(quick)
    tcp = _measure_tcp(rounds, per_round, warmup)
    simple = _measure_simple(rounds, per_round, warmup)
    drift_rounds = 3 if quick else 30
    drift = _measure_drift(drift_rounds, per_round)
    result.details = {
        "multiprocTCPBase": tcp,
        "simpleSystemBase": simple,
        "multiprocTCPBase_long_run": drift,
    }
    raw = tcp["raw"]
    samples = raw["samples"]
    result.add(
        Figure(
            key="tcp_ask_p50",
            label="agent ask p50, multiprocTCPBase (scripted backend)",
            unit="ms",
            value=tcp["agent_scripted"]["p50_ms"],
            floor=raw["p50_ms"],
            floor_label="raw echo ask p50",
            samples=samples,
            target="<= 3x raw",
            target_ratio=3.0,
        )
    )
    result.add(
        Figure(
            key="tcp_ask_p99",
            label="agent ask p99, multiprocTCPBase",
            unit="ms",
            value=tcp["agent_scripted"]["p99_ms"],
            floor=raw["p99_ms"],
            floor_label="raw echo ask p99",
            samples=samples,
        )
    )
    result.add(
        Figure(
            key="tcp_ask_instant_p50",
            label="agent ask p50, multiprocTCPBase, constant-session backend",
            unit="ms",
            value=tcp["agent_instant"]["p50_ms"],
            floor=raw["p50_ms"],
            floor_label="raw echo ask p50",
            samples=samples,
        )
    )
    result.add(
        Figure(
            key="tcp_governor_cost_p50",
            label="agent ask p50 through the session governor (live_session backend)",
            unit="ms",
            value=tcp["agent_governed"]["p50_ms"],
            floor=tcp["agent_instant"]["p50_ms"],
            floor_label="the same backend without the governor, p50",
            samples=samples,
            extra={"vs_raw": tcp["agent_governed"]["p50_ms"] / raw["p50_ms"]},
        )
    )
    result.add(
        Figure(
            key="tcp_design_floor_p50",
            label="design floor p50: raw relay + threaded child (4 hops + pipe wake)",
            unit="ms",
            value=tcp["design_floor"]["p50_ms"],
            floor=raw["p50_ms"],
            floor_label="raw echo ask p50",
            samples=samples,
        )
    )
    result.add(
        Figure(
            key="tcp_ask_vs_design_p50",
            label="agent ask p50 against the design floor",
            unit="ms",
            value=tcp["agent_scripted"]["p50_ms"],
            floor=tcp["design_floor"]["p50_ms"],
            floor_label="design floor p50",
            samples=samples,
        )
    )
    for base, details, key in (
        ("multiprocTCPBase", drift, "tcp_ask_drift"),
        ("simpleSystemBase", simple, "simple_ask_drift"),
    ):
        tenths = details["tenth_p50_ms"]
        variant = "agent_instant" if "agent_instant" in tenths else "agent_scripted"
        result.add(
            Figure(
                key=key,
                label=(
                    f"ask p50, last vs first tenth of {details[variant]['samples']} turns, "
                    f"{base} ({variant})"
                ),
                unit="ms",
                value=tenths[variant]["last"],
                floor=tenths[variant]["first"],
                floor_label="the same agent's first-tenth p50",
                samples=int(details[variant]["samples"]) // 10,
                extra={"raw_last_vs_first": tenths["raw"]["last"] / tenths["raw"]["first"]},
            )
        )
    tenths = drift["tenth_p50_ms"]
    result.add(
        Figure(
            key="tcp_timer_cost",
            label=(
                "last-tenth ask p50, default agent vs one without per-turn wakeups "
                "(watchdog=None, worker_idle_timeout=0)"
            ),
            unit="ms",
            value=tenths["agent_instant"]["last"],
            floor=tenths["agent_no_timers"]["last"],
            floor_label="the same turns without per-turn wakeups, last-tenth p50",
            samples=int(drift["agent_instant"]["samples"]) // 10,
            extra={
                "first_tenth_ratio": tenths["agent_instant"]["first"]
                / tenths["agent_no_timers"]["first"]
            },
        )
    )
    result.add(
        Figure(
            key="simple_ask_p50",
            label="agent ask p50, simpleSystemBase",
            unit="ms",
            value=simple["agent_scripted"]["p50_ms"],
            floor=simple["raw"]["p50_ms"],
            floor_label="raw echo ask p50 (simpleSystemBase)",
            samples=simple["raw"]["samples"],
        )
    )
    result.add(
        Figure(
            key="simple_ask_p99",
            label="agent ask p99, simpleSystemBase",
            unit="ms",
            value=simple["agent_scripted"]["p99_ms"],
            floor=simple["raw"]["p99_ms"],
            floor_label="raw echo ask p99 (simpleSystemBase)",
            samples=simple["raw"]["samples"],
        )
    )
    result.notes.append(
        f"{rounds} interleaved rounds of {per_round} timed calls per variant after "
        f"{warmup} warm-up calls each; fresh systems for this benchmark."
    )
    return result


def _measure_tcp(rounds: int, per_round: int, warmup: int) -> dict[str, Any]:
    counter = itertools.count()
    with RawSystem("multiprocTCPBase") as raw, agent_system("multiprocTCPBase") as system:
        echo = raw.create(Echo)
        relay = raw.create(Relay)
        _checked(raw.asys.ask(relay, ("mode", "thread"), 10.0)[0], "mode")
        variants: tuple[tuple[str, Any, dict[str, Any]], ...] = (
            ("scripted", "scripted", {"default": "ok"}),
            ("instant", InstantBackend, {}),
            ("governed", GovernedInstantBackend, {}),
        )
        for name, backend, options in variants:
            g.start_agent(
                BenchAgent,
                name=name,
                backend=backend,
                worker_idle_timeout=600.0,
                system=system,
                **options,
            )
        with raw.asys.private() as context:

            def raw_ask() -> None:
                _checked(context.ask(echo, "x", 10.0), "x")

            def design_ask() -> None:
                token = f"t{next(counter)}"
                _checked(context.ask(relay, token, 10.0), token)

            def agent_ask(name: str) -> None:
                _checked(g.ask(name, "hi", timeout=10.0, system=system).text, "ok")

            samples = interleaved(
                {
                    "raw": raw_ask,
                    "design_floor": design_ask,
                    "agent_scripted": lambda: agent_ask("scripted"),
                    "agent_instant": lambda: agent_ask("instant"),
                    "agent_governed": lambda: agent_ask("governed"),
                },
                rounds=rounds,
                per_round=per_round,
                warmup=warmup,
            )
    summaries: dict[str, Any] = {name: summarize(values) for name, values in samples.items()}
    summaries["round_p50_ms"] = _round_p50s(samples, per_round)
    summaries["tenth_p50_ms"] = _tenth_p50s(samples)
    return summaries


def _tenth_p50s(samples: dict[str, list[float]]) -> dict[str, dict[str, float]]:
    """The p50 of the first and of the last tenth of each variant's samples."""
    tenths = {}
    for name, values in samples.items():
        size = max(1, len(values) // 10)
        tenths[name] = {
            "first": percentile(values[:size], 50) * 1000.0,
            "last": percentile(values[-size:], 50) * 1000.0,
        }
    return tenths


def _round_p50s(samples: dict[str, list[float]], per_round: int) -> dict[str, list[float]]:
    """The p50 of each round, per variant: does a variant slow down as its turns add up?"""
    return {
        name: [
            percentile(values[start : start + per_round], 50) * 1000.0
            for start in range(0, len(values), per_round)
        ]
        for name, values in samples.items()
    }


def _measure_drift(rounds: int, per_round: int) -> dict[str, Any]:
    """Many turns on one agent (constant session), raw echo blocks interleaved.

    Shows whether a turn gets slower as an agent's turns add up (the raw floor's own
    last/first ratio says how much of a change is the machine's). A second agent runs the
    same turns without the two per-turn Thespian wakeups (``watchdog=None``,
    ``worker_idle_timeout=0``), interleaved, to show what those cost.
    """
    with RawSystem("multiprocTCPBase") as raw, agent_system("multiprocTCPBase") as system:
        echo = raw.create(Echo)
        g.start_agent(
            BenchAgent,
            name="instant",
            backend=InstantBackend,
            worker_idle_timeout=600.0,
            system=system,
        )
        g.start_agent(
            BenchAgent,
            name="untimed",
            backend=InstantBackend,
            watchdog=None,
            worker_idle_timeout=0,
            system=system,
        )

        def agent_ask(name: str) -> None:
            _checked(g.ask(name, "hi", timeout=10.0, system=system).text, "ok")

        with raw.asys.private() as context:
            samples = interleaved(
                {
                    "raw": lambda: _checked(context.ask(echo, "x", 10.0), "x"),
                    "agent_instant": lambda: agent_ask("instant"),
                    "agent_no_timers": lambda: agent_ask("untimed"),
                },
                rounds=rounds,
                per_round=per_round,
                warmup=1,
            )
    summaries: dict[str, Any] = {name: summarize(values) for name, values in samples.items()}
    summaries["round_p50_ms"] = _round_p50s(samples, per_round)
    summaries["tenth_p50_ms"] = _tenth_p50s(samples)
    return summaries


def _measure_simple(rounds: int, per_round: int, warmup: int) -> dict[str, Any]:
    with RawSystem("simpleSystemBase") as raw, agent_system("simpleSystemBase") as system:
        echo = raw.create(Echo)
        g.start_agent(BenchAgent, name="scripted", backend="scripted", default="ok", system=system)

        def raw_ask() -> None:
            _checked(raw.asys.ask(echo, "x", 10.0), "x")

        def agent_ask() -> None:
            _checked(g.ask("scripted", "hi", timeout=10.0, system=system).text, "ok")

        samples = interleaved(
            {"raw": raw_ask, "agent_scripted": agent_ask},
            rounds=rounds,
            per_round=per_round,
            warmup=warmup,
        )
    summaries: dict[str, Any] = {name: summarize(values) for name, values in samples.items()}
    summaries["round_p50_ms"] = _round_p50s(samples, per_round)
    summaries["tenth_p50_ms"] = _tenth_p50s(samples)
    return summaries


if __name__ == "__main__":  # pragma: no cover - run.py is the entry point
    started = time.perf_counter()
    print(run(quick=True).as_json(quick=True))
    print(f"{time.perf_counter() - started:.1f}s")
