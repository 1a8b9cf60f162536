"""Benchmark 9, a claude fleet under the session governor (issue 15).

Many agents on the real ``claude`` CLI (the pinned binary under ``.ci/tools``, against
:class:`~genagent_thespian.testing.FakeLLMServer`) share a node capped at
``max_live_sessions``. Client threads send turns to random agents (an agent's own turns
stay in order: at most one in flight per agent), more clients than the cap, so turns also
wait in the governor's queue. Measured and checked, in the same run:

* **live CLIs**: a sampler thread counts, with psutil, the live ``claude`` processes (the
  group leaders running in the agents' working directories) every few milliseconds; its
  peak must not exceed the cap;
* **answers**: the fake model answers each turn with a text naming the agent and the turn,
  so every answer is checked to be the right one;
* **history**: each turn's prompt carries a marker; the model request of an agent's turn
  ``k`` must carry the markers of its turns ``1..k-1`` (the conversation went on, through
  ``--resume`` when its CLI had been retired meanwhile); agents whose turns were served by
  more than one CLI process are counted (continued across an eviction);
* **memory**: the PSS of the system's processes and of the CLIs, sampled every second;
* **orphans**: the CLI processes and system processes left once the system is shut down.

``run.py --only claude_fleet`` runs the full size (200 agents, cap 20); the test suite runs
:func:`fleet` small (``tests/backends/test_claude_fleet.py``).
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import re
import shutil
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import genagent_thespian as g
from genagent_thespian.testing import FakeLLMServer, RecordedRequest, Text

from ._actors import BenchAgent
from ._common import Figure, Result, live_system_processes, pss_kib
from .cli_turns import _claude_env  # the same isolated CLI environment as the turn benchmark

__all__ = ["FleetReport", "fleet", "run"]

_MARKER = re.compile(r"turn ([a-z0-9-]+) #(\d+)")
#: Seconds between two counts of the live CLIs (a /proc scan).
_SAMPLE_EVERY = 0.02
#: Seconds between two PSS samples (reads smaps_rollup of every process: costly).
_PSS_EVERY = 2.0


def _binary() -> str:
    root = Path(__file__).resolve().parent.parent
    default = root / ".ci" / "tools" / "node_modules" / ".bin" / "claude"
    return os.environ.get("GENAGENT_CLAUDE_BIN") or str(default)


@dataclass
class FleetReport:
    """What one fleet run saw (see the module docstring)."""

    agents: int
    cap: int
    turns: int
    clients: int
    seconds: float = 0.0
    answered: int = 0
    wrong_answers: list[str] = field(default_factory=list)
    missing_history: list[str] = field(default_factory=list)
    peak_live_clis: int = 0
    cli_samples: int = 0
    pss_samples: int = 0
    cli_processes_started: int = 0
    continued_across_eviction: int = 0
    peak_pss_mib: float = 0.0
    orphans: list[int] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    @property
    def turns_per_second(self) -> float:
        """Turns answered per second of the whole wave."""
        return self.answered / self.seconds if self.seconds else 0.0

    def as_json(self) -> dict[str, Any]:
        """The report as JSON-ready details."""
        return {
            "agents": self.agents,
            "max_live_sessions": self.cap,
            "turns_per_agent": self.turns,
            "clients": self.clients,
            "seconds": round(self.seconds, 2),
            "answered": self.answered,
            "turns_per_second": round(self.turns_per_second, 2),
            "wrong_answers": self.wrong_answers[:10],
            "missing_history": self.missing_history[:10],
            "peak_live_clis": self.peak_live_clis,
            "cli_samples": self.cli_samples,
            "pss_samples": self.pss_samples,
            "cli_processes_started": self.cli_processes_started,
            "agents_continued_across_an_eviction": self.continued_across_eviction,
            "peak_pss_mib": round(self.peak_pss_mib, 1),
            "orphans": self.orphans,
            "errors": self.errors[:10],
        }


class _Model:
    """The fake model's answers: ``ack <agent> <turn>``, and what each request carried."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.seen: dict[tuple[str, int], set[int]] = {}  # (agent, turn) -> turns in the request

    def __call__(self, request: RecordedRequest) -> Text:
        body = request.body if isinstance(request.body, dict) else {}
        markers = _MARKER.findall(json.dumps(body.get("messages", [])))
        if not markers:
            return Text("ok")
        agent = markers[-1][0]
        turns = {int(turn) for name, turn in markers if name == agent}
        current = max(turns)
        with self._lock:
            self.seen[(agent, current)] = turns
        return Text(f"ack {agent} {current}")


