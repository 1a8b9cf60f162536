"""What every benchmark shares: systems that leave nothing behind, timing, figures, output.

A benchmark measures a figure of the framework and, in the same run, the same operation on
raw Thespian (its *floor*), and reports the ratio: the machine is shared and noisy, so an
absolute number says little, but a ratio measured side by side says how much the framework
adds. Where both can run at once, samples are taken in interleaved blocks (a block of the
floor, a block of the framework, and again) so that a burst of noise hits both alike.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from thespian.actors import ActorExitRequest, ActorSystem

import genagent_thespian as g
from genagent_thespian import AgentSystem
from genagent_thespian._os.ports import free_port
from genagent_thespian.testing import system_processes

__all__ = [
    "RESULTS_DIR",
    "RUN_MARKER",
    "Figure",
    "RawSystem",
    "Result",
    "agent_system",
    "children_of",
    "cpu_by_role",
    "cpu_seconds",
    "free_port",
    "interleaved",
    "live_system_processes",
    "marked_processes",
    "percentile",
    "process_alive",
    "pss_kib",
    "summarize",
    "wait_for",
]

RESULTS_DIR = Path(__file__).resolve().parent / "results"
#: Environment variable set by run.py for the whole run: every process a benchmark starts
#: inherits it, so the run can prove at the end that none is left.
RUN_MARKER = "GENAGENT_BENCH_RUN"


# ============================================================================ statistics


def percentile(values: list[float], q: float) -> float:
    """Return the nearest-rank ``q`` percentile (0 < q <= 100) of ``values``."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100.0 * len(ordered)))
    return ordered[rank - 1]


def summarize(seconds: list[float]) -> dict[str, float]:
    """Return p50, p99, mean (milliseconds) and the sample count of ``seconds``."""
    return {
        "p50_ms": percentile(seconds, 50) * 1000.0,
        "p99_ms": percentile(seconds, 99) * 1000.0,
        "mean_ms": (sum(seconds) / len(seconds) * 1000.0) if seconds else math.nan,
        "samples": len(seconds),
    }


def interleaved(
    operations: dict[str, Callable[[], Any]],
    *,
    rounds: int,
    per_round: int,
    warmup: int,
) -> dict[str, list[float]]:
    """Time each operation ``rounds * per_round`` times, in alternating blocks.

    Every operation first runs ``warmup`` untimed times. Then each round runs a block of
    ``per_round`` timed calls of every operation, the order rotating per round, so slow
    phases of a shared machine hit all operations alike.

    Returns:
        The durations in seconds, per operation name.
    """
    for operation in operations.values():
        for _ in range(warmup):
            operation()
    names = list(operations)
    samples: dict[str, list[float]] = {name: [] for name in names}
    clock = time.perf_counter
    for round_index in range(rounds):
        shift = round_index % len(names)
        for name in names[shift:] + names[:shift]:
            operation = operations[name]
            block = samples[name]
            for _ in range(per_round):
                started = clock()
                operation()
                block.append(clock() - started)
    return samples


