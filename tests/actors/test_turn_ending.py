"""The worker/backend contract for ending a turn's stream, on multiprocTCPBase: the reply goes
out at the terminal event, the backend's own clean-up runs to its end before the next turn
calls the backend, and a turn's watchdog starts only when its backend call does. The worker
relays the events nobody waits for with the next one that matters, in order, without
delaying what a streaming user sees.

Only multiprocTCPBase: the contract is between a worker process and the agent while the
backend's clean-up still runs; on simpleSystemBase the worker shares the test's thread.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import cast

import pytest
from support_agents import Passthrough
from support_backends import read_turn_log

import genagent_thespian as g
from genagent_thespian import AgentSystem
from genagent_thespian.testing import TelemetryCapture, system_processes, wait_until

BACKEND = "support_backends:SlowEndingBackend"


@pytest.fixture
def system() -> Iterator[AgentSystem]:
    system = g.start_system()
    try:
        yield system
    finally:
        g.shutdown_system(system)
        wait_until(lambda: not system_processes(system), message="processes survived shutdown")


def test_the_next_turn_waits_for_the_previous_streams_clean_up(
    system: AgentSystem, tmp_path: Path
) -> None:
    log = tmp_path / "turns.jsonl"
    options = {"log": str(log), "cleanup_s": 0.3}
    g.start_agent(Passthrough, name="s", backend=BACKEND, backend_options=options)
    for n in range(3):
        assert g.ask("s", f"turn {n}").text == f"done: turn {n}"
    wait_until(lambda: len(read_turn_log(log)) == 6, timeout=10, message="three turns logged")
    entries = read_turn_log(log)
    # Each turn's clean-up ran (it was not cut by close()) and ended before the next began.
    assert [(e["what"], e["prompt"]) for e in entries] == [
        (what, f"turn {n}") for n in range(3) for what in ("start", "end")
    ]
    for end, start in zip(entries[1::2], entries[2::2], strict=False):
        assert start["t"] >= end["t"]
    g.stop("s")


def test_a_turn_waiting_behind_a_cancelling_worker_keeps_its_whole_watchdog(
    system: AgentSystem, tmp_path: Path
) -> None:
    log = tmp_path / "turns.jsonl"
    # Stopping the cancelled turn takes 2.5 s: longer than the 2 s watchdog of the next turn.
    options = {"log": str(log), "cancel_s": 2.5}
    g.start_agent(Passthrough, name="w", backend=BACKEND, backend_options=options, watchdog=2.0)
    first = g.tell("w", "hang")
    wait_until(lambda: log.exists() and read_turn_log(log), timeout=10, message="turn 1 ran")
    g.interrupt("w", ref=first)
    second = g.tell("w", "quick")
    result = wait_until(lambda: (p := g.poll("w", second)).done and p, timeout=20)
    assert result.error is None, result.error
    assert result.response.text == "done: quick"
    assert isinstance(g.poll("w", first).error, g.TurnInterrupted)
    g.stop("w")


def test_a_turn_behind_a_slowly_ending_stream_keeps_its_whole_watchdog(
    system: AgentSystem, tmp_path: Path
) -> None:
    log = tmp_path / "turns.jsonl"
    # Each turn's provider process takes 2.5 s to exit after the answer: longer than the
    # 2 s watchdog of the next turn, which the worker holds until that clean-up is over.
    options = {"log": str(log), "cleanup_s": 2.5}
    g.start_agent(Passthrough, name="c", backend=BACKEND, backend_options=options, watchdog=2.0)
    assert g.ask("c", "first").text == "done: first"
    assert g.ask("c", "second").text == "done: second"  # waited ~2.5 s, not timed out
    entries = read_turn_log(log)
    assert [(e["what"], e["prompt"]) for e in entries[:3]] == [
        ("start", "first"),
        ("end", "first"),
        ("start", "second"),
    ]
    g.stop("c")


def test_a_hung_turn_on_a_warm_worker_still_times_out(system: AgentSystem, tmp_path: Path) -> None:
    # The watchdog of a turn sent to a running, idle worker starts with the start message
    # (the worker reports no "ready" then): a provider that never answers is still caught.
    options = {"log": str(tmp_path / "turns.jsonl")}
    g.start_agent(Passthrough, name="h", backend=BACKEND, backend_options=options, watchdog=1.0)
    assert g.ask("h", "warm").text == "done: warm"
    with pytest.raises(g.TurnTimeout):
        g.ask("h", "hang", timeout=30)
    assert g.ask("h", "after").text == "done: after"
    g.stop("h")


def test_deferred_events_ride_with_the_next_live_one_in_order(
    system: AgentSystem, tmp_path: Path
) -> None:
    gate = tmp_path / "gate"
    options = {"gate": str(gate)}
    g.start_agent(
        Passthrough, name="d", backend="support_backends:GatedBackend", backend_options=options
    )
    # A warm worker: on a new one, the turn's "ready" report would carry the first events.
    assert g.ask("d", "warm-up").text == "warm"
    with TelemetryCapture(["turn.event"]) as capture:

        def kinds() -> list[str]:
            return [str(cast(g.Event, md["event"]).kind) for _m, md in capture.named("turn.event")]

        ref = g.tell("d", "go")
        # The text delta reaches the caller while the backend still waits for the gate,
        # with the announcements and usage before it, in the backend's order.
        wait_until(lambda: "text_delta" in kinds(), timeout=20, message="the first delta")
        assert not gate.exists()
        assert kinds() == ["session_started", "turn_started", "usage", "text_delta"]
        gate.touch()
        result = wait_until(lambda: (p := g.poll("d", ref)).done and p, timeout=20)
        assert result.error is None and result.response.text == "ab"
        wait_until(lambda: "result" in kinds(), timeout=20, message="the result event")
        assert kinds()[4:] == ["raw", "text_delta", "result"]
        seqs = [m["seq"] for m, _md in capture.named("turn.event")]
        assert seqs == sorted(seqs)
    g.stop("d")


def test_a_watcher_that_comes_mid_turn_gets_what_the_turn_held_then_the_rest(
    system: AgentSystem, tmp_path: Path
) -> None:
    # Nobody watches when the turn starts (no Watch, no turn.event handler, no
    # handle_stream_event), so the worker holds its events for the turn's end; a watcher
    # that comes while the backend is busy gets them at once, then the rest as they come.
    gate, reached = tmp_path / "gate", tmp_path / "reached"
    options = {"gate": str(gate), "reached": str(reached)}
    g.start_agent(
        Passthrough, name="m", backend="support_backends:GatedBackend", backend_options=options
    )
    assert g.ask("m", "warm-up").text == "warm"
    ref = g.tell("m", "go")
    wait_until(reached.exists, timeout=20, message="the backend waits at its gate")
    seen: list[g.TurnEvent] = []
    # g.watch is iterated on the thread that subscribed (its events arrive there).
    follower = threading.Thread(target=lambda: seen.extend(g.watch("m")), daemon=True)
    follower.start()

    def kinds() -> list[str]:
        return [str(e.event.kind) for e in seen if e.ref == ref]

    wait_until(lambda: "text_delta" in kinds(), timeout=20, message="the held events")
    assert not gate.exists()  # they came while the backend still waits
    assert kinds() == ["session_started", "turn_started", "usage", "text_delta"]
    gate.touch()
    result = wait_until(lambda: (p := g.poll("m", ref)).done and p, timeout=20)
    assert result.error is None and result.response.text == "ab"
    wait_until(lambda: "result" in kinds(), timeout=20, message="the rest, streamed")
    assert kinds()[4:] == ["raw", "text_delta", "result"]
    g.stop("m")
    follower.join(20)  # the subscription ends with the agent
    assert not follower.is_alive()
