"""Whether durable agents work yet: a functional probe, not a version check.

Durability (issue 4) is built on another branch. A durable agent counts as available when
``start_agent(..., durable=True, restart="permanent")`` starts, and after its process is
killed with SIGKILL the same name answers a new ``ask`` from a restarted process whose
backend session still holds the prompt of the earlier turn. Until then the benchmarks
that need it print a "skipped: durability not available" line with the reason the probe
found, and activate by themselves once it works.
"""

from __future__ import annotations

import os
import signal
import time
from typing import Any

import genagent_thespian as g
from genagent_thespian import AgentSystem, GenAgentError

from ._actors import BenchAgent
from ._common import wait_for

__all__ = ["RESTART_WINDOW", "durable_restart", "probe_durability", "start_durable"]

_RESTART_TIMEOUT = 5.0
#: The restart-intensity window of the benchmark's durable agents (seconds). Kills are paced
#: at least this far apart, so each restart is a quiet agent's first in its window (waiting
#: the supervisor's initial back-off, not a flapping agent's growing one).
RESTART_WINDOW = 0.5

_last_kill: dict[Any, float] = {}


def start_durable(system: AgentSystem, name: Any) -> None:
    """Start a durable, permanently restarted scripted agent called ``name``."""
    g.start_agent(
        BenchAgent,
        name=name,
        backend="scripted",
        default="ok",
        durable=True,
        restart="permanent",
        max_restarts=3,
        restart_window=RESTART_WINDOW,
        worker_idle_timeout=600.0,
        system=system,
    )


def durable_restart(system: AgentSystem, name: Any) -> float:
    """SIGKILL durable agent ``name``; return seconds until a new ``ask`` by name is answered.

    Raises:
        TimeoutError: no restarted agent took the name within the restart timeout.
    """
    previous = _last_kill.get(name)
    if previous is not None:
        # Pacing, not waiting for a condition: let the intensity window of the last restart pass.
        time.sleep(max(0.0, previous + RESTART_WINDOW * 1.2 - time.monotonic()))
    before = g.whereis(name, system=system)
    pid = g.status(name, system=system).pid
    _last_kill[name] = time.monotonic()
    started = time.perf_counter()
    os.kill(pid, signal.SIGKILL)

    def restarted() -> bool:
        address = g.whereis(name, system=system)
        return address is not None and address != before

    wait_for(restarted, timeout=_RESTART_TIMEOUT, what="a restarted agent under the same name")
    g.ask(name, "after the restart", timeout=_RESTART_TIMEOUT, system=system)
    return time.perf_counter() - started


def probe_durability(system: AgentSystem) -> str | None:
    """Return ``None`` when durable agents restart with their state, else why not."""
    name = "durability-probe"
    try:
        start_durable(system, name)
    except GenAgentError as exc:
        return f"start_agent(durable=True) failed: {type(exc).__name__}: {exc}"
    try:
        g.ask(name, "remember me", timeout=10.0, system=system)
        try:
            durable_restart(system, name)
        except TimeoutError:
            return (
                "a durable agent killed with SIGKILL was not restarted under its name "
                f"within {_RESTART_TIMEOUT:.0f} s"
            )
        except GenAgentError as exc:
            return f"the restarted durable agent did not answer: {type(exc).__name__}: {exc}"
        history = getattr(g.backend_session(name, system=system), "history", ())
        if "remember me" not in history:
            return "the agent restarted, but its backend session was not restored"
        return None
    finally:
        try:
            if g.whereis(name, system=system) is not None:
                g.stop(name, timeout=20.0, system=system)
        except GenAgentError:
            pass