def wait_for(
    condition: Callable[[], Any], *, timeout: float, interval: float = 0.001, what: str = ""
) -> Any:
    """Poll ``condition`` until it is truthy; raise ``TimeoutError`` after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise TimeoutError(f"{what or 'condition'} not met within {timeout}s")
        time.sleep(interval)


# ============================================================================ figures


@dataclass
class Figure:
    """One reported number beside its floor.

    ``target`` is either a maximal ratio to the floor (``target_ratio``), a minimal ratio
    (``target_min_ratio``, throughput), or a maximal value (``target_max``, in ``unit``).
    """

    key: str
    label: str
    unit: str
    value: float | None
    floor: float | None
    floor_label: str
    samples: int
    target: str = ""
    target_ratio: float | None = None
    target_min_ratio: float | None = None
    target_max: float | None = None
    skipped: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def ratio(self) -> float | None:
        """``value / floor`` (``None`` when skipped or the floor is zero)."""
        if self.value is None or not self.floor:
            return None
        return self.value / self.floor

    @property
    def met(self) -> bool | None:
        """Whether the target is met (``None`` without a target or when skipped)."""
        ratio = self.ratio
        if self.skipped is not None or self.value is None:
            return None
        if self.target_ratio is not None and ratio is not None:
            return ratio <= self.target_ratio
        if self.target_min_ratio is not None and ratio is not None:
            return ratio >= self.target_min_ratio
        if self.target_max is not None:
            return self.value <= self.target_max
        return None

    def as_json(self) -> dict[str, Any]:
        """Return the JSON form (the ratio and verdict included)."""
        return {
            "key": self.key,
            "label": self.label,
            "unit": self.unit,
            "value": self.value,
            "floor": self.floor,
            "floor_label": self.floor_label,
            "ratio": self.ratio,
            "samples": self.samples,
            "target": self.target,
            "met": self.met,
            "skipped": self.skipped,
            **({"extra": self.extra} if self.extra else {}),
        }


@dataclass
class Result:
    """What one benchmark reports: its figures, details, and notes for the reader."""

    name: str
    figures: list[Figure] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def add(self, figure: Figure) -> Figure:
        """Append ``figure`` and return it."""
        self.figures.append(figure)
        return figure

    def as_json(self, *, quick: bool) -> dict[str, Any]:
        """Return the JSON document written to ``bench/results/<name>.json``."""
        return {
            "benchmark": self.name,
            "quick": quick,
            "environment": environment(),
            "seconds": round(self.seconds, 2),
            "figures": [figure.as_json() for figure in self.figures],
            "details": self.details,
            "notes": self.notes,
        }

    def write(self, *, quick: bool, directory: Path = RESULTS_DIR) -> Path:
        """Write the JSON document and return its path."""
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / f"{self.name}.json"
        path.write_text(json.dumps(self.as_json(quick=quick), indent=2, default=str) + "\n")
        return path


def environment() -> dict[str, Any]:
    """Describe the machine and software the numbers come from."""
    import thespian

    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            cwd=Path(__file__).resolve().parent,
            check=False,
        ).stdout.strip()
    except OSError:
        commit = ""
    return {
        "time_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "python": platform.python_version(),
        "thespian": getattr(thespian, "__version__", "4.0.1"),
        "cpus": os.cpu_count(),
        "loadavg": os.getloadavg(),
        "commit": commit,
    }


# ============================================================================ processes


def _stat_fields(pid: int) -> list[str] | None:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            text = stat.read()
    except OSError:
        return None
    # The command name is in parentheses and may contain spaces: split after it.
    return text[text.rindex(")") + 2 :].split()


def process_alive(pid: int) -> bool:
    """Whether ``pid`` exists and is not a zombie (an exited child not yet reaped)."""
    fields = _stat_fields(pid)
    return fields is not None and fields[0] not in ("Z", "X")


def children_of(pid: int) -> list[int]:
    """Return the live (non-zombie) child pids of ``pid``."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        fields = _stat_fields(int(entry))
        if fields is not None and fields[0] not in ("Z", "X") and int(fields[1]) == pid:
            found.append(int(entry))
    return found


def cpu_seconds(pid: int) -> float:
    """Return the user + system CPU time ``pid`` has used so far (0.0 if it is gone)."""
    fields = _stat_fields(pid)
    if fields is None:
        return 0.0
    # Fields 14 and 15 of /proc/<pid>/stat (utime, stime), counted after the command name.
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def cpu_by_role(system: AgentSystem, agent_pids: list[int]) -> dict[str, float]:
    """Return the CPU seconds used so far by ``system``'s processes, grouped by role.

    Roles: ``agents`` (``agent_pids``), ``workers`` (their children), ``services``
    (everything else of the system: admin, logger, registry, supervisor, telemetry hub)
    and ``client`` (this process, all its threads).
    """
    agents = set(agent_pids)
    roles = {"agents": 0.0, "workers": 0.0, "services": 0.0}
    for pid in live_system_processes(system):
        fields = _stat_fields(pid)
        if fields is None:
            continue
        parent = int(fields[1])
        role = "agents" if pid in agents else "workers" if parent in agents else "services"
        roles[role] += cpu_seconds(pid)
    roles["client"] = cpu_seconds(os.getpid())
    return roles


