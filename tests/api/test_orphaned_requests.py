"""Requests whose caller is gone are not run after a whole-system restart.

A script's whole system is SIGKILLed with one ask in flight, two asks and a tell queued on a
durable agent; a new system resumes the agent from the same store. The asks' callers went
with the old system: they are dropped (``request.dropped`` telemetry, a log line), never
sent to the backend; the tell runs and polls to its result.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from support_agents import Recorder

import genagent_thespian as g
from genagent_thespian.testing import (
    Gate,
    TelemetryCapture,
    process_group_members,
    read_history,
    wait_until,
)

SCRIPT = Path(__file__).resolve().parent.parent / "support_orphans.py"


def _kill_whole_system(tmp_path: Path) -> tuple[Path, Path, str]:
    store, gate = tmp_path / "agents.sqlite3", tmp_path / "gate"
    script = subprocess.Popen(
        [sys.executable, str(SCRIPT), str(store), str(gate)],
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    assert script.stdout is not None
    line = script.stdout.readline()
    if not line:
        script.wait(timeout=60)
        pytest.fail("the script ended before queueing its requests")
    info = json.loads(line)
    os.killpg(info["pgid"], signal.SIGKILL)  # every actor process of the system at once
    script.kill()
    script.wait(timeout=60)
    script.stdout.close()
    wait_until(lambda: not process_group_members(info["pgid"]), timeout=30.0)
    return store, gate, info["tell"]


def test_asks_whose_callers_went_with_the_system_are_dropped_and_tells_run(
    tmp_path: Path,
) -> None:
    store, gate, tell_ref = _kill_whole_system(tmp_path)
    history = Path(str(gate) + ".history")
    assert read_history(history)[-1] == "held ask"
    gate.touch()
    with g.start_system(store_path=str(store), home=str(tmp_path / "home")) as system:
        with TelemetryCapture(["request.dropped"], system=system) as capture:
            g.start_agent(
                Recorder,
                name="keeper",
                backend="scripted",
                durable=True,
                script=["first", Gate(str(gate), "held")],
                default="later",
                backend_options={"record_to": str(history)},
            )
            wait_until(
                lambda: g.poll("keeper", tell_ref).state == g.PollState.COMPLETED, timeout=30.0
            )
            dropped = capture.wait_for("request.dropped", count=2)
        assert sorted(str(meta["reason"]) for _, meta in dropped) == ["caller_gone"] * 2
        assert {meta["origin"] for _, meta in dropped} == {"ask"}
        prompts = read_history(history)
        assert "queued tell" in prompts
        assert not {"queued ask 1", "queued ask 2"} & set(prompts)
        assert prompts.count("held ask") == 1  # the in-flight turn is not re-run either
        assert g.ask("keeper", "a new caller").text == "later"  # and the agent serves


def test_a_surviving_caller_resending_a_dropped_ref_gets_it_run() -> None:
    """The dropped ask is forgotten, not marked answered: its ref can still run."""
    from genagent_thespian._core.machine import (
        AgentMachine,
        Emit,
        MachineSnapshot,
        Origin,
        Reply,
        Request,
    )
    from genagent_thespian.messages import Failure

    machine = AgentMachine(name="keeper", impl=Recorder())
    machine.impl.init_agent({})
    snapshot = MachineSnapshot(
        halted=False,
        halt_pending=False,
        mailbox=(Request("r1", Origin.ASK, "orphan", reply_to="gone", size=6),),
        self_chain=None,
        delayed=(),
        pending=(),
        in_flight=None,
        answered=(),
        counters=machine.counters,
    )
    effects = machine.restore(snapshot, [], callers_gone=True)
    assert not [e for e in effects if isinstance(e, Reply)]  # nothing to the gone caller
    assert [e.name for e in effects if isinstance(e, Emit)].count("request.dropped") == 1
    assert machine.current is None and not machine.mailbox
    effects = machine.ask("r1", "orphan", "survivor")
    assert machine.current is not None and machine.current.request.reply_to == "survivor"
    assert not [e for e in effects if isinstance(e, Reply) and isinstance(e.message, Failure)]
