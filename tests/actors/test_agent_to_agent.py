"""Agents acting on other agents from inside callbacks: notify, tell, timers, start, stop, watch."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from support_agents import Recorder, calls

import genagent_thespian as g
from genagent_thespian.testing import wait_until

pytestmark = pytest.mark.usefixtures("any_agent_system")


def start(tmp_path: Path, name: Any, **options: Any) -> Path:
    log = tmp_path / f"{name}.log"
    g.start_agent(Recorder, name=name, backend="scripted", log=str(log), **options)
    return log


def infos(log: Path, kind: str) -> list[dict[str, Any]]:
    return [r for r in calls(log, "handle_info") if r["type"] == kind]


def pump_until(name: str, condition: Callable[[], Any], timeout: float = 10.0) -> Any:
    """Wait for ``condition``; asking ``status`` keeps simpleSystemBase's actors running.

    Returns what ``condition`` returned (Any: each test waits for its own kind of value).
    """
    return wait_until(lambda: g.status(name) and condition(), timeout=timeout)


def test_an_agent_notifies_another_by_name_and_the_sender_is_known(tmp_path: Path) -> None:
    start(tmp_path, "a")
    b_log = start(tmp_path, "b")
    with g.testing.TelemetryCapture(["event.received"]) as capture:
        g.notify("a", {"do": "notify", "to": "b", "event": "hello b"})
        received = pump_until(
            "b", lambda: [md for _, md in capture.named("event.received") if md["agent"] == "b"]
        )
    assert calls(b_log, "handle_event")[0]["event"] == "hello b"
    assert received[0]["sender"] == "a"


def test_notifying_an_unknown_name_comes_back_as_delivery_failed(tmp_path: Path) -> None:
    a_log = start(tmp_path, "a")
    g.notify("a", {"do": "notify", "to": "nobody", "event": "x"})
    failed = pump_until("a", lambda: infos(a_log, "DeliveryFailed"))
    assert failed[0]["error"] == "AgentNotFound"


def test_an_agent_tells_another_and_gets_the_completion(tmp_path: Path) -> None:
    a_log = start(tmp_path, "a")
    start(tmp_path, "b", script=["b's answer"])
    g.notify("a", {"do": "tell", "to": "b", "prompt": "work for b"})
    completed = pump_until("a", lambda: infos(a_log, "TellCompleted"))
    assert completed[0]["text"] == "b's answer" and completed[0]["error"] is None
    assert g.backend_session("b").history == ("work for b",)


def test_a_tell_that_fails_completes_with_its_error(tmp_path: Path) -> None:
    a_log = start(tmp_path, "a")
    start(tmp_path, "b", script=[g.testing.Fail("server_error", "down")])
    g.notify("a", {"do": "tell", "to": "b", "prompt": "x"})
    completed = pump_until("a", lambda: infos(a_log, "TellCompleted"))
    assert completed[0]["error"] == "BackendError"


def test_a_tell_to_an_unknown_name_completes_with_agent_not_found(tmp_path: Path) -> None:
    a_log = start(tmp_path, "a")
    g.notify("a", {"do": "tell", "to": "ghost", "prompt": "x"})
    completed = pump_until("a", lambda: infos(a_log, "TellCompleted"))
    assert completed[0]["error"] == "AgentNotFound"


def test_send_after_delivers_to_handle_info_and_its_prompt_runs(tmp_path: Path) -> None:
    a_log = start(tmp_path, "a", script=["from timer"])
    g.notify("a", {"do": "after", "seconds": 0.05, "message": "then:timer fired"})
    pump_until("a", lambda: calls(a_log, "handle_response"))
    assert calls(a_log, "handle_info")[0]["message"] == "then:timer fired"
    assert calls(a_log, "handle_response")[0]["prompt"] == "timer fired"


def test_a_cancelled_timer_never_fires(tmp_path: Path) -> None:
    a_log = start(tmp_path, "a", script=["later"])
    g.notify("a", {"do": "after", "seconds": 0.2, "message": "then:should not run"})
    g.notify("a", {"do": "cancel_timer"})
    assert calls(a_log, "cancelled")[0]["was_pending"] is True
    g.notify("a", {"do": "after", "seconds": 0.3, "message": "marker"})
    pump_until("a", lambda: infos(a_log, "str"))
    assert [r["message"] for r in calls(a_log, "handle_info")] == ["marker"]


def test_an_agent_starts_watches_and_stops_another(tmp_path: Path) -> None:
    a_log = start(tmp_path, "a")
    g.notify("a", {"do": "spawn", "name": "child", "script": ["child says hi"]})
    pump_until("a", lambda: infos(a_log, "AgentStarted"))
    assert g.ask("child", "hi").text == "child says hi"
    g.notify("a", {"do": "watch", "name": "child"})
    g.notify("a", {"do": "stop", "name": "child"})
    pump_until("a", lambda: infos(a_log, "AgentDown") and infos(a_log, "Stopped"))
    assert g.whereis("child") is None


def test_watching_an_unknown_agent_reports_it_down_at_once(tmp_path: Path) -> None:
    a_log = start(tmp_path, "a")
    g.notify("a", {"do": "watch", "name": "never-started"})
    down = pump_until("a", lambda: infos(a_log, "AgentDown"))
    assert "not_found" in down[0]["message"]


def test_inside_callbacks_the_agent_knows_its_name(tmp_path: Path) -> None:
    a_log = start(tmp_path, ("team", 7))
    g.notify(("team", 7), {"do": "whoami"})
    assert calls(a_log, "whoami")[0]["name"] == ["team", 7]
