"""Measure what durability costs at the store level on this machine.

Times the two writes a durable agent's choice of design turns on:

* ``row_insert``: one small row (a 512-byte request) added in its own transaction, through
  ``put_result`` (the store's one-row insert, plus its eviction check): what accepting a
  tell would cost if the mailbox were kept row by row;
* ``save_state``: the runtime's write, a 4 KB state snapshot replaced in one transaction.

for four stores: SQLite with ``synchronous=FULL`` (the default) and ``NORMAL`` on a file,
SQLite ``:memory:`` (the SQL work without any file I/O) and the in-process
``MemoryAgentStore`` (the baseline a non-durable agent would pay).

Then the boundary the runtime actually writes: ``AgentRecord.save`` pickles the agent's
whole state (machine snapshot with its mailbox, session, implementation state) into one
``save_state`` at every acknowledged tell and every turn boundary. Timed against mailbox
depth (queued 512-byte prompts) beside one ``row_insert`` on the same FULL file store, it
shows whether persisting the mailbox incrementally (one row per tell) would pay off: that
measurement is why the store has no per-request mailbox API (``_durable/store.py``).

Prints tables and writes ``bench/results/store_cost.json``.

Usage::

    python bench/store_cost.py [--ops 400] [--dir DIRECTORY] [--repeats 3]

``--dir`` picks where the database files go (default: a temporary directory under
``bench/results``, i.e. the project's disk; a tmpfs makes FULL look free).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from genagent_thespian import GenAgent
from genagent_thespian._core.machine import AgentMachine, MachineLimits
from genagent_thespian._durable.record import AgentRecord
from genagent_thespian._durable.store import (
    AgentStore,
    MemoryAgentStore,
    SQLiteAgentStore,
    agent_key,
)
from genagent_thespian.messages import AgentSpec

REQUEST = b"r" * 512  # a pickled Prompt with its metadata
STATE = b"s" * 4096  # backend session ids, flags and a small implementation state
RESULTS_DIR = Path(__file__).resolve().parent / "results"


def filesystem_of(path: Path) -> str:
    """Return the filesystem type of the mount holding ``path`` (from /proc/mounts)."""
    best, fstype = "", "unknown"
    real = str(path.resolve())
    try:
        with open("/proc/mounts", encoding="utf-8") as mounts:
            for line in mounts:
                _, mount_point, kind, *_ = line.split()
                inside = real == mount_point or real.startswith(mount_point.rstrip("/") + "/")
                if inside and len(mount_point) > len(best):
                    best, fstype = mount_point, kind
    except OSError:
        pass
    return fstype


def timed(operation: Callable[[int], None], count: int) -> list[float]:
    """Run ``operation(i)`` for i in range(count); return each call's time in microseconds."""
    samples = []
    for i in range(count):
        start = time.perf_counter_ns()
        operation(i)
        samples.append((time.perf_counter_ns() - start) / 1000.0)
    return samples


