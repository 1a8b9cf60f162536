"""A busy worker whose exit Thespian never reports still ends its turn, long before the watchdog.

Thespian drops a child's exit notice now and then (seen under kill storms). The agent therefore
checks, every ``WORKER_ALIVE_CHECK`` seconds while a turn runs, that its worker's process (named
by pid and start time) still runs. The check's decision is tested here on real processes, with
the actor built in this process: a dropped notice cannot be produced on demand through Thespian.
"""

from __future__ import annotations

import os
import subprocess
from types import SimpleNamespace
from typing import Any

from genagent_thespian._actors.agent import (
    WORKER_ALIVE_CHECK,
    AgentActor,
    _WorkerAliveCheck,
    _WorkerSlot,
)
from genagent_thespian._os.processes import owner_identity


def _actor(slot: _WorkerSlot) -> tuple[AgentActor, list[Any], list[Any]]:
    """An agent (multiprocess capabilities) whose loss handling and timers are recorded."""
    actor = AgentActor({"Thespian ActorSystem Name": "multiprocTCPBase"})
    actor.worker = slot
    actor.machine = SimpleNamespace(name="a")  # type: ignore[assignment]  # names it in logs
    lost: list[Any] = []
    armed: list[Any] = []

    def after(deadline: Any, seconds: float) -> None:
        armed.append((deadline, seconds))

    actor._worker_lost = lost.append  # type: ignore[method-assign,assignment]
    actor._after = after  # type: ignore[method-assign]
    return actor, lost, armed


def _dead_identity() -> tuple[int, float]:
    child = subprocess.Popen(["sleep", "30"])
    identity = owner_identity(child.pid)
    child.kill()
    child.wait(10)
    return identity


def test_a_busy_worker_that_died_unannounced_is_handled_as_lost() -> None:
    slot = _WorkerSlot(address=object(), pid=1, turn_id=7, generation=3)
    slot.identity = _dead_identity()
    actor, lost, armed = _actor(slot)
    actor._check_worker_alive(3)
    assert lost == [slot] and armed == []


def test_a_running_worker_is_checked_again_later() -> None:
    slot = _WorkerSlot(address=object(), pid=os.getpid(), turn_id=7, generation=3)
    slot.identity = owner_identity()
    actor, lost, armed = _actor(slot)
    actor._check_worker_alive(3)
    assert lost == [] and armed == [(_WorkerAliveCheck(3), WORKER_ALIVE_CHECK)]


def test_an_idle_or_replaced_worker_is_not_checked() -> None:
    idle = _WorkerSlot(address=object(), pid=1, turn_id=None, generation=3)
    idle.identity = _dead_identity()
    actor, lost, armed = _actor(idle)
    actor._check_worker_alive(3)  # no turn: its exit costs nothing, the notice will do
    actor._check_worker_alive(2)  # a check armed for an earlier worker
    assert lost == [] and armed == []


def test_a_pid_reused_by_another_process_is_not_taken_for_the_worker() -> None:
    slot = _WorkerSlot(address=object(), pid=os.getpid(), turn_id=7, generation=1)
    pid, started = owner_identity()
    slot.identity = (pid, started - 100.0)  # this pid, but a process started earlier: gone
    actor, lost, _ = _actor(slot)
    actor._check_worker_alive(1)
    assert lost == [slot]