class _Sampler:
    """Counts the live CLIs (psutil) and samples the PSS of the system and the CLIs.

    Two threads: the count is a cheap scan (the name of every process, the working
    directory of the ``claude`` ones only), so it runs every few milliseconds even on a
    loaded machine; the PSS reads ``smaps_rollup`` of every process, so it runs apart.
    """

    def __init__(self, system: g.AgentSystem, workdirs: dict[str, str]) -> None:
        self._system = system
        self._agent_of = {path: name for name, path in workdirs.items()}
        self._halt = threading.Event()
        self._threads = [
            threading.Thread(target=self._count, name="fleet-clis", daemon=True),
            threading.Thread(target=self._pss, name="fleet-pss", daemon=True),
        ]
        self.peak = 0
        self.samples = 0
        self.peak_pss_kib = 0
        self.pss_samples = 0
        self.pids_of: dict[str, set[int]] = {}

    def clis(self) -> dict[int, str]:
        """Live CLI group leaders: pid -> the agent whose working directory it runs in."""
        import psutil

        found: dict[int, str] = {}
        for process in psutil.process_iter(["name", "status"]):
            if process.info["name"] != "claude" or process.info["status"] == "zombie":
                continue
            with contextlib.suppress(psutil.Error, OSError):
                agent = self._agent_of.get(process.cwd())
                if agent is not None and os.getpgid(process.pid) == process.pid:
                    found[process.pid] = agent
        return found

    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    def _count(self) -> None:
        while not self._halt.is_set():
            live = self.clis()
            self.samples += 1
            self.peak = max(self.peak, len(live))
            for pid, agent in live.items():
                self.pids_of.setdefault(agent, set()).add(pid)
            self._halt.wait(_SAMPLE_EVERY)

    def _pss(self) -> None:
        while not self._halt.is_set():
            live = self.clis()
            pids = set(live_system_processes(self._system)) | set(live)
            for pid in live:
                pids |= _descendants(pid)
            total = sum(pss_kib(pid) or 0 for pid in pids)
            self.peak_pss_kib = max(self.peak_pss_kib, total)
            self.pss_samples += 1
            self._halt.wait(_PSS_EVERY)

    def stop(self) -> None:
        self._halt.set()
        for thread in self._threads:
            if thread.is_alive():
                thread.join(60)


def _descendants(pid: int) -> set[int]:
    import psutil

    with contextlib.suppress(psutil.Error):
        return {child.pid for child in psutil.Process(pid).children(recursive=True)}
    return set()


class _Turns:
    """Hands out ``(agent, turn)`` in random order, at most one turn in flight per agent."""

    def __init__(self, names: list[str], turns: int, seed: int) -> None:
        self._left = {name: list(range(1, turns + 1)) for name in names}
        self._busy: set[str] = set()
        self._random = random.Random(seed)
        self._ready = threading.Condition()

    def take(self) -> tuple[str, int] | None:
        with self._ready:
            while True:
                free = [n for n, left in self._left.items() if left and n not in self._busy]
                if free:
                    name = self._random.choice(free)
                    self._busy.add(name)
                    return name, self._left[name].pop(0)
                if not any(self._left.values()):
                    return None
                self._ready.wait()

    def done(self, name: str) -> None:
        with self._ready:
            self._busy.discard(name)
            self._ready.notify_all()


@contextlib.contextmanager
def _scratch() -> Iterator[Path]:
    root = Path(tempfile.mkdtemp(prefix="genagent-fleet-"))
    try:
        yield root
    finally:
        shutil.rmtree(root, ignore_errors=True)


def fleet(
    *,
    agents: int,
    cap: int,
    turns: int,
    clients: int,
    seed: int = 15,
    watchdog: float = 600.0,
) -> FleetReport:
    """Run ``agents`` claude agents under ``max_live_sessions=cap``; report what was seen.

    ``clients`` threads send ``turns`` turns to every agent in random order. Never raises
    for what it measures (a wrong answer, a lost history, an orphan): the report says so.
    """
    report = FleetReport(agents=agents, cap=cap, turns=turns, clients=clients)
    model = _Model()
    names = [f"c{index:04d}" for index in range(agents)]
    with _scratch() as root, FakeLLMServer(default=model) as server:
        workdirs = {name: str(root / "work" / name) for name in names}
        for path in workdirs.values():
            os.makedirs(path)
        system = g.start_system(
            make_default=False,
            store_path=str(root / "agents.sqlite"),
            home=str(root / "node"),
            max_live_sessions=cap,
        )
        sampler = _Sampler(system, workdirs)
        try:
            for name in names:
                g.start_agent(
                    BenchAgent,
                    name=name,
                    backend="claude",
                    system=system,
                    binary=_binary(),
                    cwd=workdirs[name],
                    env=_claude_env(root / "homes" / name, server.url),
                    worker_idle_timeout=3600.0,  # only the governor retires sessions here
                    watchdog=watchdog,
                )
            sampler.start()
            _wave(report, system, _Turns(names, turns, seed), clients)
        finally:
            sampler.stop()
            g.shutdown_system(system)
            report.orphans = _orphans(system, sampler)
    report.peak_live_clis = sampler.peak
    report.cli_samples = sampler.samples
    report.pss_samples = sampler.pss_samples
    report.peak_pss_mib = sampler.peak_pss_kib / 1024
    report.cli_processes_started = sum(len(pids) for pids in sampler.pids_of.values())
    for name in names:
        for turn in range(2, turns + 1):
            if model.seen.get((name, turn)) != set(range(1, turn + 1)):
                report.missing_history.append(f"{name} #{turn}: {model.seen.get((name, turn))}")
    report.continued_across_eviction = sum(
        1
        for name in names
        if len(sampler.pids_of.get(name, ())) > 1
        and all(model.seen.get((name, t)) == set(range(1, t + 1)) for t in range(1, turns + 1))
    )
    return report


