"""Framework memory per live claude agent (its processes, CLI excluded), alone and in a fleet.

The memory phase of ``bench/cli_turns.py`` on its own, in under a minute, with the split
that explains the figure: what each agent's two processes hold privately and what they
share with the rest of the system (PSS counts a shared page as 1/n in each of its n
processes, so a figure for one agent alone charges it a larger share of the system's pages
than an agent among 20 pays). Same setup as ``cli_turns``: ``start_agent(BenchAgent,
backend="claude")`` against one :class:`FakeLLMServer`, two turns per agent, this module
importing what ``cli_turns`` imports (every actor process inherits this process's heap)::

    python -m bench.agent_memory            # one agent, then 20
    python -m bench.agent_memory 1 5 20     # any fleet sizes

Needs the real ``claude`` in ``.ci/tools`` (or ``GENAGENT_CLAUDE_BIN``).
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path
from typing import Any

import genagent_thespian as g
from genagent_thespian.testing import FakeLLMServer, Text

from ._actors import BenchAgent
from ._common import agent_system
from .cli_turns import ANSWER, PROMPT, _binary, _claude_env, _tree, _workdirs

__all__ = ["main"]

FIELDS = ("Pss", "Private_Dirty", "Shared_Dirty", "Shared_Clean", "Rss")


def _rollup(pid: int) -> dict[str, int]:
    """``/proc/<pid>/smaps_rollup`` in KiB (empty when the process is gone)."""
    found: dict[str, int] = {}
    try:
        with open(f"/proc/{pid}/smaps_rollup", encoding="ascii") as rollup:
            for line in rollup:
                parts = line.split()
                if len(parts) == 3 and parts[2] == "kB":
                    found[parts[0].rstrip(":")] = int(parts[1])
    except OSError:
        pass
    return found


def measure(count: int, binary: str, server: FakeLLMServer, home: Path) -> dict[str, float]:
    """MiB per agent of each of :data:`FIELDS`, summed over every agent's Python processes."""
    env = _claude_env(home, server.url)
    with agent_system() as system, _workdirs(count) as dirs:
        names = [f"m{index}" for index in range(count)]
        for name, workdir in zip(names, dirs, strict=True):
            options: dict[str, Any] = {"binary": binary, "cwd": str(workdir), "env": env}
            g.start_agent(BenchAgent, name=name, backend="claude", system=system, **options)
        try:
            for _ in range(2):
                for name in names:
                    assert g.ask(name, PROMPT, system=system).text == ANSWER
            # Agents and workers are the Python processes of each agent's tree (not the CLI).
            pids = [
                process.pid
                for name in names
                for process in _tree(g.status(name, system=system).pid)
                if process.name().startswith("python")
            ]
            totals = dict.fromkeys(FIELDS, 0)
            for pid in pids:
                rollup = _rollup(pid)
                for key in FIELDS:
                    totals[key] += rollup.get(key, 0)
            figures = {key: value / 1024 / count for key, value in totals.items()}
            figures["processes"] = len(pids)
            return figures
        finally:
            for name in names:
                g.stop(name, system=system)


def main(argv: list[str]) -> int:
    """Print the figures for each fleet size in ``argv`` (default: 1 and 20)."""
    binary = _binary("claude")
    if binary is None:
        print("claude is not installed (.ci/tools): nothing to measure", file=sys.stderr)
        return 1
    counts = [int(arg) for arg in argv] or [1, 20]
    with (
        FakeLLMServer(default=Text(ANSWER)) as server,
        tempfile.TemporaryDirectory(prefix="genagent-bench-home-") as home,
    ):
        for count in counts:
            figures = measure(count, binary, server, Path(home))
            shown = ", ".join(f"{key} {figures[key]:.2f}" for key in FIELDS)
            print(f"{count} agent(s), {figures['processes']:.0f} processes, MiB per agent: {shown}")
    return 0


if __name__ == "__main__":  # pragma: no cover - a command
    sys.exit(main(sys.argv[1:]))
