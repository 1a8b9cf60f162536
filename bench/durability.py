"""Benchmark 5, durability cost: turn overhead with ``durable=True`` against without.

Needs durable agents (issue 4). The probe in :mod:`bench._durability` decides: until a
durable agent killed with SIGKILL comes back under its name with its session, the figure
is reported as skipped with the probe's reason. When it works, one fresh system runs a
durable and a plain scripted agent side by side and their ``ask`` latencies are sampled in
interleaved blocks together with the raw echo floor, as in the turn-overhead benchmark.
"""

from __future__ import annotations

from typing import Any

import genagent_thespian as g

from ._actors import BenchAgent, Echo
from ._common import Figure, RawSystem, Result, agent_system, interleaved, summarize
from ._durability import probe_durability, start_durable

__all__ = ["run"]


def _sizes(quick: bool) -> tuple[int, int, int]:
    """(rounds, per_round, warmup)."""
    return (2, 20, 10) if quick else (10, 100, 50)


def run(quick: bool = False) -> Result:
    """Measure what ``durable=True`` adds to a turn, or say why it cannot yet."""
    rounds, per_round, warmup = _sizes(quick)
    result = Result("durability")
    with agent_system("multiprocTCPBase") as system:
        reason = probe_durability(system)
    if reason is not None:
        result.details = {"skipped": reason}
        for key, label in (
            ("durable_ask_p50", "durable agent ask p50 vs plain agent ask p50"),
            ("durable_ask_p99", "durable agent ask p99 vs plain agent ask p99"),
        ):
            result.add(
                Figure(
                    key=key,
                    label=label,
                    unit="ms",
                    value=None,
                    floor=None,
                    floor_label="plain (non-durable) agent ask",
                    samples=0,
                    skipped=f"durability not available: {reason}",
                )
            )
        return result

    with RawSystem("multiprocTCPBase") as raw, agent_system("multiprocTCPBase") as system:
        echo = raw.create(Echo)
        start_durable(system, "durable")
        g.start_agent(
            BenchAgent,
            name="plain",
            backend="scripted",
            default="ok",
            worker_idle_timeout=600.0,
            system=system,
        )
        with raw.asys.private() as context:

            def raw_ask() -> None:
                if context.ask(echo, "x", 10.0) != "x":
                    raise RuntimeError("the echo actor did not answer")

            def agent_ask(name: str) -> Any:
                return g.ask(name, "hi", timeout=10.0, system=system)

            samples = interleaved(
                {
                    "raw": raw_ask,
                    "plain": lambda: agent_ask("plain"),
                    "durable": lambda: agent_ask("durable"),
                },
                rounds=rounds,
                per_round=per_round,
                warmup=warmup,
            )
    summaries = {name: summarize(values) for name, values in samples.items()}
    result.details = summaries
    for quantile in ("p50", "p99"):
        result.add(
            Figure(
                key=f"durable_ask_{quantile}",
                label=f"durable agent ask {quantile} vs plain agent ask {quantile}",
                unit="ms",
                value=summaries["durable"][f"{quantile}_ms"],
                floor=summaries["plain"][f"{quantile}_ms"],
                floor_label=f"plain (non-durable) agent ask {quantile}",
                samples=int(summaries["durable"]["samples"]),
            )
        )
        result.add(
            Figure(
                key=f"durable_vs_raw_{quantile}",
                label=f"durable agent ask {quantile} vs raw echo ask {quantile}",
                unit="ms",
                value=summaries["durable"][f"{quantile}_ms"],
                floor=summaries["raw"][f"{quantile}_ms"],
                floor_label=f"raw echo ask {quantile}",
                samples=int(summaries["durable"]["samples"]),
            )
        )
    return result