def summary(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    return {
        "median_us": statistics.median(ordered),
        "mean_us": statistics.fmean(ordered),
        "p95_us": ordered[int(0.95 * (len(ordered) - 1))],
        "max_us": ordered[-1],
    }


def measure(store: AgentStore, ops: int) -> dict[str, list[float]]:
    key = agent_key("bench-agent")
    store.create_agent(key, b"name", b"spec" * 64)
    store.save_state(key, STATE)

    # max_results above ops: every insert keeps its row, as a queued request would stay.
    row_insert = timed(lambda i: store.put_result(key, f"q{i:06d}", REQUEST, max_results=ops), ops)
    save_state = timed(lambda i: store.save_state(key, STATE), ops)
    loaded = store.load(key)
    assert loaded is not None and len(loaded.results) == ops and loaded.state_blob == STATE
    return {"row_insert": row_insert, "save_state": save_state}


PROMPT = "p" * 500  # a queued prompt; pickled with its Request, about REQUEST's size
DEPTHS = (0, 10, 100, 1000)


def measure_boundary(path: Path, depth: int, ops: int) -> dict[str, float]:
    """Median µs of the runtime's boundary write (``AgentRecord.save``) with ``depth`` queued."""
    spec = AgentSpec(name=f"depth-{depth}", impl=GenAgent, backend="scripted", durable=True)
    limits = MachineLimits(max_queued=depth + 1, max_queued_bytes=1 << 30)
    machine = AgentMachine(name=spec.name, impl=GenAgent(), limits=limits)
    machine.start()
    machine.ask("in-flight", PROMPT, "caller")
    for i in range(depth):
        machine.tell(f"q{i}", PROMPT, "teller")
    assert len(machine.mailbox) == depth
    record = AgentRecord(SQLiteAgentStore(path, synchronous="FULL"), spec)
    try:
        record.begin()
        samples = timed(lambda i: record.save(machine, {"session_id": "s"}, {}), ops)
        blob = record._store.load(record.key)
        assert blob is not None and blob.state_blob is not None
        size = len(blob.state_blob)
    finally:
        record.close()
    return {"median_us": statistics.median(samples), "state_bytes": float(size)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ops", type=int, default=400, help="operations of each kind per run")
    parser.add_argument("--repeats", type=int, default=3, help="runs per store (samples pooled)")
    parser.add_argument("--dir", type=Path, default=None, help="where the database files go")
    parser.add_argument("--out", type=Path, default=RESULTS_DIR / "store_cost.json")
    args = parser.parse_args()

    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    base_dir = args.dir or RESULTS_DIR
    base_dir.mkdir(parents=True, exist_ok=True)

    stores: dict[str, Callable[[Path], AgentStore]] = {
        "memory (dict, baseline)": lambda d: MemoryAgentStore(),
        "sqlite :memory:": lambda d: SQLiteAgentStore(":memory:"),
        "sqlite file, synchronous=NORMAL": lambda d: SQLiteAgentStore(
            d / "normal.db", synchronous="NORMAL"
        ),
        "sqlite file, synchronous=FULL": lambda d: SQLiteAgentStore(
            d / "full.db", synchronous="FULL"
        ),
    }
    pooled: dict[str, dict[str, list[float]]] = {
        name: {"row_insert": [], "save_state": []} for name in stores
    }
    with tempfile.TemporaryDirectory(prefix="store-cost-", dir=base_dir) as tmp:
        for repeat in range(args.repeats):
            for index, (name, make) in enumerate(stores.items()):
                run_dir = Path(tmp) / f"run-{repeat}-{index}"
                run_dir.mkdir()
                store = make(run_dir)
                try:
                    samples = measure(store, args.ops)
                finally:
                    store.close()
                for op, values in samples.items():
                    pooled[name][op].extend(values)

    baseline = "memory (dict, baseline)"
    results: dict[str, dict[str, dict[str, float]]] = {}
    for name, ops in pooled.items():
        results[name] = {}
        for op, values in ops.items():
            stats = summary(values)
            base_median = statistics.median(pooled[baseline][op])
            stats["ratio_vs_memory_median"] = stats["median_us"] / base_median
            results[name][op] = stats

    boundary: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory(prefix="store-boundary-", dir=base_dir) as tmp:
        for depth in DEPTHS:
            boundary[str(depth)] = measure_boundary(
                Path(tmp) / f"depth-{depth}.db", depth, max(20, args.ops // 10)
            )
    row_full = results["sqlite file, synchronous=FULL"]["row_insert"]["median_us"]
    for stats in boundary.values():
        stats["ratio_vs_row_insert_median"] = stats["median_us"] / row_full

    full = results["sqlite file, synchronous=FULL"]
    normal = results["sqlite file, synchronous=NORMAL"]
    report = {
        "benchmark": "store_cost",
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": {
            "python": sys.version.split()[0],
            "sqlite": sqlite3.sqlite_version,
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "db_filesystem": filesystem_of(base_dir),
        },
        "parameters": {
            "ops_per_run": args.ops,
            "repeats": args.repeats,
            "request_bytes": len(REQUEST),
            "state_bytes": len(STATE),
        },
        "results": results,
        "runtime_boundary_by_mailbox_depth": boundary,
        "full_over_normal_median": {
            op: full[op]["median_us"] / normal[op]["median_us"]
            for op in ("row_insert", "save_state")
        },
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")

    print(
        f"store cost: {args.ops} ops x {args.repeats} runs, db on "
        f"{report['machine']['db_filesystem']}, sqlite {sqlite3.sqlite_version}"
    )
    header = f"{'store':34} {'operation':12} {'median µs':>10} {'p95 µs':>10} {'x memory':>9}"
    print(header)
    print("-" * len(header))
    for name, ops in results.items():
        for op, stats in ops.items():
            print(
                f"{name:34} {op:12} {stats['median_us']:10.1f} {stats['p95_us']:10.1f} "
                f"{stats['ratio_vs_memory_median']:9.1f}"
            )
    for op, ratio in report["full_over_normal_median"].items():
        print(f"FULL / NORMAL ({op}): {ratio:.2f}")
    print()
    print("runtime boundary write (AgentRecord.save, sqlite FULL) by mailbox depth:")
    print(f"{'queued':>8} {'median µs':>10} {'state bytes':>12} {'x row':>10}")
    for queued, stats in boundary.items():
        print(
            f"{queued:>8} {stats['median_us']:10.1f} {stats['state_bytes']:12.0f} "
            f"{stats['ratio_vs_row_insert_median']:10.2f}"
        )
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
