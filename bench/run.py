"""Run the benchmarks: each figure beside its raw Thespian floor, as a table and as JSON.

Usage::

    python bench/run.py                 # everything, full size (under 10 minutes, 2 cores)
    python bench/run.py --quick         # reduced sizes (the test suite's smoke check)
    python bench/run.py --only overhead,scale
    python bench/run.py --only cli_turns   # real claude/codex vs the official SDK (bench extra)
    python bench/run.py --results-dir /tmp/out

Each benchmark writes ``<results-dir>/<name>.json`` (default ``bench/results``, or
``bench/results/quick`` with ``--quick``). The exit status is non-zero when a benchmark
failed to run or a process of the run was left behind; a missed target is reported, not
an error. See ``docs/performance.md`` for the method and the latest results.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import math
import os
import signal
import sys
import time
import traceback
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))  # actor processes import bench.* by module name

BENCHMARKS = (
    "overhead",
    "throughput",
    "scale",
    "recovery",
    "durability",
    "streaming",
    "hibernation",
)
#: Run only when named with ``--only``: they need the real CLIs (.ci/tools) and the
#: ``bench`` extra (claude-agent-sdk, psutil).
OPTIONAL = ("cli_turns", "claude_fleet")


def _format(value: float | None, unit: str = "") -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if abs(value) >= 100:
        text = f"{value:.0f}"
    elif abs(value) >= 10:
        text = f"{value:.1f}"
    else:
        text = f"{value:.2f}"
    return f"{text} {unit}".strip()


def _verdict(met: bool | None, skipped: str | None) -> str:
    if skipped:
        return "skipped"
    return {True: "met", False: "MISSED", None: ""}[met]


def print_table(name: str, figures: list[dict]) -> None:
    """Print one benchmark's figures with floor, ratio, target and verdict."""
    rows = [("figure", "value", "floor", "ratio", "target", "", "n")]
    for figure in figures:
        if figure["skipped"]:
            rows.append((figure["label"], "-", "-", "-", figure["target"], "skipped", "0"))
            continue
        ratio = figure["ratio"]
        rows.append(
            (
                figure["label"],
                _format(figure["value"], figure["unit"]),
                _format(figure["floor"], figure["unit"]),
                f"{ratio:.2f}x" if ratio is not None else "-",
                figure["target"],
                _verdict(figure["met"], figure["skipped"]),
                str(figure["samples"]),
            )
        )
    widths = [max(len(row[column]) for row in rows) for column in range(len(rows[0]))]
    widths[0] = min(widths[0], 70)
    print(f"\n== {name}")
    for row in rows:
        cells = [row[0][: widths[0]].ljust(widths[0])]
        cells += [cell.rjust(width) for cell, width in zip(row[1:4], widths[1:4], strict=True)]
        cells += [row[4].ljust(widths[4]), row[5].ljust(widths[5]), row[6].rjust(widths[6])]
        print("  ".join(cells))
    for figure in figures:
        if figure["skipped"]:
            print(f"  skipped: {figure['label']}: {figure['skipped']}")


def main(argv: list[str] | None = None) -> int:
    """Run the selected benchmarks; return the exit status."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="reduced sizes (smoke check)")
    parser.add_argument(
        "--only",
        default="",
        help="comma-separated subset of " + ",".join(BENCHMARKS + OPTIONAL),
    )
    parser.add_argument("--results-dir", type=Path, default=None)
    args = parser.parse_args(argv)
    selected = [name for name in args.only.split(",") if name] or list(BENCHMARKS)
    unknown = set(selected) - set(BENCHMARKS + OPTIONAL)
    if unknown:
        known = ", ".join(BENCHMARKS + OPTIONAL)
        parser.error(f"unknown benchmark(s) {sorted(unknown)}; known: {known}")
    results_dir = args.results_dir or (ROOT / "bench" / "results" / ("quick" if args.quick else ""))

    from bench._common import RUN_MARKER, marked_processes, wait_for

    run_id = uuid.uuid4().hex
    os.environ[RUN_MARKER] = run_id  # inherited by every process the run starts
    failures: list[str] = []
    began = time.perf_counter()
    print(
        f"genagent-thespian benchmarks ({'quick' if args.quick else 'full'}), "
        f"{os.cpu_count()} cpus, load {os.getloadavg()[0]:.1f}; results in {results_dir}"
    )
    for name in selected:
        module = importlib.import_module(f"bench.{name}")
        started = time.perf_counter()
        try:
            result = module.run(quick=args.quick)
        except Exception:
            failures.append(name)
            print(f"\n== {name}: FAILED\n{traceback.format_exc()}", file=sys.stderr)
            continue
        result.seconds = time.perf_counter() - started
        path = result.write(quick=args.quick, directory=results_dir)
        document = result.as_json(quick=args.quick)
        print_table(f"{name} ({result.seconds:.1f} s) -> {path.name}", document["figures"])
        for note in result.notes:
            print(f"  note: {note}")
        sys.stdout.flush()

    leftovers: list[int] = []
    with contextlib.suppress(TimeoutError):
        wait_for(lambda: not marked_processes(run_id), timeout=15.0, interval=0.05)
    leftovers = marked_processes(run_id)
    for pid in leftovers:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    print(f"\ntotal {time.perf_counter() - began:.1f} s; processes left behind: {len(leftovers)}")
    if leftovers:
        print(f"error: processes of this run survived: {leftovers} (killed)", file=sys.stderr)
    if failures:
        print(f"error: benchmark(s) failed: {', '.join(failures)}", file=sys.stderr)
    return 1 if failures or leftovers else 0


if __name__ == "__main__":
    sys.exit(main())