def _wave(report: FleetReport, system: g.AgentSystem, turns: _Turns, clients: int) -> None:
    lock = threading.Lock()

    def client() -> None:
        while (taken := turns.take()) is not None:
            name, turn = taken
            try:
                answer = g.ask(name, f"turn {name} #{turn}: go on", system=system)
                with lock:
                    report.answered += 1
                    if answer.text != f"ack {name} {turn}":
                        report.wrong_answers.append(f"{name} #{turn}: {answer.text!r}")
            except Exception as error:  # reported, not raised: the report is the result
                with lock:
                    report.errors.append(f"{name} #{turn}: {type(error).__name__}: {error}")
            finally:
                turns.done(name)

    began = time.perf_counter()
    threads = [threading.Thread(target=client, name=f"fleet-client-{i}") for i in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    report.seconds = time.perf_counter() - began


def _orphans(system: g.AgentSystem, sampler: _Sampler) -> list[int]:
    """Processes of the run alive 20 s after shutdown (killed, so none stays behind)."""
    import signal

    deadline = time.monotonic() + 20.0
    left: list[int] = []
    while time.monotonic() < deadline:
        left = sorted(set(live_system_processes(system)) | set(sampler.clis()))
        if not left:
            return []
        time.sleep(0.1)
    for pid in left:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGKILL)
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    return left


def _sizes(quick: bool) -> tuple[int, int, int, int]:
    """(agents, cap, turns per agent, clients)."""
    return (12, 3, 3, 4) if quick else (200, 20, 2, 24)


def run(quick: bool = False) -> Result:
    """The fleet at full size (200 agents, cap 20), as a benchmark result."""
    agents, cap, turns, clients = _sizes(quick)
    result = Result("claude_fleet")
    report = fleet(agents=agents, cap=cap, turns=turns, clients=clients)
    result.details = report.as_json()
    total = agents * turns
    result.add(
        Figure(
            key="peak_live_clis",
            label=f"peak live claude CLIs, {agents} agents, max_live_sessions={cap}",
            unit="CLIs",
            value=float(report.peak_live_clis),
            floor=float(cap),
            floor_label="max_live_sessions",
            samples=report.cli_samples,
            target="<= the cap",
            target_ratio=1.0,
        )
    )
    result.add(
        Figure(
            key="turns_answered",
            label=f"turns answered right, with their history ({clients} clients)",
            unit="turns",
            value=float(report.answered - len(report.wrong_answers)),
            floor=float(total),
            floor_label="turns sent",
            samples=total,
            target="every turn",
            target_min_ratio=1.0,
        )
    )
    result.add(
        Figure(
            key="turns_per_second",
            label="turns per second of the whole wave (most start a resumed CLI)",
            unit="/s",
            value=report.turns_per_second,
            floor=None,
            floor_label="",
            samples=total,
        )
    )
    result.add(
        Figure(
            key="peak_pss",
            label="peak PSS of the system's processes and the CLIs",
            unit="MiB",
            value=report.peak_pss_mib,
            floor=None,
            floor_label="",
            samples=report.pss_samples,
        )
    )
    result.add(
        Figure(
            key="orphans",
            label="processes of the run alive 20 s after shutdown",
            unit="processes",
            value=float(len(report.orphans)),
            floor=None,
            floor_label="",
            samples=1,
            target="0",
            target_max=0.0,
        )
    )
    if report.missing_history or report.errors or report.wrong_answers:
        result.notes.append(
            f"FAILED checks: {len(report.errors)} errors, {len(report.wrong_answers)} wrong "
            f"answers, {len(report.missing_history)} turns without their history"
        )
    result.notes.append(
        f"{report.cli_processes_started} claude processes started for {total} turns; "
        f"{report.continued_across_eviction} agents continued their conversation on a "
        "new CLI after their previous one was retired."
    )
    return result
