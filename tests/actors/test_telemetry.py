"""Telemetry emitted in agent processes reaches handlers attached in the test's process."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from support_agents import Recorder

import genagent_thespian as g
from genagent_thespian._actors.telemetry import handler_failures
from genagent_thespian.testing import Fail, Slow, TelemetryCapture, wait_until

pytestmark = pytest.mark.usefixtures("any_agent_system")

README_EVENTS = [
    "prompt.start",
    "prompt.stop",
    "prompt.error",
    "event.received",
    "state.changed",
    "mailbox.queued",
    "halted",
]


def _until(
    capture: TelemetryCapture,
    name: str,
    predicate: Callable[[dict[str, Any], dict[str, Any]], bool] | None = None,
    count: int = 1,
) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """Wait for events; the status call keeps simpleSystemBase's actors running."""
    found: list[tuple[dict[str, Any], dict[str, Any]]] = wait_until(
        lambda: (
            g.status("a")
            and len([md for m, md in capture.named(name) if predicate is None or predicate(m, md)])
            >= count
            and [(m, md) for m, md in capture.named(name) if predicate is None or predicate(m, md)]
        )
    )
    return found


def test_the_seven_readme_events_with_their_measurements_and_metadata() -> None:
    with TelemetryCapture(README_EVENTS) as capture:
        g.start_agent(
            Recorder,
            name="a",
            backend="scripted",
            script=[Slow("one two", 0.3), "two", Fail("server_error")],
            pre_turn={"queued": "rewrite:rewritten"},
            responses=[None, "halt"],
        )
        first = g.tell("a", "first")
        g.tell("a", "queued")
        g.notify("a", {"kind": "ci_failed"})
        wait_until(lambda: g.status("a").halted)
        g.resume("a")
        with pytest.raises(g.BackendError):
            g.ask("a", "fails")
        start = _until(capture, "prompt.start", count=3)
        stop = _until(capture, "prompt.stop", count=2)
        error = _until(capture, "prompt.error")
        queued = _until(capture, "mailbox.queued")
        received = _until(capture, "event.received")
        changes = _until(capture, "state.changed", count=7)
        halted = _until(capture, "halted")
    assert start[0][1]["ref"] == first and start[0][1]["rewritten"] is False
    assert (start[1][1]["prompt"], start[1][1]["original_prompt"], start[1][1]["rewritten"]) == (
        "rewritten",
        "queued",
        True,
    )
    assert all(md["agent"] == "a" for _, md in start + stop + error + queued + received + halted)
    assert stop[0][0]["duration_ms"] >= 250 and stop[0][1]["ref"] == first
    assert error[0][1]["reason"] == "backend_error"
    assert queued[0][0]["depth"] == 1
    assert received[0][1]["event"] == {"kind": "ci_failed"}
    assert [(md["from"], md["to"]) for _, md in changes][:3] == [
        (None, "idle"),
        ("idle", "processing"),
        ("processing", "idle"),
    ]
    assert "system_time" in halted[0][0]


def test_turn_events_are_content_free_and_cover_interrupts_and_rejections() -> None:
    names = ["turn.start", "turn.stop", "turn.error", "turn.rejected", "turn.interrupted"]
    with TelemetryCapture(names) as capture:
        g.start_agent(
            Recorder, name="a", backend="scripted", script=["ok", Slow("a b", 30.0)], max_queued=0
        )
        g.ask("a", "q")
        ref = g.tell("a", "long")
        wait_until(lambda: g.status("a").current_ref == ref)
        with pytest.raises(g.AgentOverloaded):
            g.tell("a", "rejected")
        g.interrupt("a")
        _until(capture, "turn.error")
        _until(capture, "turn.interrupted")
        rejected = _until(capture, "turn.rejected")
        stop = _until(capture, "turn.stop")
    assert rejected[0][1]["reason"] == "overloaded"
    assert set(stop[0][1]) == {"agent", "ref", "origin", "attempt", "node", "backend"}
    assert stop[0][1]["origin"] == "ask" and stop[0][1]["attempt"] == 1


def test_detached_handlers_receive_nothing_more() -> None:
    with TelemetryCapture(["prompt.stop"]) as capture:
        g.start_agent(Recorder, name="a", backend="scripted", default="x")
        g.ask("a", "one")
        _until(capture, "prompt.stop")
    g.ask("a", "two")
    g.status("a")
    assert len(capture.named("prompt.stop")) == 1


def test_unknown_event_names_and_duplicate_ids_are_rejected() -> None:
    with pytest.raises(g.InvalidOption):
        g.attach("x", ["no.such.event"], lambda *a: None)
    g.attach("dup", ["halted"], lambda *a: None)
    try:
        with pytest.raises(g.InvalidOption):
            g.attach("dup", ["halted"], lambda *a: None)
    finally:
        assert g.detach("dup") is True
    assert g.detach("dup") is False


def test_a_failing_handler_is_counted_and_others_still_run() -> None:
    def broken(name: str, measurements: dict[str, Any], metadata: dict[str, Any]) -> None:
        raise RuntimeError("handler bug")

    g.attach("broken", ["prompt.stop"], broken)
    try:
        with TelemetryCapture(["prompt.stop"]) as capture:
            g.start_agent(Recorder, name="a", backend="scripted", default="x")
            g.ask("a", "q")
            _until(capture, "prompt.stop")
        wait_until(lambda: handler_failures().get("broken", 0) >= 1)
    finally:
        g.detach("broken")