def pss_kib(pid: int) -> int | None:
    """Return the proportional set size of ``pid`` in KiB (``smaps_rollup``), or ``None``."""
    try:
        with open(f"/proc/{pid}/smaps_rollup") as rollup:
            for line in rollup:
                if line.startswith("Pss:"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def marked_processes(run_id: str) -> list[int]:
    """Return the live pids (other than this one) whose environment carries ``run_id``."""
    needle = f"{RUN_MARKER}={run_id}".encode()
    own = os.getpid()
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == own:
            continue
        try:
            with open(f"/proc/{entry}/environ", "rb") as environ:
                if needle in environ.read().split(b"\0") and process_alive(int(entry)):
                    found.append(int(entry))
        except OSError:
            continue
    return found


def _group_members(pgid: int) -> list[int]:
    members = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            with contextlib.suppress(ProcessLookupError, PermissionError):
                if os.getpgid(int(entry)) == pgid and process_alive(int(entry)):
                    members.append(int(entry))
    return members


# ============================================================================ systems


class RawSystem:
    """A raw Thespian system for floors: fresh, on a free port, swept when closed.

    Every process of a multiprocess system shares the admin's process group; the group is
    learned from the first actor and killed after ``shutdown()`` if anything survived.
    """

    def __init__(self, base: str = "multiprocTCPBase") -> None:
        caps: dict[str, Any] = {}
        if base == "multiprocTCPBase":
            # The framework hardens Thespian's TCP transport process-wide (loopback listeners,
            # HMAC-tagged frames) when it starts a system; the floor runs on the same
            # transport, so it is hardened the same way first (idempotent).
            from genagent_thespian._os.security import harden_transport

            harden_transport()
            caps["Admin Port"] = free_port()
        self.base = base
        self.asys = ActorSystem(base, capabilities=caps, transientUnique=True)
        self.pgid: int | None = None
        self._closed = False
        if base != "simpleSystemBase":
            from ._actors import Echo

            try:
                probe = self.asys.createActor(Echo)
                reply = self.asys.ask(probe, ("pgid",), 10.0)
                self.pgid = int(reply[1])
                self.asys.tell(probe, ActorExitRequest())
            except BaseException:
                self.close()
                raise

    def create(self, actor_class: type) -> Any:
        """Create a top-level actor (blocks until it runs)."""
        return self.asys.createActor(actor_class)

    def close(self) -> None:
        """Shut the system down and make sure none of its processes is left."""
        if self._closed:
            return
        self._closed = True
        try:
            self.asys.shutdown()
        finally:
            pgid = self.pgid
            if pgid is not None and pgid != os.getpgid(0):
                try:
                    wait_for(lambda: not _group_members(pgid), timeout=5.0, interval=0.02)
                except TimeoutError:
                    with contextlib.suppress(ProcessLookupError, PermissionError):
                        os.killpg(pgid, signal.SIGKILL)

    def __enter__(self) -> RawSystem:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def live_system_processes(system: AgentSystem) -> list[int]:
    """Return ``system``'s processes that are still running (zombies excluded).

    Processes orphaned by a kill are re-parented to this container's PID 1, which does not
    reap them: they stay as zombies, dead and holding nothing, and are not counted.
    """
    return [pid for pid in system_processes(system) if process_alive(pid)]


@contextlib.contextmanager
def agent_system(base: str = "multiprocTCPBase") -> Iterator[AgentSystem]:
    """A fresh framework system (not made current); shut down with nothing left after."""
    store = tempfile.mkdtemp(prefix="genagent-bench-store-")
    # A home of its own: the default node home admits one running system per machine, and
    # a benchmark must not collide with another run (or a node) on the same machine.
    system = g.start_system(
        base=base,
        make_default=False,
        store_path=os.path.join(store, "agents.sqlite"),
        home=os.path.join(store, "home"),
    )
    try:
        yield system
    finally:
        system.shutdown()
        shutil.rmtree(store, ignore_errors=True)
        if base != "simpleSystemBase":
            try:
                wait_for(lambda: not live_system_processes(system), timeout=15.0, interval=0.02)
            except TimeoutError:
                survivors = live_system_processes(system)
                for pid in survivors:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGKILL)
                print(
                    f"warning: {len(survivors)} process(es) survived shutdown: {survivors}",
                    file=sys.stderr,
                )
